"""Predictions + prepared store -> results dict (protocols ``a2f``, ``codetalker``, ``facediffuser``).

Streaming: sequences are scored one at a time and each in chunks of frames (``chunk_mb`` of ground truth),
so memory holds one chunk of vertices plus, per sequence, the small per-frame values and the upper-face
displacements FDD needs (``|U| x T`` numbers). A background thread reads the next chunk (HDF5 ground truth,
prediction rows, sha256 of the prediction bytes) while the current one is scored.

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
from .predictions import NpyReader, PredFile, PredictionSet, fingerprint, scan
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


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise A2FBenchError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# ------------------------------------------------------------------------------------------ one chunk
@dataclass
class _Chunk:
    seq_index: int
    start: int
    gt: np.ndarray  # (t, V, 3) vertices
    preds: list[np.ndarray]  # per condition, (t, V, 3)


class _Context:
    """Everything fixed for one evaluation: dataset, converter, regions, protocol."""

    def __init__(self, ds: Any, proto: Protocol, lips: np.ndarray, upper: np.ndarray):
        from .registry import get_space
        from .spaces import converter

        self.ds = ds
        self.proto = proto
        self.lips = lips
        self.upper = upper
        self.space = get_space(ds.card["space"])
        self.conv = None if self.space.is_vertex else converter(self.space, ds.space_arrays())
        self.V = int(ds.card.get("n_vertices") or (self.conv.n_vertices if self.conv else self.space.n_vertices))
        self.P = None if self.space.is_vertex else int(self.space.dim)
        self.dtype = np.float64 if proto.float64 else None

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


def _chunks(ctx: _Context, plan: list[tuple[str, int, list[PredFile]]], rows: int,
            digests: dict[str, str]) -> Iterator[_Chunk]:
    """Read every scored chunk in order; hash and check every prediction byte (also the unscored tail)."""
    gt_kind = "vertices" if ctx.conv is None else "parameters"
    for i, (sid, T, pfs) in enumerate(plan):
        seq = ctx.ds[sid]
        readers = [NpyReader(pf) for pf in pfs]
        try:
            for a in range(0, T, rows):
                b = min(T, a + rows)
                gt = ctx.vertices(seq.frames(a, b), gt_kind)
                preds = [ctx.vertices(r.read(b - a), r.pf.kind) for r in readers]
                yield _Chunk(i, a, gt, preds)
            for r in readers:
                digests[r.pf.path.name] = r.finish()
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
def _plan(ctx: _Context, ids: list[str], preds: PredictionSet) -> list[tuple[str, int, list[PredFile]]]:
    """(seq_id, frames scored, files) per sequence; applies the protocol's length rule to the headers."""
    out = []
    for sid in ids:
        T_gt = ctx.ds[sid].n_frames
        pfs = preds.files[sid]
        if ctx.proto.length_policy == "truncate_pred_only":
            short = [pf for pf in pfs if pf.n_frames < T_gt]
            if short:
                pf = short[0]
                raise PredictionError(f"{pf.path}: expected at least {T_gt} frames (the ground truth of {sid}), found "
                                      f"{pf.n_frames}; protocol {ctx.proto.name} cuts longer predictions to the "
                                      "ground truth but never pads (protocol facediffuser cuts both to the shorter)")
            T = T_gt
        else:
            T = min(T_gt, *(pf.n_frames for pf in pfs))
        out.append((sid, T, pfs))
    return out


