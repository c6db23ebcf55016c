"""Metrics as pure functions: a per-frame step, a per-sequence step and an aggregation step.

Every formula, unit and rule is written out in ``docs/metrics.md``. Shapes: one sequence (or a chunk of
its frames) is ``(T, V, 3)`` or flattened ``(T, 3V)``; region index lists are 0-based vertex indices.

The split into steps is what makes the aggregation explicit:

* per frame (chunkable, frames are independent): :func:`squared_distances`, :func:`lip_errors`,
  :func:`mean_distances`, :func:`upper_displacements`;
* per sequence: :func:`upper_dynamics` (``mean_u std_t``) and :func:`fdd_sequence`;
* over sequences: :func:`pooled_mean` (LVE, MVE, UFVE: one mean over every frame of the split) and
  :func:`mean_over_sequences` / :func:`mean_abs_over_sequences` (FDD, FDD_abs).

Bit-exactness with CodeTalker's ``cal_metric.py`` (protocol ``codetalker``) rests on doing, per element,
exactly the arithmetic numpy does there (checked against :mod:`a2fbench.metrics.reference` in the tests):

* the squared distance sums x, y, z left to right, ``(dx² + dy²) + dz²``, in the promoted dtype of the
  inputs (float64 BIWI ground truth minus a float32 prediction is float64);
* the max over lip vertices is exact in any order;
* the pooled mean is ``np.mean`` of the one concatenated per-frame vector (pairwise summation);
* in the reference, ``np.sum(axis=2)`` of the transposed ``(T, U, 3)`` array returns an F-ordered
  ``(T, U)`` array, so ``np.std(axis=0)`` runs along contiguous memory (pairwise sums per vertex over time).
  We keep that displacement array as a C-ordered ``(U, T)`` array and take ``np.std(axis=1)``: the same
  reduction, the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: name, unit (from the vertex unit), direction, aggregation, version."""

    name: str
    power: int  # 2: squared distances (unit²); 1: distances (unit)
    aggregation: str  # see a2fbench.results.AGGREGATION
    description: str
    higher_is_better: bool = False
    version: int = 1

    def unit(self, vertex_units: str) -> str:
        """Unit string for a dataset whose vertex coordinates are in ``vertex_units`` (e.g. ``m`` -> ``m^2``)."""
        if self.power == 1:
            return vertex_units
        u = vertex_units if vertex_units.isalnum() else f"({vertex_units})"
        return f"{u}^{self.power}"


METRIC_INFO: dict[str, MetricInfo] = {
    "LVE": MetricInfo("LVE", 2, "pooled_frames",
                      "lip vertex error: per frame the max over lip vertices of the squared distance, "
                      "mean over all frames of the split"),
    "MVE": MetricInfo("MVE", 1, "pooled_frames",
                      "mean vertex error: Euclidean distance averaged over all vertices and all frames"),
    "UFVE": MetricInfo("UFVE", 1, "pooled_frames",
                       "upper-face vertex error (A2F-Bench definition): MVE over the upper-face vertices"),
    "FDD": MetricInfo("FDD", 2, "mean_sequences",
                      "upper-face dynamics deviation: per sequence mean_u std_t |x - template|^2 of GT minus "
                      "that of the prediction (signed), mean over sequences"),
    "FDD_abs": MetricInfo("FDD_abs", 2, "mean_abs_sequences",
                          "mean over sequences of |FDD_s|"),
}

# ----------------------------------------------------------------------------------------- frame step


def as_vertices(x: np.ndarray) -> np.ndarray:
    """View ``(T, 3V)`` or ``(T, V, 3)`` as ``(T, V, 3)`` (no copy)."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[2] == 3:
        return x
    if x.ndim == 2 and x.shape[1] % 3 == 0:
        return x.reshape(x.shape[0], -1, 3)
    raise ValueError(f"expected (T, V, 3) or (T, 3V) vertices, got shape {x.shape}")


def sum_xyz(sq: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``(T, V, 3) -> (T, V)``: ``(a_x + a_y) + a_z``, the order numpy's ``sum(axis=2)`` uses."""
    out = np.add(sq[..., 0], sq[..., 1], out=out)
    out += sq[..., 2]
    return out


