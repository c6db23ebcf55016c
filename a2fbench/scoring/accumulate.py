"""Scoring chunks of frames into per-sequence results: the per-frame terms of the framewise metrics, FDD's
displacement statistics, several conditions averaged, several samples (runs) kept apart; and the aggregates
over sequences, per run and their mean over runs.

Takes: :class:`Chunk` s of ground truth and prediction vertices in sequence order. Gives: per sequence
``{row, runs: [{frames, fdd}, ...]}`` (one entry per sample, in index order) and the protocol's aggregates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..errors import StoreError
from .axes import AudioInfo, AxesAccumulator
from .metrics import functional as F
from .metrics.table import METRICS
from .protocols import Protocol
from .streams import check_finite

SUBCHUNK_BYTES = 4 << 20  # scored at once: small enough for the CPU cache (much faster than 64 MiB steps)


@dataclass
class Item:
    """One sequence to score: id, frames scored, and per prediction file its condition, length and sample."""

    sid: str
    T: int
    conditions: list[Optional[str]]
    pred_frames: list[int]
    samples: Optional[list[Optional[int]]] = None  # per file its sample index (None: one run)

    def runs(self) -> list[list[int]]:
        """File indices grouped by sample, in the order the samples first appear (one group without samples)."""
        groups: dict[Optional[int], list[int]] = {}
        for j, k in enumerate(self.samples or [None] * len(self.conditions)):
            groups.setdefault(k, []).append(j)
        return list(groups.values())


@dataclass
class Chunk:
    seq_index: int
    start: int
    gt: np.ndarray  # (t, V, 3) vertices
    preds: list[np.ndarray]  # per condition, (t, V, 3)
    template: Optional[np.ndarray] = None  # (V, 3), on the first chunk of a sequence
    sources: Optional[list[Any]] = None  # prediction file per condition (for error messages)
    leases: Optional[list[Any]] = None  # pooled buffers to release once scored
    audio: Optional[AudioInfo] = None  # the recording's silent frames and RMS, on the first chunk (audio axes)

    def release(self) -> None:
        for lease in self.leases or ():
            lease.release()
        self.leases = None


@dataclass
class Scoring:
    """What one evaluation computes: protocol, regions, coordinate scale of the lip terms (unitalker), compute
    dtype (None: the inputs' promoted dtype); the axes asked for (:mod:`.axes`), the mouth pair they use and
    the frame rate."""

    proto: Protocol
    lips: np.ndarray
    upper: np.ndarray
    scale: float = 1.0
    axes: tuple[str, ...] = ()
    mouth: Optional[tuple[int, int]] = None
    fps: float = 0.0

    def __post_init__(self) -> None:
        self.lips_ix = F.VertexIndex.of(self.lips)
        self.upper_ix = F.VertexIndex.of(self.upper)

    @property
    def dtype(self) -> Optional[type]:
        return np.float64 if self.proto.float64 else None

    @property
    def framewise(self) -> list[str]:
        """The protocol's metrics computed from per-frame terms (kept per frame, then pooled or averaged)."""
        return [m for m in self.proto.metrics if METRICS[m].framewise]

    @property
    def fdd(self) -> bool:
        return any(METRICS[m].per_sequence_key == "FDD" for m in self.proto.metrics)

    @property
    def needs_audio(self) -> bool:
        return bool({"SilenceOpening", "SLCC"} & set(self.axes))


class SequenceAccumulator:
    """Per-sequence accumulator: per-frame terms per condition and, for FDD, per input either the
    displacement rows ``(T, |U|)`` (reference protocols: the exact pairwise std at the end) or a
    :class:`~a2fbench.metrics.functional.RunningDynamics` (``a2f``: O(|U|) memory)."""

    def __init__(self, sc: Scoring, index: int, item: Item, first: Chunk):
        self.sc, self.i, self.item = sc, index, item
        self.k = len(item.conditions)
        self.parts: dict[str, list[list[np.ndarray]]] = {m: [[] for _ in range(self.k)] for m in sc.framewise}
        self.axes = AxesAccumulator(sc.axes, sc.fps, sc.lips_ix, sc.mouth, item.runs(), item.conditions,
                                    first.audio) if sc.axes else None
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

    def add(self, ch: Chunk, dtypes: set) -> None:
        """Score one chunk, in sub-chunks of about 4 MiB of vertices so that every step runs in cache."""
        sc = self.sc
        touched = ch.gt.shape[1] if "MVE" in sc.framewise or "UFVE" in sc.framewise else len(sc.lips) + len(sc.upper)
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
                full = "MVE" in sc.framewise
                if ch.sources is not None and not full:
                    check_finite(p, ch.sources[c], a)
                if sc.framewise:
                    terms = F.frame_terms(g, p, sc.lips_ix, sc.upper_ix, sc.framewise, sc.dtype, sc.scale)
                    if ch.sources is not None and full and not np.isfinite(terms["MVE"]).all():
                        check_finite(p, ch.sources[c], a)
                        if not np.isfinite(g).all():
                            raise StoreError(f"ground truth of {self.item.sid} has NaN or inf near frame {a}; "
                                             "re-run `a2fbench prepare` from intact raw files")
                    for m in sc.framewise:
                        self.parts[m][c].append(terms[m])
                if sc.fdd:
                    self._disp(p, a, None if run else self.d_pred[c], self.run_pred[c] if run else None)
            if sc.fdd:
                self._disp(g, a, None if run else self.d_gt, self.run_gt if run else None)
            if self.axes is not None:  # on the same cache-resident sub-chunk
                self.axes.add(g, [p[s0:s0 + step] for p in ch.preds])

    def close(self) -> dict:
        """{row: per_sequence dict, runs: per sample {frames: {metric: (T,) vector}, fdd: scalar}}; conditions
        are averaged within a run; with several samples the row holds the mean over runs and ``per_sample``."""
        item = self.item
        row: dict[str, Any] = {"id": item.sid, "frames": item.T}
        per_c = {m: [np.concatenate(v) for v in self.parts[m]] for m in self.sc.framewise}
        s_gt, s_pr = None, []
        if self.sc.fdd and self.sc.proto.float64:
            s_gt = self.run_gt.result()
            s_pr = [r.result() for r in self.run_pred]
        elif self.sc.fdd:
            s_gt = F.upper_dynamics_rows(self.d_gt)
            s_pr = [F.upper_dynamics_rows(d) for d in self.d_pred]
        runs = []
        for files in item.runs():
            k = len(files)
            frames = {m: per_c[m][files[0]] if k == 1 else sum(per_c[m][j] for j in files) / k for m in per_c}
            fdd = None
            if self.sc.fdd:
                fdd = s_gt - (s_pr[files[0]] if k == 1 else sum(s_pr[j] for j in files) / k)
            runs.append({"frames": frames, "fdd": fdd})
        values = [sequence_values(self.sc.proto, r) for r in runs]
        for key in values[0]:
            vals = [v[key] for v in values]
            row[key] = vals[0] if len(vals) == 1 else float(F.mean_over_samples(vals))
        if len(runs) > 1:
            row["samples"] = [k for k in dict.fromkeys(item.samples or [])]
            row["per_sample"] = {key: [v[key] for v in values] for key in values[0]}
        if item.conditions[0] is not None:
            row["conditions"] = list(dict.fromkeys(item.conditions))
        row["pred_frames"] = list(item.pred_frames) if self.k > 1 else item.pred_frames[0]
        out = {"row": row, "runs": runs}
        if self.axes is not None:
            extra, out["axes_runs"] = self.axes.close()
            row.update(extra)
            if len(runs) > 1:
                per = {k: [r.get(k) for r in out["axes_runs"]] for k in ("MTM", "LipLag") if k in extra}
                row.setdefault("per_sample", {}).update(per)
        return out


def sequence_values(proto: Protocol, run: dict) -> dict[str, float]:
    """One run's per-sequence columns: framewise metrics as the mean over frames, FDD signed."""
    out = {}
    for m in proto.metrics:
        key = METRICS[m].per_sequence_key
        if METRICS[m].framewise:
            out[key] = float(np.mean(run["frames"][m]))
        elif key not in out:
            out[key] = float(run["fdd"])
    return out


def score_chunks(sc: Scoring, items: list[Item], chunks: Iterator[Chunk],
           on_frames: Optional[Callable[[int], Any]] = None) -> tuple[list[dict], set]:
    """Run every chunk through the per-sequence accumulators; returns (per-sequence outputs, compute dtypes)."""
    out: list[dict] = []
    dtypes: set = set()
    cur: Optional[SequenceAccumulator] = None
    for ch in chunks:
        if cur is None or cur.i != ch.seq_index:
            if cur is not None:
                out.append(cur.close())
            cur = SequenceAccumulator(sc, ch.seq_index, items[ch.seq_index], ch)
        cur.add(ch, dtypes)
        ch.release()
        if on_frames is not None:
            on_frames(ch.gt.shape[0])
    if cur is not None:
        out.append(cur.close())
    return out, dtypes


def run_aggregates(proto: Protocol, seqs: list[dict]) -> list[dict[str, Any]]:
    """Per run (sample) each metric's aggregate by the protocol's rule: pooled ``np.mean`` over all frames, or
    the mean over sequences in split order of the per-sequence values (``|FDD_s|`` for FDD_abs)."""
    out = []
    for k in range(len(seqs[0]["runs"]) if seqs else 0):
        runs = [s["runs"][k] for s in seqs]
        agg = {}
        for m in proto.metrics:
            how = proto.aggregation_of(m)
            if how == "pooled_frames":
                agg[m] = F.pooled_mean([r["frames"][m] for r in runs])
                continue
            vals = [np.mean(r["frames"][m]) if METRICS[m].framewise else r["fdd"] for r in runs]
            agg[m] = F.mean_over_sequences(vals) if how == "mean_sequences" else F.mean_abs_over_sequences(vals)
        out.append(agg)
    return out


def headline(proto: Protocol, per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's headline from the per-run aggregates (:func:`run_aggregates`): the one run's own value, the
    mean over runs when there are several."""
    if len(per_run) == 1:
        return dict(per_run[0])
    return {m: F.mean_over_samples([r[m] for r in per_run]) for m in proto.metrics}