def evaluate(pred_dir: str | os.PathLike, dataset: str, data: str | os.PathLike, split: Optional[str] = None,
             protocol: str = "a2f", regions: Optional[str] = None, *, ignore_extra: bool = False,
             n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, chunk_mb: float = 64.0,
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
        t0 = time.perf_counter()
        rows_, digests, compute_dtypes = _score(ctx, plan, chunk_mb, progress)
        log.debug("scored %d sequences in %.2f s", len(plan), time.perf_counter() - t0)
        return _results(ctx, split, region_set, plan, preds, rows_, digests, compute_dtypes, n_bootstrap, seed)
    finally:
        ds.close()


class _SeqAcc:
    """Per-sequence accumulator: per-frame terms per condition, upper-face displacements (|U|, T)."""

    def __init__(self, ctx: _Context, index: int, plan_row: tuple, first: _Chunk, pooled: list[str], fdd: bool):
        self.ctx, self.i = ctx, index
        self.sid, self.T, self.pfs = plan_row
        self.k = len(self.pfs)
        self.pooled, self.fdd = pooled, fdd
        self.parts: dict[str, list[list[np.ndarray]]] = {m: [[] for _ in self.pfs] for m in pooled}
        if fdd:
            self.tm = ctx.template(ctx.ds[self.sid].subject)
            U = len(ctx.upper)

            def dt(x: np.ndarray) -> np.dtype:
                return np.dtype(ctx.dtype) if ctx.dtype is not None else np.result_type(x.dtype, self.tm.dtype)

            self.d_gt = np.empty((U, self.T), dt(first.gt))
            self.d_pred = [np.empty((U, self.T), dt(p)) for p in first.preds]

    def add(self, ch: _Chunk, dtypes: set) -> None:
        ctx, t, a = self.ctx, ch.gt.shape[0], ch.start
        for c, p in enumerate(ch.preds):
            dtypes.add(str(np.dtype(ctx.dtype) if ctx.dtype is not None else np.result_type(ch.gt.dtype, p.dtype)))
            if self.pooled:
                terms = F.frame_terms(ch.gt, p, ctx.lips, ctx.upper, self.pooled, ctx.dtype)
                for m in self.pooled:
                    self.parts[m][c].append(terms[m])
            if self.fdd:
                self.d_pred[c][:, a:a + t] = F.upper_displacements(p, self.tm, ctx.upper, ctx.dtype).T
        if self.fdd:
            self.d_gt[:, a:a + t] = F.upper_displacements(ch.gt, self.tm, ctx.upper, ctx.dtype).T

    def close(self) -> dict:
        """{row: per_sequence dict, frames: {metric: (T,) vector}, fdd: scalar} (conditions averaged)."""
        row: dict[str, Any] = {"id": self.sid, "frames": self.T}
        frames = {}
        for m in self.pooled:
            per_c = [np.concatenate(v) for v in self.parts[m]]
            v = per_c[0] if self.k == 1 else sum(per_c) / self.k
            frames[m] = v
            row[m] = float(np.mean(v))
        fdd = None
        if self.fdd:
            s_gt = F.upper_dynamics(self.d_gt)
            s_pr = [F.upper_dynamics(d) for d in self.d_pred]
            fdd = s_gt - (s_pr[0] if self.k == 1 else sum(s_pr) / self.k)
            row["FDD"] = float(fdd)
        if self.pfs[0].condition is not None:
            row["conditions"] = [pf.condition for pf in self.pfs]
        row["pred_frames"] = [pf.n_frames for pf in self.pfs] if self.k > 1 else self.pfs[0].n_frames
        return {"row": row, "frames": frames, "fdd": fdd}


def _score(ctx: _Context, plan: list, chunk_mb: float, progress: bool) -> tuple[list[dict], dict, set]:
    """Stream every chunk through the accumulators; returns (per-sequence outputs, file digests, dtypes)."""
    pooled = [m for m in ctx.proto.metrics if m in POOLED]
    want_fdd = "FDD" in ctx.proto.metrics
    rows = max(1, int(chunk_mb * 2**20 // (ctx.V * 3 * 8)))
    digests: dict[str, str] = {}
    out: list[dict] = []
    dtypes: set = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(T for _, T, _ in plan), unit="frame", leave=False,
                   desc=f"evaluate {ctx.ds.id} ({ctx.proto.name})")
    cur: Optional[_SeqAcc] = None
    try:
        for ch in _prefetch(_chunks(ctx, plan, rows, digests)):
            if cur is None or cur.i != ch.seq_index:
                if cur is not None:
                    out.append(cur.close())
                cur = _SeqAcc(ctx, ch.seq_index, plan[ch.seq_index], ch, pooled, want_fdd)
            cur.add(ch, dtypes)
            if bar is not None:
                bar.update(ch.gt.shape[0])
        if cur is not None:
            out.append(cur.close())
    finally:
        if bar is not None:
            bar.close()
    return out, digests, dtypes


def _regions_digest(lips: np.ndarray, upper: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(lips, "<i8").tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(upper, "<i8").tobytes())
    return "sha256:" + h.hexdigest()


def _results(ctx: _Context, split: str, region_set: str, plan: list, preds: PredictionSet, seqs: list[dict],
             digests: dict, dtypes: set, n_bootstrap: int, seed: int) -> dict:
    proto, card = ctx.proto, ctx.ds.card
    per_seq = [s["row"] for s in seqs]
    frames = [r["frames"] for r in per_seq]
    metrics: dict[str, dict] = {}
    vunits = str(card.get("vertex_units") or card.get("units") or "")
    display = card.get("display") or {}
    for m in proto.metrics:
        info = F.METRIC_INFO[m]
        if m in POOLED:
            value = F.pooled_mean([s["frames"][m] for s in seqs])
        elif m == "FDD":
            value = F.mean_over_sequences([s["fdd"] for s in seqs])
        else:
            value = F.mean_abs_over_sequences([s["fdd"] for s in seqs])
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