def squared_distances(gt: np.ndarray, pred: np.ndarray, dtype: Optional[np.dtype] = None,
                      out: Optional[np.ndarray] = None) -> np.ndarray:
    """Per vertex squared Euclidean distance ``d2(gt, pred)``: ``(T, V, 3)`` x2 -> ``(T, V)``.

    ``dtype=None`` computes in numpy's promoted dtype of the inputs (the reference scripts' arithmetic);
    ``dtype=np.float64`` casts first.

    >>> g = np.zeros((1, 2, 3)); p = np.array([[[1., 2., 2.], [0., 0., 3.]]])
    >>> squared_distances(g, p).tolist()
    [[9.0, 9.0]]
    """
    g, p = as_vertices(gt), as_vertices(pred)
    d = np.subtract(g, p, dtype=dtype)
    np.multiply(d, d, out=d)
    return sum_xyz(d, out=out)


def take_vertices(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[:, idx]`` for ``(T, V, 3)`` (or ``(T, 3V)``) vertices -> ``(T, len(idx), 3)``; a flat gather (fast)."""
    x3 = as_vertices(x)
    flat = x3.reshape(x3.shape[0], -1)
    i3 = (3 * np.asarray(idx, np.int64)[:, None] + np.arange(3)).reshape(-1)
    return np.take(flat, i3, axis=1).reshape(x3.shape[0], -1, 3)


def frame_terms(gt: np.ndarray, pred: np.ndarray, lips: np.ndarray, upper: Optional[np.ndarray],
                which: Iterable[str], dtype: Optional[np.dtype] = None) -> dict[str, np.ndarray]:
    """The per-frame terms of the pooled metrics in ``which`` (LVE, MVE, UFVE) for one chunk: ``{name: (T,)}``.

    Shares the work: with MVE or UFVE the squared distances of all vertices are computed once; LVE alone
    touches only the lip vertices. Bits equal :func:`lve_frames` / :func:`mve_frames`.
    """
    which = set(which)
    out: dict[str, np.ndarray] = {}
    if which & {"MVE", "UFVE"}:
        sq = squared_distances(gt, pred, dtype)
        if "LVE" in which:
            out["LVE"] = lip_errors(sq, lips)
        dist = np.sqrt(sq, out=sq)
        if "MVE" in which:
            out["MVE"] = dist.mean(axis=1)
        if "UFVE" in which:
            out["UFVE"] = np.take(dist, upper, axis=1).mean(axis=1)
    elif "LVE" in which:
        out["LVE"] = lip_errors(squared_distances(take_vertices(gt, lips), take_vertices(pred, lips), dtype))
    return out


def lip_errors(sq: np.ndarray, lips: Optional[np.ndarray] = None) -> np.ndarray:
    """Per frame LVE term: ``max_{v in lips} sq[t, v]``; ``(T, V) -> (T,)`` (``lips=None``: sq is already lips)."""
    s = sq if lips is None else np.take(sq, lips, axis=1)
    return s.max(axis=1)


def mean_distances(sq: np.ndarray, idx: Optional[np.ndarray] = None) -> np.ndarray:
    """Per frame mean Euclidean distance over vertices ``idx`` (all if None): ``(T, V) -> (T,)``."""
    s = sq if idx is None else np.take(sq, idx, axis=1)
    return np.sqrt(s).mean(axis=1)


def upper_displacements(x: np.ndarray, template: np.ndarray, upper: np.ndarray,
                        dtype: Optional[np.dtype] = None) -> np.ndarray:
    """Squared displacement from the template on the upper-face vertices: ``(T, V, 3) -> (T, |U|)``.

    ``template`` is ``(V, 3)`` or ``(3V,)``; ``x - template`` is taken in the promoted dtype (or ``dtype``).
    """
    tm = np.asarray(template).reshape(-1, 3)
    m = np.subtract(take_vertices(x, upper), tm[upper], dtype=dtype)
    np.multiply(m, m, out=m)
    return sum_xyz(m)


# ------------------------------------------------------------------------------------- sequence step


def upper_dynamics(disp_ut: np.ndarray) -> float:
    """``mean_u std_t D[t, u]`` from the displacements stored as ``(|U|, T)`` (C order; see module doc).

    ``np.std`` is the population std (ddof 0), as in the reference.
    """
    return np.mean(np.std(disp_ut, axis=1))


def fdd_sequence(gt: np.ndarray, pred: np.ndarray, template: np.ndarray, upper: np.ndarray,
                 dtype: Optional[np.dtype] = None) -> float:
    """Signed FDD of one sequence: ``S(gt) - S(pred)``, ``S = mean_u std_t |x - template|²``.

    Positive: the prediction moves the upper face less than the ground truth.
    """
    dg = np.ascontiguousarray(upper_displacements(gt, template, upper, dtype).T)
    dp = np.ascontiguousarray(upper_displacements(pred, template, upper, dtype).T)
    return upper_dynamics(dg) - upper_dynamics(dp)


def lve_frames(gt: np.ndarray, pred: np.ndarray, lips: np.ndarray, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """Per frame LVE terms of one sequence: ``(T,)``."""
    return lip_errors(squared_distances(take_vertices(gt, lips), take_vertices(pred, lips), dtype))


def mve_frames(gt: np.ndarray, pred: np.ndarray, idx: Optional[np.ndarray] = None,
               dtype: Optional[np.dtype] = None) -> np.ndarray:
    """Per frame mean vertex distance (over ``idx``, all vertices if None): ``(T,)``; UFVE with ``idx=upper``."""
    if idx is not None:
        gt, pred = take_vertices(gt, idx), take_vertices(pred, idx)
    return mean_distances(squared_distances(gt, pred, dtype))


# ---------------------------------------------------------------------------------------- aggregation


def pooled_mean(frame_values: Sequence[np.ndarray]) -> float:
    """LVE, MVE, UFVE: one ``np.mean`` over the per-frame values of every sequence, concatenated in order."""
    return np.mean(np.concatenate([np.asarray(v).reshape(-1) for v in frame_values]))


def mean_over_sequences(values: Iterable[float]) -> float:
    """FDD: Python ``sum`` over the per-sequence values in split order, divided by their number."""
    vals = list(values)
    return sum(vals) / len(vals)


def mean_abs_over_sequences(values: Iterable[float]) -> float:
    """FDD_abs: the mean over sequences of ``|FDD_s|``."""
    vals = [abs(v) for v in values]
    return sum(vals) / len(vals)


def aggregate_from_sequences(metric: str, values: Sequence[float], frames: Sequence[int]) -> float:
    """An aggregate from per-sequence scores alone (pooled = frame-weighted mean of sequence means).

    Equal to the pooled mean up to rounding; used by the bootstrap and by ``compare``.
    """
    how = METRIC_INFO[metric].aggregation
    v = np.asarray(values, np.float64)
    if how == "pooled_frames":
        f = np.asarray(frames, np.float64)
        return float((v * f).sum() / f.sum())
    if how == "mean_abs_sequences":
        v = np.abs(v)
    return float(v.mean())


# ------------------------------------------------------------------------------------------ bootstrap


def _stat(metric: str, values: np.ndarray, frames: np.ndarray):
    """Vectorised aggregate over index arrays ``i`` (..., n) -> (...)."""
    how = METRIC_INFO[metric].aggregation
    if how == "pooled_frames":
        sums = values * frames

        def stat(i: np.ndarray, axis: int = -1) -> np.ndarray:
            return sums[i].sum(axis=axis) / frames[i].sum(axis=axis)
    else:
        v = np.abs(values) if how == "mean_abs_sequences" else values

        def stat(i: np.ndarray, axis: int = -1) -> np.ndarray:
            return v[i].mean(axis=axis)
    return stat


BOOTSTRAP_METHOD = ("percentile bootstrap over sequences (scipy.stats.bootstrap, method='percentile'): "
                    "sequences are resampled with replacement and the metric is re-aggregated by its own rule "
                    "(pooled metrics weight each sequence by its frames)")


def bootstrap_ci(metric: str, values: Sequence[float], frames: Sequence[int], *, n_resamples: int = 10000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a metric's aggregate by resampling sequences (see :data:`BOOTSTRAP_METHOD`).

    One sequence gives the degenerate interval ``(v, v)``.
    """
    from scipy import stats

    v = np.asarray(values, np.float64)
    f = np.asarray(frames, np.float64)
    point = aggregate_from_sequences(metric, v, f)
    if len(v) < 2 or np.all(v == v[0]):
        return (point, point)
    res = stats.bootstrap((np.arange(len(v)),), _stat(metric, v, f), n_resamples=n_resamples, vectorized=True,
                          method="percentile", confidence_level=level, rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))
