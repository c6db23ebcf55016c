"""Predictions + prepared store -> results dict (every protocol of :mod:`.protocols`).

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

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..errors import A2FBenchError, PredictionError, StoreError
from ..store import open_dataset
from ..util.progress import frames_bar
from .accumulate import Chunk, Item, Scoring, headline, run_aggregates, score_chunks
from .axes import audio_info, axes_entries
from .document import results_doc
from .metrics import functional as F
from .metrics.axes import AXES, parse_metrics
from .options import (cap_frames, load_region_file, protocol_options, recorded_mouth_list, region_choice, too_short,
                      training_subjects)
from .parallel import score_parallel, worker_count
from .pipeline import Context, spare_cpu, stream
from .predictions import PredFile, PredictionSet, read_provenance, scan
from .protocols import frames_scored, get_protocol, resolve_policy
from .results import finalize, sign

log = logging.getLogger("a2fbench.evaluate")

DEFAULT_BOOTSTRAP = 10000


def _plan(ctx: Context, ids: list[str], preds: PredictionSet, policy: str) -> list[tuple[Item, list[PredFile]]]:
    """Per sequence the frames scored and the files; applies the length policy (and the protocol's cap) to the
    headers."""
    out = []
    for sid in ids:
        seq = ctx.ds[sid]
        T_gt = seq.n_frames
        pfs = preds.files[sid]
        cap = cap_frames(ctx.proto, seq)
        T = frames_scored(policy, T_gt, [pf.n_frames for pf in pfs], cap)
        if T is None:
            pf = min(pfs, key=lambda f: f.n_frames)
            raise PredictionError(f"{pf.path}: expected at least {T_gt} frames (the ground truth of {sid}), found "
                                  f"{pf.n_frames}; length policy {policy} cuts longer predictions to the ground truth "
                                  "but never pads (--length-policy truncate_both cuts both to the shorter)")
        if T == 0:
            raise PredictionError(f"{sid}: expected frames to score, found none (the recording covers "
                                  f"{seq.audio_seconds:.3f} s); protocol {ctx.proto.name} cannot score this sequence")
        samples = [pf.sample for pf in pfs] if any(pf.sample is not None for pf in pfs) else None
        out.append((Item(sid, T, [pf.condition for pf in pfs], [pf.n_frames for pf in pfs], samples), pfs))
    return out


def evaluate(dataset: str, pred_dir: str | os.PathLike, data: str | os.PathLike, split: Optional[str] = None,
             protocol: str = "a2f", regions: Optional[str] = None, *, length_policy: Optional[str] = None,
             region_files: Optional[dict[str, str | os.PathLike]] = None, prefix: Optional[str] = None,
             ignore_extra: bool = False, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, chunk_mb: float = 32.0,
             workers: Optional[int] = 1, progress: bool = True, method: Optional[str] = None,
             metrics: Optional[str] = None, mouth_pair: Optional[tuple[int, int]] = None) -> dict:
    """Score a predictions folder against a prepared split; returns the finalized results dict.

    ``method``: the name of what made the predictions, recorded as ``predictions.method`` (default: the method
    named in the folder's provenance file, which ``unitalker predict`` writes; recorded as
    ``predictions.source``).

    Arguments follow the stage convention (docs/architecture.md): the dataset, then the folders read.
    ``length_policy``: ``truncate_pred_only`` or ``truncate_both`` (default: the protocol's own).
    ``region_files``: ``{"lips": FILE, "upper": FILE}`` index files replacing the region set's lists (recorded
    by digest). ``prefix``: a model name every prediction file starts with (``<prefix>_<seq>...npy``).

    Raises :class:`~a2fbench.errors.PredictionError` (one line) for any problem with the predictions,
    before anything is written. See ``docs/metrics.md`` for protocols, length and condition rules.
    ``workers``: processes scoring contiguous blocks of sequences (forked; the numbers do not depend on it).
    Default 1, safe in threaded programs; ``None`` = automatic (min(2, CPUs) for splits of at least 128 MiB of
    ground truth, else 1), which the command line uses.
    ``metrics``: ``--metrics`` (comma list of metric-table names of the protocol and axes, :mod:`.metrics.axes`;
    None: the protocol's set). ``mouth_pair``: (upper, lower) vertex indices replacing the manifest's.
    """
    proto = get_protocol(protocol)
    policy = resolve_policy(proto, length_policy)
    selected = parse_metrics(metrics, proto.metrics, proto.name)
    ds = open_dataset(data, dataset)
    try:
        split = split or ds.spec.evaluation.split
        ids = ds.split(split)
        if not ids:
            raise StoreError(f"{ds.id} split {split!r} has no sequences; pick another with --split")
        short = {sid: sec for sid in ids for sec in [too_short(proto, ds[sid])] if sec is not None}
        skip = [sid for sid in ids if sid in short]
        ids = [sid for sid in ids if sid not in short]
        if not ids:
            raise StoreError(f"{ds.id} split {split!r}: every sequence is under {proto.min_seconds:g} s, which "
                             f"protocol {proto.name} leaves out; nothing to score")
        opts = protocol_options(ds.spec, proto)
        if selected is not None:
            opts = dataclasses.replace(opts, metrics=selected[0], axes=selected[1])
        carried = recorded_mouth_list(proto, ds, read_provenance(pred_dir), regions, region_files)
        if carried:  # UniTalker's list, from the release folder through import-official: the protocol's own set
            region_files = {**(region_files or {}), "lips": carried[0]}
            log.info("%s: region set %r from UniTalker's mouth list the predictions record names (%s, %s), upper "
                     "face as region set %r", ds.id, proto.region_set, carried[0], carried[1][:19], carried[2])
        region_set, proto, fallback = region_choice(proto, ds.region_sets, regions, ds.card.get("region_default"),
                                                    opts.region_set, bool((region_files or {}).get("lips")))
        if fallback:
            log.warning("%s: %s", ds.id, fallback)
        reg = ds.regions_for(carried[2] if carried else region_set)
        region_set = str(proto.region_set) if carried else region_set
        lips, upper = np.asarray(reg["lips"], np.int64), np.asarray(reg["upper"], np.int64)
        ctx = Context(ds, proto, lips, upper, opts)
        files: dict[str, dict] = {}
        for what, path in (region_files or {}).items():
            idx, digest = load_region_file(path, ctx.V, what, ds.id)
            files[what] = {"file": Path(path).name, "sha256": digest, "n": int(idx.size)}
            if carried and what == "lips":
                files[what].update(source="the imported UniTalker release (the predictions record names it)",
                                   upper_from=carried[2])
            lips, upper = (idx, upper) if what == "lips" else (lips, idx)
        if files:
            ctx.set_regions(lips, upper)
        for name, idx in (("lips", lips), ("upper", upper)):
            if idx.size == 0 or idx.min() < 0 or idx.max() >= ctx.V:
                raise StoreError(f"{ds.id} region set {region_set!r}: expected {name} indices in [0, {ctx.V}), found "
                                 f"{idx.size} indices in [{idx.min() if idx.size else '-'}, "
                                 f"{idx.max() if idx.size else '-'}]; re-run `a2fbench prepare {ds.id}`")
        mouth, missing = _mouth_and_missing(ds, ctx.V, opts.axes, mouth_pair)
        if opts.axes:
            opts = dataclasses.replace(opts, mouth_pair=(mouth["upper"], mouth["lower"]) if mouth else None)
            ctx.opts = opts
            ctx.set_regions(lips, upper)
            _check_audio(ds, ids, opts.axes)
        subjects = {sid: ds[sid].subject for sid in ids}
        preds = scan(pred_dir, ids, subjects, n_vertices=ctx.V, n_params=ctx.P, ignore_extra=ignore_extra,
                     what=f"{ds.id} split {split!r}", training_subjects=training_subjects(ds), prefix=prefix,
                     skip=skip)
        plan = _plan(ctx, ids, preds, policy)
        t0 = time.perf_counter()
        n_workers = worker_count(workers, len(plan), sum(it.T for it, _ in plan) * ctx.V * 3 * 8)
        desc = f"evaluate {ds.id} ({proto.name})" if progress else None
        if n_workers > 1:
            ds.close()  # no HDF5 handle crosses the fork; workers open their own
            seqs, digests, dtypes = score_parallel((str(data), ds.id, proto.name, lips, upper, chunk_mb, opts), plan,
                                                    n_workers, desc)
        else:
            with frames_bar(desc, sum(it.T for it, _ in plan)) as bar:
                seqs, digests, dtypes = stream(ctx, plan, chunk_mb, bar.update if bar else None, spare_cpu(1))
        log.debug("scored %d sequences in %.2f s with %d process(es)", len(plan), time.perf_counter() - t0,
                  n_workers)
        doc = results_doc(ctx, split, {"set": region_set, "files": files,
                                       "sources": (ds.card.get("region_files") or {}).get(region_set)},
                          preds, seqs, digests, dtypes, n_bootstrap, seed, policy,
                          {"mouth": mouth, "missing": missing, "subjects": [subjects[it.sid] for it, _ in plan]})
        if fallback:
            doc["protocol"]["fallback"] = fallback
        if proto.min_seconds is not None:
            doc["protocol"]["min_seconds"] = float(proto.min_seconds)
            doc["protocol"]["skipped"] = [{"id": sid, "seconds": round(float(short[sid]), 6)} for sid in skip]
        return finalize(sign(stamp_method(doc, pred_dir, method)))
    finally:
        ds.close()


def _mouth_and_missing(ds: Any, V: int, axes: tuple[str, ...],
                       override: Optional[tuple[int, int]]) -> tuple[Optional[dict], dict[str, str]]:
    """The mouth pair the axes use (``--mouth-pair``, else the manifest's ``regions.mouth_pair``) as recorded in
    the results, and the axes that cannot be computed at all, with why. An index beyond V is a one-line error."""
    if not any(AXES[a].needs_mouth for a in axes):
        return None, {}
    mp = ds.spec.regions.mouth_pair
    if override is not None:
        mouth = {"upper": int(override[0]), "lower": int(override[1]), "source": "--mouth-pair", "verified": False}
    elif mp is not None:
        mouth = {"upper": mp.upper, "lower": mp.lower, "source": mp.source, "verified": mp.verified}
    else:
        why = (f"no mouth pair for {ds.id} (its manifest declares no regions.mouth_pair: none is published for this "
               "mesh); pass --mouth-pair UPPER,LOWER")
        return None, {a: why for a in axes if AXES[a].needs_mouth}
    for side in ("upper", "lower"):
        if not 0 <= mouth[side] < V:
            raise A2FBenchError(f"mouth pair of {ds.id}: expected {side} vertex index in [0, {V}), found "
                                f"{mouth[side]} ({mouth['source'][:60]}); pass --mouth-pair UPPER,LOWER with indices "
                                "of this mesh")
    if mouth["upper"] == mouth["lower"]:
        raise A2FBenchError(f"mouth pair of {ds.id}: expected two different vertices, found {mouth['upper']} twice; "
                            "pass --mouth-pair UPPER,LOWER")
    return mouth, {}


def _check_audio(ds: Any, ids: list[str], axes: tuple[str, ...]) -> None:
    """Audio-based axes need every sequence's recording: one line naming the first without one."""
    need = [AXES[a].cli for a in axes if AXES[a].needs_audio]
    for sid in ids if need else ():
        if ds[sid].n_samples <= 0:
            raise A2FBenchError(f"{ds.id} {sid}: expected its audio recording for --metrics {','.join(need)}, found "
                                "none in the store; re-run `a2fbench prepare` with the audio files, or drop "
                                f"{','.join(need)} from --metrics")


def score_arrays(gts: list[np.ndarray], preds: list[np.ndarray], templates: list[np.ndarray], lips: np.ndarray,
                 upper: np.ndarray, protocol: str = "a2f", *, ids: Optional[list[str]] = None,
                 chunk_frames: int = 128, length_policy: Optional[str] = None, scale: float = 1.0,
                 samples: Optional[list[list[Optional[int]]]] = None, metrics: Optional[str] = None,
                 fps: Optional[float] = None, mouth_pair: Optional[tuple[int, int]] = None,
                 audio: Optional[list[tuple[np.ndarray, float]]] = None, subjects: Optional[list[str]] = None,
                 vertex_units: str = "", n_bootstrap: int = 0, seed: int = 0) -> dict:
    """The same scoring on in-memory vertex arrays (no store, no files; no bootstrap unless ``n_bootstrap``).

    ``gts``/``preds``: per sequence ``(T, V, 3)`` or ``(T, 3V)`` (a list per sequence in ``preds`` means
    several conditions, or samples when ``samples`` gives each one's index); ``templates``: ``(V, 3)`` or
    ``(3V,)``. ``scale``: the unitalker protocol's coordinate scale (its 20 s cut is the caller's). Returns
    ``{"metrics": {name: value}, "per_sequence": [...], "runs": [{name: value} per sample]}``.

    ``metrics``: as ``evaluate --metrics`` (comma list of the protocol's metrics and the axes of
    :mod:`.metrics.axes`). The axes need ``fps``; ``mtm``, ``lip-lag`` and ``silence-opening`` a ``mouth_pair``
    (upper, lower; without one they are ``None`` with a reason, as in a results file); ``silence-opening`` and
    ``slcc`` per sequence ``audio`` = (samples, sample rate); ``slcc`` the ``subjects`` (speakers; default: one
    per sequence, which leaves SLCC undefined). Each axis's value is in ``metrics`` (``None`` when undefined) and
    its whole results-file entry (reason, constants, ``gt`` and ``delta`` for SLCC, CI with ``n_bootstrap``) in
    ``axes``.
    """
    proto = get_protocol(protocol)
    policy = resolve_policy(proto, length_policy)
    table, axes = parse_metrics(metrics, proto.metrics, proto.name) or (proto.metrics, ())
    proto = dataclasses.replace(proto, metrics=table)
    n = len(gts)
    if axes and not (fps and fps > 0):
        raise A2FBenchError(f"score_arrays: expected fps > 0 for the axes {', '.join(axes)}, found {fps!r}")
    missing: dict[str, str] = {}
    if mouth_pair is None:
        missing = {a: "no mouth pair given (mouth_pair=(upper, lower))" for a in axes if AXES[a].needs_mouth}
    need_audio = [AXES[a].cli for a in axes if AXES[a].needs_audio]
    if need_audio and (audio is None or len(audio) != n):
        raise A2FBenchError(f"score_arrays: expected audio=[(samples, sample_rate)] for each of the {n} sequences "
                            f"for {', '.join(need_audio)}, found {'none' if audio is None else len(audio)}")
    mouth = None if mouth_pair is None else (int(mouth_pair[0]), int(mouth_pair[1]))
    scoring = Scoring(proto, np.asarray(lips, np.int64), np.asarray(upper, np.int64), scale, axes, mouth,
                      float(fps or 0.0))
    ids = ids or [f"seq{i}" for i in range(n)]
    items, data = [], []
    for i, (sid, g, p, tm) in enumerate(zip(ids, gts, preds, templates)):
        g = F.as_vertices(g)
        ps = [F.as_vertices(x) for x in (p if isinstance(p, (list, tuple)) else [p])]
        T = frames_scored(policy, g.shape[0], [x.shape[0] for x in ps])
        if T is None:
            raise PredictionError(f"{sid}: expected a prediction of at least {g.shape[0]} frames, found "
                                  f"{min(x.shape[0] for x in ps)} (length policy {policy})")
        if mouth is not None and axes and not (0 <= min(mouth) and max(mouth) < g.shape[1]):
            raise A2FBenchError(f"score_arrays: expected mouth_pair indices in [0, {g.shape[1]}), found {mouth}")
        items.append(Item(sid, T, [None] * len(ps), [x.shape[0] for x in ps], samples[i] if samples else None))
        data.append((g, ps, np.asarray(tm).reshape(-1, 3)))

    def chunks() -> Iterator[Chunk]:
        for i, (item, (g, ps, tm)) in enumerate(zip(items, data)):
            sound = audio_info(audio[i][0], audio[i][1], scoring.fps, item.T) if need_audio and audio else None
            for a in range(0, item.T, chunk_frames):
                b = min(item.T, a + chunk_frames)
                yield Chunk(i, a, g[a:b], [x[a:b] for x in ps], tm if a == 0 else None, [item.sid] * len(ps),
                            audio=sound if a == 0 else None)

    seqs, _ = score_chunks(scoring, items, chunks())
    runs = run_aggregates(proto, seqs)
    out = {"metrics": headline(proto, runs), "per_sequence": [s["row"] for s in seqs], "runs": runs}
    if axes:
        entries = axes_entries(axes, seqs, list(subjects) if subjects else list(ids), scoring.fps, vertex_units,
                               {"upper": mouth[0], "lower": mouth[1]} if mouth else None, missing, n_bootstrap,
                               seed)
        out["axes"] = entries
        out["metrics"].update({a: entries[a]["value"] for a in axes})
    return out


def stamp_method(doc: dict, pred_dir: str | os.PathLike, method: Optional[str]) -> dict:
    """Record what made the predictions: ``method`` (given) or the provenance file's, and that file."""
    source = read_provenance(pred_dir)
    name = method or (source or {}).get("method")
    if name:
        doc["predictions"]["method"] = str(name)
    if source:
        doc["predictions"]["source"] = source
        if isinstance(source.get("streaming"), dict):  # made in streaming mode: chunk, look-ahead, latency (ms)
            doc["predictions"]["streaming"] = source["streaming"]
    return doc
