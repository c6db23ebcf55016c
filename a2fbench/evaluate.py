"""Predictions + prepared store -> results dict (protocols ``a2f``, ``codetalker``, ``facediffuser``).

Streaming: sequences are scored one at a time, each in chunks of frames (``chunk_mb`` of ground truth), so
memory holds a few chunks of vertices plus, per sequence, the small per-frame values and the upper-face
displacements FDD needs (``|U| x T`` numbers). Three threads share the work: a reader (HDF5 ground truth,
prediction rows, converters of parameter spaces) runs ahead of the scorer, a hasher takes the sha256 of every
prediction byte, and the scorer works through each chunk in cache-sized sub-chunks.

The pooled metrics keep every per-frame value and take one ``np.mean`` over the concatenation at the end,
exactly as the reference does with its whole-split arrays; see ``docs/metrics.md`` for every rule.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from . import __version__
from .errors import A2FBenchError, PredictionError, StoreError
from .metrics import functional as F
from .predictions import HashWorker, NpyReader, PredFile, PredictionSet, check_finite, fingerprint, scan
from .results import SCHEMA_VERSION, finalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    metrics: tuple[str, ...]
    length_policy: str  # truncate_pred_only | truncate_both
    float64: bool  # compute in float64 (True) or in the inputs' promoted dtype, as the reference script (False)
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "a2f": Protocol("a2f", 1, ("LVE", "MVE", "UFVE", "FDD", "FDD_abs"), "truncate_pred_only", True,
                    "A2F-Bench: CodeTalker's LVE and FDD, FaceDiffuser's MVE, UFVE = MVE over the upper face, "
                    "FDD_abs; float64; 95% bootstrap CIs over sequences"),
    "codetalker": Protocol("codetalker", 1, ("LVE", "FDD"), "truncate_pred_only", False,
                           "CodeTalker main/cal_metric.py, bit-exact on the same arrays"),
    "facediffuser": Protocol("facediffuser", 1, ("LVE", "MVE", "FDD", "FDD_abs"), "truncate_both", False,
                             "FaceDiffuser evaluation/compute_objective_metrics.py (both cut to the shorter)"),
}
POOLED = ("LVE", "MVE", "UFVE")
CONDITIONS_RULE = ("plain <seq_id>.npy, else the own-subject condition, else the mean over every condition present "
                   "(per-frame terms and FDD averaged over conditions)")
DEFAULT_BOOTSTRAP = 10000
SUBCHUNK_BYTES = 4 << 20  # scored at once: small enough for the CPU cache (much faster than 64 MiB steps)


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise A2FBenchError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# ------------------------------------------------------------------------------------------ one chunk
@dataclass
class _Item:
    """One sequence to score: id, frames scored, and per prediction file its condition and length."""

    sid: str
    T: int
    conditions: list[Optional[str]]
    pred_frames: list[int]


@dataclass
class _Chunk:
    seq_index: int
    start: int
    gt: np.ndarray  # (t, V, 3) vertices
    preds: list[np.ndarray]  # per condition, (t, V, 3)
    template: Optional[np.ndarray] = None  # (V, 3), on the first chunk of a sequence
    sources: Optional[list[Any]] = None  # prediction file per condition (for error messages)


@dataclass
class _Scoring:
    """What one evaluation computes: protocol, regions, compute dtype (None: the inputs' promoted dtype)."""

    proto: Protocol
    lips: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        self.lips_ix = F.VertexIndex.of(self.lips)
        self.upper_ix = F.VertexIndex.of(self.upper)

    @property
    def dtype(self) -> Optional[type]:
        return np.float64 if self.proto.float64 else None

    @property
    def pooled(self) -> list[str]:
        return [m for m in self.proto.metrics if m in POOLED]

    @property
    def fdd(self) -> bool:
        return "FDD" in self.proto.metrics


class _Context:
    """Everything fixed for one evaluation of a prepared dataset: store, converter, regions, protocol."""

    def __init__(self, ds: Any, proto: Protocol, lips: np.ndarray, upper: np.ndarray):
        from .registry import get_space
        from .spaces import converter

        self.ds = ds
        self.scoring = _Scoring(proto, lips, upper)
        self.proto, self.lips, self.upper = proto, lips, upper
        self.space = get_space(ds.card["space"])
        self.conv = None if self.space.is_vertex else converter(self.space, ds.space_arrays())
        self.V = int(ds.card.get("n_vertices") or (self.conv.n_vertices if self.conv else self.space.n_vertices))
        self.P = None if self.space.is_vertex else int(self.space.dim)

    def vertices(self, x: np.ndarray, kind: str) -> np.ndarray:
        """Rows of motion or prediction -> (t, V, 3) (parameters through the space's converter)."""
        if kind == "parameters":
            assert self.conv is not None
            return self.conv.to_vertices(x)
        return x.reshape(x.shape[0], self.V, 3)

    def template(self, subject: str) -> np.ndarray:
        tm = np.asarray(self.ds.template(subject))
        if self.conv is not None:
            return self.conv.to_vertices(tm.reshape(1, -1))[0]
        return tm.reshape(self.V, 3)


def _chunks(ctx: _Context, plan: list[tuple[_Item, list[PredFile]]], rows: int, hashes: dict[str, Any],
            hasher: Optional[HashWorker] = None) -> Iterator[_Chunk]:
    """Read every scored chunk in order; every prediction byte is hashed (and the unscored tail checked).

    NaN/inf in scored rows are checked by the consumer (:meth:`_SeqAcc.add`), on cache-resident data.
    """
    gt_kind = "vertices" if ctx.conv is None else "parameters"
    for i, (item, pfs) in enumerate(plan):
        seq = ctx.ds[item.sid]
        tm = ctx.template(seq.subject) if ctx.scoring.fdd else None
        readers = [NpyReader(pf, hasher) for pf in pfs]
        try:
            for a in range(0, item.T, rows):
                b = min(item.T, a + rows)
                gt = ctx.vertices(seq.frames(a, b), gt_kind)
                preds = [ctx.vertices(r.read(b - a, check=False), r.pf.kind) for r in readers]
                yield _Chunk(i, a, gt, preds, tm if a == 0 else None, [r.pf.path for r in readers])
            for r in readers:
                hashes[r.pf.path.name] = r.finish()
        finally:
            for r in readers:
                r.close()


def _prefetch(it: Iterator[_Chunk], depth: int = 2) -> Iterator[_Chunk]:
    """Run ``it`` in a background thread, ``depth`` items ahead (numpy, h5py reads and hashing release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    DONE = object()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(DONE)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    t = threading.Thread(target=work, name="a2fbench-evaluate-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()


# ------------------------------------------------------------------------------------------ evaluate
def _cut(proto: Protocol, T_gt: int, pred_frames: list[int]) -> Optional[int]:
    """Frames scored under the protocol's length rule; None when a prediction is too short for it."""
    if proto.length_policy == "truncate_pred_only":
        return T_gt if min(pred_frames) >= T_gt else None
    return min(T_gt, *pred_frames)


def _plan(ctx: _Context, ids: list[str], preds: PredictionSet) -> list[tuple[_Item, list[PredFile]]]:
    """Per sequence the frames scored and the files; applies the protocol's length rule to the headers."""
    out = []
    for sid in ids:
        T_gt = ctx.ds[sid].n_frames
        pfs = preds.files[sid]
        T = _cut(ctx.proto, T_gt, [pf.n_frames for pf in pfs])
        if T is None:
            pf = min(pfs, key=lambda f: f.n_frames)
            raise PredictionError(f"{pf.path}: expected at least {T_gt} frames (the ground truth of {sid}), found "
                                  f"{pf.n_frames}; protocol {ctx.proto.name} cuts longer predictions to the "
                                  "ground truth but never pads (protocol facediffuser cuts both to the shorter)")
        out.append((_Item(sid, T, [pf.condition for pf in pfs], [pf.n_frames for pf in pfs]), pfs))
    return out


def evaluate(pred_dir: str | os.PathLike, dataset: str, data: str | os.PathLike, split: Optional[str] = None,
             protocol: str = "a2f", regions: Optional[str] = None, *, ignore_extra: bool = False,
             n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, chunk_mb: float = 32.0,
             progress: bool = True) -> dict:
    """Score a predictions folder against a prepared split; returns the finalized results dict.

    Raises :class:`~a2fbench.errors.PredictionError` (one line) for any problem with the predictions,
    before anything is written. See ``docs/metrics.md`` for protocols, length and condition rules.
    """
    from .store import open_dataset

    proto = get_protocol(protocol)
    ds = open_dataset(data, dataset)
    try:
        split = split or ds.spec.evaluation.split
        ids = ds.split(split)
        if not ids:
            raise StoreError(f"{ds.id} split {split!r} has no sequences; pick another with --split")
        region_set = regions or ds.card.get("region_default")
        reg = ds.regions_for(region_set)
        lips, upper = np.asarray(reg["lips"], np.int64), np.asarray(reg["upper"], np.int64)
        ctx = _Context(ds, proto, lips, upper)
        for name, idx in (("lips", lips), ("upper", upper)):
            if idx.size == 0 or idx.min() < 0 or idx.max() >= ctx.V:
                raise StoreError(f"{ds.id} region set {region_set!r}: expected {name} indices in [0, {ctx.V}), found "
                                 f"{idx.size} indices in [{idx.min() if idx.size else '-'}, "
                                 f"{idx.max() if idx.size else '-'}]; re-run `a2fbench prepare {ds.id}`")
        subjects = {sid: ds[sid].subject for sid in ids}
        preds = scan(pred_dir, ids, subjects, n_vertices=ctx.V, n_params=ctx.P, ignore_extra=ignore_extra,
                     what=f"{ds.id} split {split!r}")
        plan = _plan(ctx, ids, preds)
        rows = max(1, int(chunk_mb * 2**20 // (ctx.V * 3 * 8)))
        hashes: dict[str, Any] = {}
        hasher = HashWorker()
        t0 = time.perf_counter()
        try:
            seqs, dtypes = _score(ctx.scoring, [it for it, _ in plan],
                                  _prefetch(_chunks(ctx, plan, rows, hashes, hasher)),
                                  f"evaluate {ds.id} ({proto.name})" if progress else None)
        finally:
            hasher.close()
        digests = {name: h.hexdigest() for name, h in hashes.items()}
        log.debug("scored %d sequences in %.2f s", len(plan), time.perf_counter() - t0)
        return _results(ctx, split, region_set, preds, seqs, digests, dtypes, n_bootstrap, seed)
    finally:
        ds.close()


def score_arrays(gts: list[np.ndarray], preds: list[np.ndarray], templates: list[np.ndarray], lips: np.ndarray,
                 upper: np.ndarray, protocol: str = "a2f", *, ids: Optional[list[str]] = None,
                 chunk_frames: int = 128) -> dict:
    """The same scoring on in-memory vertex arrays (no store, no files, no bootstrap).

    ``gts``/``preds``: per sequence ``(T, V, 3)`` or ``(T, 3V)`` (a list per sequence in ``preds`` means
    several conditions); ``templates``: ``(V, 3)`` or ``(3V,)``. Returns ``{"metrics": {name: value},
    "per_sequence": [...]}``.
    """
    proto = get_protocol(protocol)
    scoring = _Scoring(proto, np.asarray(lips, np.int64), np.asarray(upper, np.int64))
    ids = ids or [f"seq{i}" for i in range(len(gts))]
    items, data = [], []
    for sid, g, p, tm in zip(ids, gts, preds, templates):
        g = F.as_vertices(g)
        ps = [F.as_vertices(x) for x in (p if isinstance(p, (list, tuple)) else [p])]
        T = _cut(proto, g.shape[0], [x.shape[0] for x in ps])
        if T is None:
            raise PredictionError(f"{sid}: expected a prediction of at least {g.shape[0]} frames, found "
                                  f"{min(x.shape[0] for x in ps)} (protocol {proto.name})")
        items.append(_Item(sid, T, [None] * len(ps), [x.shape[0] for x in ps]))
        data.append((g, ps, np.asarray(tm).reshape(-1, 3)))

    def chunks() -> Iterator[_Chunk]:
        for i, (item, (g, ps, tm)) in enumerate(zip(items, data)):
            for a in range(0, item.T, chunk_frames):
                b = min(item.T, a + chunk_frames)
                yield _Chunk(i, a, g[a:b], [x[a:b] for x in ps], tm if a == 0 else None, [item.sid] * len(ps))

    seqs, _ = _score(scoring, items, chunks(), None)
    return {"metrics": _aggregates(proto, seqs), "per_sequence": [s["row"] for s in seqs]}


class _SeqAcc:
    """Per-sequence accumulator: per-frame terms per condition, upper-face displacements (T, |U|) per input."""

    def __init__(self, sc: _Scoring, index: int, item: _Item, first: _Chunk):
        self.sc, self.i, self.item = sc, index, item
        self.k = len(item.conditions)
        self.parts: dict[str, list[list[np.ndarray]]] = {m: [[] for _ in range(self.k)] for m in sc.pooled}
        if sc.fdd:
            assert first.template is not None
            self.tm_u = np.asarray(first.template).reshape(-1, 3)[sc.upper]
            U = len(sc.upper)

            def dt(x: np.ndarray) -> np.dtype:
                return np.dtype(sc.dtype) if sc.dtype is not None else np.result_type(x.dtype, self.tm_u.dtype)

            # rows are written frame by frame; close() transposes once to (|U|, T) for the std over time
            self.d_gt = np.empty((item.T, U), dt(first.gt))
            self.d_pred = [np.empty((item.T, U), dt(p)) for p in first.preds]

    def add(self, ch: _Chunk, dtypes: set) -> None:
        """Score one chunk, in sub-chunks of about 4 MiB of vertices so that every step runs in cache."""
        sc = self.sc
        V = ch.gt.shape[1]
        step = max(1, SUBCHUNK_BYTES // (V * 3 * 8))
        for c, p in enumerate(ch.preds):
            dtypes.add(str(np.dtype(sc.dtype) if sc.dtype is not None else np.result_type(ch.gt.dtype, p.dtype)))
        for s0 in range(0, ch.gt.shape[0], step):
            g = ch.gt[s0:s0 + step]
            a, t = ch.start + s0, g.shape[0]
            for c, p in enumerate(ch.preds):
                p = p[s0:s0 + step]
                if ch.sources is not None:
                    check_finite(p, ch.sources[c], a)
                if sc.pooled:
                    terms = F.frame_terms(g, p, sc.lips_ix, sc.upper_ix, sc.pooled, sc.dtype)
                    for m in sc.pooled:
                        self.parts[m][c].append(terms[m])
                if sc.fdd:
                    self.d_pred[c][a:a + t] = F.upper_displacements(p, None, sc.upper_ix, sc.dtype, self.tm_u)
            if sc.fdd:
                self.d_gt[a:a + t] = F.upper_displacements(g, None, sc.upper_ix, sc.dtype, self.tm_u)

    def close(self) -> dict:
        """{row: per_sequence dict, frames: {metric: (T,) vector}, fdd: scalar} (conditions averaged)."""
        item = self.item
        row: dict[str, Any] = {"id": item.sid, "frames": item.T}
        frames = {}
        for m in self.sc.pooled:
            per_c = [np.concatenate(v) for v in self.parts[m]]
            v = per_c[0] if self.k == 1 else sum(per_c) / self.k
            frames[m] = v
            row[m] = float(np.mean(v))
        fdd = None
        if self.sc.fdd:
            s_gt = F.upper_dynamics(np.ascontiguousarray(self.d_gt.T))
            s_pr = [F.upper_dynamics(np.ascontiguousarray(d.T)) for d in self.d_pred]
            fdd = s_gt - (s_pr[0] if self.k == 1 else sum(s_pr) / self.k)
            row["FDD"] = float(fdd)
        if item.conditions[0] is not None:
            row["conditions"] = list(item.conditions)
        row["pred_frames"] = list(item.pred_frames) if self.k > 1 else item.pred_frames[0]
        return {"row": row, "frames": frames, "fdd": fdd}


def _score(sc: _Scoring, items: list[_Item], chunks: Iterator[_Chunk], desc: Optional[str]) -> tuple[list[dict], set]:
    """Run every chunk through the per-sequence accumulators; returns (per-sequence outputs, compute dtypes)."""
    out: list[dict] = []
    dtypes: set = set()
    bar = None
    if desc:
        from tqdm import tqdm

        bar = tqdm(total=sum(it.T for it in items), unit="frame", leave=False, desc=desc)
    cur: Optional[_SeqAcc] = None
    try:
        for ch in chunks:
            if cur is None or cur.i != ch.seq_index:
                if cur is not None:
                    out.append(cur.close())
                cur = _SeqAcc(sc, ch.seq_index, items[ch.seq_index], ch)
            cur.add(ch, dtypes)
            if bar is not None:
                bar.update(ch.gt.shape[0])
        if cur is not None:
            out.append(cur.close())
    finally:
        if bar is not None:
            bar.close()
    return out, dtypes


def _aggregates(proto: Protocol, seqs: list[dict]) -> dict[str, Any]:
    """Each metric's aggregate by its rule: pooled np.mean over all frames, or over sequences in order."""
    out = {}
    for m in proto.metrics:
        if m in POOLED:
            out[m] = F.pooled_mean([s["frames"][m] for s in seqs])
        elif m == "FDD":
            out[m] = F.mean_over_sequences([s["fdd"] for s in seqs])
        else:
            out[m] = F.mean_abs_over_sequences([s["fdd"] for s in seqs])
    return out


def _regions_digest(lips: np.ndarray, upper: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(lips, "<i8").tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(upper, "<i8").tobytes())
    return "sha256:" + h.hexdigest()


def _results(ctx: _Context, split: str, region_set: str, preds: PredictionSet, seqs: list[dict], digests: dict,
             dtypes: set, n_bootstrap: int, seed: int) -> dict:
    proto, card = ctx.proto, ctx.ds.card
    per_seq = [s["row"] for s in seqs]
    frames = [r["frames"] for r in per_seq]
    metrics: dict[str, dict] = {}
    vunits = str(card.get("vertex_units") or card.get("units") or "")
    display = card.get("display") or {}
    for m, value in _aggregates(proto, seqs).items():
        info = F.METRIC_INFO[m]
        key = "FDD" if m == "FDD_abs" else m
        ci = F.bootstrap_ci(m, [r[key] for r in per_seq], frames, n_resamples=n_bootstrap, seed=seed)
        metrics[m] = {"value": float(value), "unit": info.unit(vunits), "ci95": [ci[0], ci[1]],
                      "aggregation": info.aggregation, "higher_is_better": info.higher_is_better,
                      "version": info.version, "display_scale": float(display.get(m, 1.0))}
    compute = "float32" if "float32" in dtypes or "float16" in dtypes else "float64"
    synthetic = card.get("synthetic")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "a2fbench_version": __version__,
        "dataset": {"id": ctx.ds.id, "name": card.get("name", ctx.ds.spec.name), "version": int(card["version"]),
                    "split": split, "fingerprint": card["fingerprint"], "n_sequences": len(per_seq),
                    "n_frames": int(sum(frames)), "synthetic": bool(synthetic),
                    **({"synthetic_source": synthetic} if synthetic else {}),
                    "space": card.get("space"), "vertex_units": vunits, "n_vertices": ctx.V,
                    "regions": {"set": region_set, "n_lips": int(ctx.lips.size), "n_upper": int(ctx.upper.size),
                                "digest": _regions_digest(ctx.lips, ctx.upper)}},
        "protocol": {"name": proto.name, "version": proto.version, "length_policy": proto.length_policy,
                     "description": proto.description, "compute_dtype": compute,
                     "conditions": CONDITIONS_RULE,
                     "bootstrap": {"n": int(n_bootstrap), "seed": int(seed), "level": 0.95,
                                   "method": F.BOOTSTRAP_METHOD}},
        "metrics": metrics,
        "per_sequence": per_seq,
        "predictions": {"fingerprint": fingerprint(digests), "n_files": preds.n_files,
                        "kind": sorted({pf.kind for pfs in preds.files.values() for pf in pfs}),
                        "ignored_files": len(preds.ignored)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return finalize(doc)
