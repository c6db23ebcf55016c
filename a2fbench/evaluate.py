"""Predictions + prepared store -> results dict (protocols ``a2f``, ``codetalker``, ``facediffuser``).

Streaming: sequences are scored one at a time, each in chunks of frames (``chunk_mb`` of ground truth), so
memory holds a few chunks of vertices plus, per sequence, the small per-frame values and what FDD needs
(reference protocols: the ``T x |U|`` displacements for the exact std; ``a2f``: running per-vertex moments).
Threads share the work: a reader (HDF5 ground truth into reused buffers, prediction rows, converters of
parameter spaces) runs ahead of the scorer when a CPU is spare, a hasher takes the sha256 of every prediction
byte, and the scorer works through each chunk in cache-sized sub-chunks. ``workers`` > 1 forks processes
that each do this for a contiguous block of sequences.

The pooled metrics keep every per-frame value and take one ``np.mean`` over the concatenation at the end,
exactly as the reference does with its whole-split arrays; see ``docs/metrics.md`` for every rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np

from . import __version__
from .errors import A2FBenchError, PredictionError, StoreError
from .metrics import functional as F
from .predictions import BufferPool, HashWorker, NpyReader, PredFile, PredictionSet, check_finite, fingerprint, scan
from .results import SCHEMA_VERSION, finalize
from .threads import prefetch as background

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
    leases: Optional[list[Any]] = None  # pooled buffers to release once scored

    def release(self) -> None:
        for lease in self.leases or ():
            lease.release()
        self.leases = None


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

    Buffers come from pools and go back when the scorer (and the hasher) release them. NaN/inf in scored
    rows are checked by the scorer (:meth:`_SeqAcc.add`), on cache-resident data.
    """
    pool = BufferPool()
    for i, (item, pfs) in enumerate(plan):
        seq = ctx.ds[item.sid]
        tm = ctx.template(seq.subject) if ctx.scoring.fdd else None
        gt_dtype = seq.motion_dtype
        readers = [NpyReader(pf, hasher) for pf in pfs]
        try:
            for a in range(0, item.T, rows):
                b = min(item.T, a + rows)
                leases = []
                lg = pool.take(rows, (int(ctx.ds.card["dim"]),), gt_dtype)
                raw = seq.frames_into(lg.buf[:b - a], a)
                if ctx.conv is None:
                    gt = ctx.vertices(raw, "vertices")
                    leases.append(lg)
                else:
                    gt = ctx.vertices(raw, "parameters")
                    lg.release()
                preds = []
                for r in readers:
                    x, lp = r.read_leased(b - a, pool, check=False, rows=rows)
                    preds.append(ctx.vertices(x, r.pf.kind))
                    if r.pf.kind == "parameters":
                        lp.release()
                    else:
                        leases.append(lp)
                yield _Chunk(i, a, gt, preds, tm if a == 0 else None, [r.pf.path for r in readers], leases)
            for r in readers:
                hashes[r.pf.path.name] = r.finish()
        finally:
            for r in readers:
                r.close()


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
             workers: Optional[int] = 1, progress: bool = True) -> dict:
    """Score a predictions folder against a prepared split; returns the finalized results dict.

    Raises :class:`~a2fbench.errors.PredictionError` (one line) for any problem with the predictions,
    before anything is written. See ``docs/metrics.md`` for protocols, length and condition rules.
    ``workers``: processes scoring contiguous blocks of sequences (forked; the numbers do not depend on it).
    Default 1, safe in threaded programs; ``None`` = automatic (min(2, CPUs) for splits of at least 128 MiB of
    ground truth, else 1), which the command line uses.
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
        n_workers = _n_workers(workers, len(plan), sum(it.T for it, _ in plan) * ctx.V * 3 * 8)
        desc = f"evaluate {ds.id} ({proto.name})" if progress else None
        if n_workers > 1:
            ds.close()  # no HDF5 handle crosses the fork; workers open their own
            seqs, digests, dtypes = _score_parallel((str(data), ds.id, proto.name, lips, upper, chunk_mb), plan,
                                                    n_workers, desc)
        else:
            with _progress(desc, sum(it.T for it, _ in plan)) as bar:
                seqs, digests, dtypes = _stream(ctx, plan, chunk_mb, bar.update if bar else None, _spare_cpu(1))
        log.debug("scored %d sequences in %.2f s with %d process(es)", len(plan), time.perf_counter() - t0,
                  n_workers)
        return _results(ctx, split, region_set, preds, seqs, digests, dtypes, n_bootstrap, seed)
    finally:
        ds.close()


PARALLEL_MIN_BYTES = 128 << 20  # below this much ground truth, forking workers costs more than it saves


def _n_workers(workers: Optional[int], n_seq: int, gt_bytes: int) -> int:
    """Processes to use: ``workers``, else min(2, CPUs) for splits of at least 128 MiB of ground truth;
    always 1 without the fork start method or with one sequence."""
    import multiprocessing as mp

    if workers is None:
        workers = min(2, os.cpu_count() or 1) if gt_bytes >= PARALLEL_MIN_BYTES else 1
    if "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(int(workers), n_seq))


def _spare_cpu(n_workers: int) -> bool:
    """Run the reader thread ahead of the scorer only when there is a CPU per process to spare for it."""
    return (os.cpu_count() or 1) >= 2 * n_workers


@contextlib.contextmanager
def _progress(desc: Optional[str], total: int) -> Iterator[Any]:
    if not desc:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", leave=False, desc=desc)
    try:
        yield bar
    finally:
        bar.close()


def _stream(ctx: _Context, plan: list[tuple[_Item, list[PredFile]]], chunk_mb: float,
            on_frames: Optional[Callable[[int], Any]], prefetch: bool = True) -> tuple[list[dict], dict[str, str], set]:
    """Score ``plan`` in this process: reader thread (if ``prefetch``), hasher thread, scorer (module doc)."""
    rows = max(1, int(chunk_mb * 2**20 // (ctx.V * 3 * 8)))
    hashes: dict[str, Any] = {}
    hasher = HashWorker()
    try:
        it = _chunks(ctx, plan, rows, hashes, hasher)
        if prefetch:
            it = background(it, depth=2, name="a2fbench-evaluate-reader")
        seqs, dtypes = _score(ctx.scoring, [it for it, _ in plan], it, on_frames)
    finally:
        hasher.close()
    return seqs, {name: h.hexdigest() for name, h in hashes.items()}, dtypes


_FORKED: dict[str, Any] = {}  # state handed to forked workers (a shared frame counter)


def _worker(args: tuple, plan: list[tuple[_Item, list[PredFile]]]) -> tuple[list[dict], dict[str, str], set]:
    from .store import open_dataset

    data, dataset, proto_name, lips, upper, chunk_mb = args
    counter = _FORKED.get("counter")

    def on_frames(n: int) -> None:
        if counter is not None:
            with counter.get_lock():
                counter.value += n

    ds = open_dataset(data, dataset)
    try:
        return _stream(_Context(ds, PROTOCOLS[proto_name], lips, upper), plan, chunk_mb, on_frames,
                       _spare_cpu(int(_FORKED.get("n_workers", 1))))
    finally:
        ds.close()


def _blocks(plan: list, n: int) -> list[list]:
    """``plan`` cut into ``n`` contiguous blocks of about equal work (frames x inputs), order kept."""
    cost = np.cumsum([it.T * (1 + len(pfs)) for it, pfs in plan], dtype=np.float64)
    cuts = [int(np.searchsorted(cost, cost[-1] * k / n)) + 1 for k in range(1, n)]
    edges = [0, *sorted(set(min(max(c, 1), len(plan) - 1) for c in cuts)), len(plan)]
    return [plan[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def _score_parallel(args: tuple, plan: list, n_workers: int, desc: Optional[str]) -> tuple[list[dict], dict, set]:
    """Contiguous blocks of sequences in forked worker processes; results merged in split order (so the
    pooled means see the same concatenated vectors, bit for bit, as one process would)."""
    import multiprocessing as mp

    mpc = mp.get_context("fork")
    blocks = _blocks(plan, n_workers)
    _FORKED["counter"] = counter = mpc.Value("q", 0)
    _FORKED["n_workers"] = len(blocks)
    pool = mpc.Pool(len(blocks))
    try:
        jobs = [pool.apply_async(_worker, (args, b)) for b in blocks]
        with _progress(desc, sum(it.T for it, _ in plan)) as bar:
            while not all(j.ready() for j in jobs):
                for j in jobs:
                    if j.ready() and not j.successful():
                        j.get()  # re-raises the worker's error (one-line A2FBenchError)
                if bar is not None:
                    bar.update(counter.value - bar.n)
                time.sleep(0.05)
        parts = [j.get() for j in jobs]
    finally:
        pool.terminate()
        pool.join()
        _FORKED.clear()
    seqs = [s for p in parts for s in p[0]]
    digests = {k: v for p in parts for k, v in p[1].items()}
    return seqs, digests, set().union(*(p[2] for p in parts))


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

    seqs, _ = _score(scoring, items, chunks())
    return {"metrics": _aggregates(proto, seqs), "per_sequence": [s["row"] for s in seqs]}


class _SeqAcc:
    """Per-sequence accumulator: per-frame terms per condition and, for FDD, per input either the
    displacement rows ``(T, |U|)`` (reference protocols: the exact pairwise std at the end) or a
    :class:`~a2fbench.metrics.functional.RunningDynamics` (``a2f``: O(|U|) memory)."""

    def __init__(self, sc: _Scoring, index: int, item: _Item, first: _Chunk):
        self.sc, self.i, self.item = sc, index, item
        self.k = len(item.conditions)
        self.parts: dict[str, list[list[np.ndarray]]] = {m: [[] for _ in range(self.k)] for m in sc.pooled}
        if sc.fdd:
            assert first.template is not None
            self.tm_u = np.asarray(first.template).reshape(-1, 3)[sc.upper]
            U = len(sc.upper)
            if sc.proto.float64:
                self.run_gt = F.RunningDynamics()
                self.run_pred = [F.RunningDynamics() for _ in first.preds]
            else:
                def dt(x: np.ndarray) -> np.dtype:
                    return np.result_type(x.dtype, self.tm_u.dtype)

                self.d_gt = np.empty((item.T, U), dt(first.gt))
                self.d_pred = [np.empty((item.T, U), dt(p)) for p in first.preds]

    def _disp(self, x: np.ndarray, a: int, store: Optional[np.ndarray], run: Optional[Any]) -> None:
        if run is not None:
            run.update(F.upper_displacements(x, None, self.sc.upper_ix, self.sc.dtype, self.tm_u))
        else:
            F.upper_displacements(x, None, self.sc.upper_ix, self.sc.dtype, self.tm_u, out=store[a:a + x.shape[0]])

    def add(self, ch: _Chunk, dtypes: set) -> None:
        """Score one chunk, in sub-chunks of about 4 MiB of vertices so that every step runs in cache."""
        sc = self.sc
        touched = ch.gt.shape[1] if "MVE" in sc.pooled or "UFVE" in sc.pooled else len(sc.lips) + len(sc.upper)
        step = max(1, SUBCHUNK_BYTES // (touched * 3 * 8))  # vertices worked on per frame, 3 coords, float64
        run = sc.proto.float64
        for c, p in enumerate(ch.preds):
            dtypes.add(str(np.dtype(sc.dtype) if sc.dtype is not None else np.result_type(ch.gt.dtype, p.dtype)))
        for s0 in range(0, ch.gt.shape[0], step):
            g = ch.gt[s0:s0 + step]
            a = ch.start + s0
            for c, p in enumerate(ch.preds):
                p = p[s0:s0 + step]
                # with MVE every coordinate reaches a per-frame term (NaN/inf propagate): check those
                full = "MVE" in sc.pooled
                if ch.sources is not None and not full:
                    check_finite(p, ch.sources[c], a)
                if sc.pooled:
                    terms = F.frame_terms(g, p, sc.lips_ix, sc.upper_ix, sc.pooled, sc.dtype)
                    if ch.sources is not None and full and not np.isfinite(terms["MVE"]).all():
                        check_finite(p, ch.sources[c], a)
                        if not np.isfinite(g).all():
                            raise StoreError(f"ground truth of {self.item.sid} has NaN or inf near frame {a}; "
                                             "re-run `a2fbench prepare` from intact raw files")
                    for m in sc.pooled:
                        self.parts[m][c].append(terms[m])
                if sc.fdd:
                    self._disp(p, a, None if run else self.d_pred[c], self.run_pred[c] if run else None)
            if sc.fdd:
                self._disp(g, a, None if run else self.d_gt, self.run_gt if run else None)

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
        if self.sc.fdd and self.sc.proto.float64:
            s_gt = self.run_gt.result()
            s_pr = [r.result() for r in self.run_pred]
        elif self.sc.fdd:
            s_gt = F.upper_dynamics_rows(self.d_gt)
            s_pr = [F.upper_dynamics_rows(d) for d in self.d_pred]
        if self.sc.fdd:
            fdd = s_gt - (s_pr[0] if self.k == 1 else sum(s_pr) / self.k)
            row["FDD"] = float(fdd)
        if item.conditions[0] is not None:
            row["conditions"] = list(item.conditions)
        row["pred_frames"] = list(item.pred_frames) if self.k > 1 else item.pred_frames[0]
        return {"row": row, "frames": frames, "fdd": fdd}


def _score(sc: _Scoring, items: list[_Item], chunks: Iterator[_Chunk],
           on_frames: Optional[Callable[[int], Any]] = None) -> tuple[list[dict], set]:
    """Run every chunk through the per-sequence accumulators; returns (per-sequence outputs, compute dtypes)."""
    out: list[dict] = []
    dtypes: set = set()
    cur: Optional[_SeqAcc] = None
    for ch in chunks:
        if cur is None or cur.i != ch.seq_index:
            if cur is not None:
                out.append(cur.close())
            cur = _SeqAcc(sc, ch.seq_index, items[ch.seq_index], ch)
        cur.add(ch, dtypes)
        ch.release()
        if on_frames is not None:
            on_frames(ch.gt.shape[0])
    if cur is not None:
        out.append(cur.close())
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
