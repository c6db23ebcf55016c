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

import hashlib
import logging
import os
import time
from typing import Iterator, Optional

import numpy as np

from .. import __version__
from ..errors import PredictionError, StoreError
from ..store import open_dataset
from ..util.progress import frames_bar
from .accumulate import Chunk, Item, Scoring, aggregates, score_chunks
from .metrics import functional as F
from .metrics.stats import BOOTSTRAP_METHOD, bootstrap_ci
from .metrics.table import METRICS
from .parallel import score_parallel, worker_count
from .pipeline import Context, spare_cpu, stream
from .predictions import PredFile, PredictionSet, read_provenance, scan
from .protocols import CONDITIONS_RULE, frames_scored, get_protocol
from .results import SCHEMA_VERSION, finalize
from .streams import fingerprint

log = logging.getLogger("a2fbench.evaluate")

DEFAULT_BOOTSTRAP = 10000


def _plan(ctx: Context, ids: list[str], preds: PredictionSet) -> list[tuple[Item, list[PredFile]]]:
    """Per sequence the frames scored and the files; applies the protocol's length rule to the headers."""
    out = []
    for sid in ids:
        T_gt = ctx.ds[sid].n_frames
        pfs = preds.files[sid]
        T = frames_scored(ctx.proto, T_gt, [pf.n_frames for pf in pfs])
        if T is None:
            pf = min(pfs, key=lambda f: f.n_frames)
            raise PredictionError(f"{pf.path}: expected at least {T_gt} frames (the ground truth of {sid}), found "
                                  f"{pf.n_frames}; protocol {ctx.proto.name} cuts longer predictions to the "
                                  "ground truth but never pads (protocol facediffuser cuts both to the shorter)")
        out.append((Item(sid, T, [pf.condition for pf in pfs], [pf.n_frames for pf in pfs]), pfs))
    return out


def evaluate(dataset: str, pred_dir: str | os.PathLike, data: str | os.PathLike, split: Optional[str] = None,
             protocol: str = "a2f", regions: Optional[str] = None, *, ignore_extra: bool = False,
             n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, chunk_mb: float = 32.0,
             workers: Optional[int] = 1, progress: bool = True, method: Optional[str] = None) -> dict:
    """Score a predictions folder against a prepared split; returns the finalized results dict.

    ``method``: the name of what made the predictions, recorded as ``predictions.method`` (default: the method
    named in the folder's provenance file, which ``unitalker predict`` writes; recorded as
    ``predictions.source``).

    Arguments follow the stage convention (docs/architecture.md): the dataset, then the folders read.

    Raises :class:`~a2fbench.errors.PredictionError` (one line) for any problem with the predictions,
    before anything is written. See ``docs/metrics.md`` for protocols, length and condition rules.
    ``workers``: processes scoring contiguous blocks of sequences (forked; the numbers do not depend on it).
    Default 1, safe in threaded programs; ``None`` = automatic (min(2, CPUs) for splits of at least 128 MiB of
    ground truth, else 1), which the command line uses.
    """
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
        ctx = Context(ds, proto, lips, upper)
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
        n_workers = worker_count(workers, len(plan), sum(it.T for it, _ in plan) * ctx.V * 3 * 8)
        desc = f"evaluate {ds.id} ({proto.name})" if progress else None
        if n_workers > 1:
            ds.close()  # no HDF5 handle crosses the fork; workers open their own
            seqs, digests, dtypes = score_parallel((str(data), ds.id, proto.name, lips, upper, chunk_mb), plan,
                                                    n_workers, desc)
        else:
            with frames_bar(desc, sum(it.T for it, _ in plan)) as bar:
                seqs, digests, dtypes = stream(ctx, plan, chunk_mb, bar.update if bar else None, spare_cpu(1))
        log.debug("scored %d sequences in %.2f s with %d process(es)", len(plan), time.perf_counter() - t0,
                  n_workers)
        doc = _results(ctx, split, region_set, preds, seqs, digests, dtypes, n_bootstrap, seed)
        return finalize(stamp_method(doc, pred_dir, method))
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
    scoring = Scoring(proto, np.asarray(lips, np.int64), np.asarray(upper, np.int64))
    ids = ids or [f"seq{i}" for i in range(len(gts))]
    items, data = [], []
    for sid, g, p, tm in zip(ids, gts, preds, templates):
        g = F.as_vertices(g)
        ps = [F.as_vertices(x) for x in (p if isinstance(p, (list, tuple)) else [p])]
        T = frames_scored(proto, g.shape[0], [x.shape[0] for x in ps])
        if T is None:
            raise PredictionError(f"{sid}: expected a prediction of at least {g.shape[0]} frames, found "
                                  f"{min(x.shape[0] for x in ps)} (protocol {proto.name})")
        items.append(Item(sid, T, [None] * len(ps), [x.shape[0] for x in ps]))
        data.append((g, ps, np.asarray(tm).reshape(-1, 3)))

    def chunks() -> Iterator[Chunk]:
        for i, (item, (g, ps, tm)) in enumerate(zip(items, data)):
            for a in range(0, item.T, chunk_frames):
                b = min(item.T, a + chunk_frames)
                yield Chunk(i, a, g[a:b], [x[a:b] for x in ps], tm if a == 0 else None, [item.sid] * len(ps))

    seqs, _ = score_chunks(scoring, items, chunks())
    return {"metrics": aggregates(proto, seqs), "per_sequence": [s["row"] for s in seqs]}


def _regions_digest(lips: np.ndarray, upper: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(lips, "<i8").tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(upper, "<i8").tobytes())
    return "sha256:" + h.hexdigest()


def stamp_method(doc: dict, pred_dir: str | os.PathLike, method: Optional[str]) -> dict:
    """Record what made the predictions: ``method`` (given) or the provenance file's, and that file."""
    source = read_provenance(pred_dir)
    name = method or (source or {}).get("method")
    if name:
        doc["predictions"]["method"] = str(name)
    if source:
        doc["predictions"]["source"] = source
    return doc


def _results(ctx: Context, split: str, region_set: str, preds: PredictionSet, seqs: list[dict], digests: dict,
             dtypes: set, n_bootstrap: int, seed: int) -> dict:
    proto, card = ctx.proto, ctx.ds.card
    per_seq = [s["row"] for s in seqs]
    frames = [r["frames"] for r in per_seq]
    metrics: dict[str, dict] = {}
    vunits = str(card.get("vertex_units") or card.get("units") or "")
    display = card.get("display") or {}
    for m, value in aggregates(proto, seqs).items():
        info = METRICS[m]
        key = info.per_sequence_key
        ci = bootstrap_ci(m, [r[key] for r in per_seq], frames, n_resamples=n_bootstrap, seed=seed)
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
                                   "method": BOOTSTRAP_METHOD}},
        "metrics": metrics,
        "per_sequence": per_seq,
        "predictions": {"fingerprint": fingerprint(digests), "n_files": preds.n_files,
                        "kind": sorted({pf.kind for pfs in preds.files.values() for pf in pfs}),
                        "ignored_files": len(preds.ignored)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return finalize(doc)
