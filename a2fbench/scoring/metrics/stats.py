"""Statistics over sequences, written once: a metric's aggregate from per-sequence scores, bootstrap
replicates (one sample, several samples, paired differences), percentile intervals, and the key that says
whether two evaluations are comparable at all.

evaluate (the 95% CI in every results file), ``compare`` (the paired difference of two files) and the
leaderboard (paired ties with the best entry) all use these functions.

Resampling: replicate b draws n sequences with replacement (``numpy.random.default_rng(seed).integers``),
held as a count per sequence; the metric is re-aggregated by its own rule on each draw (pooled metrics weight
each sequence by its frames), so a replicate is a matrix product ``counts @ values``. Pairing: the same counts
are applied to both samples of a difference.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .table import METRICS

BOOTSTRAP_METHOD = ("percentile bootstrap over sequences: n resamples of the sequences with replacement "
                    "(numpy default_rng(seed).integers), the metric re-aggregated by its own rule on each (pooled "
                    "metrics weight each sequence by its frames), CI = the 2.5th and 97.5th percentiles (linear "
                    "interpolation)")
_MAX_ITEMS = 1 << 22  # integers per batch of resampling indices


def _how(metric: str, how: Optional[str]) -> str:
    """The aggregation rule: ``how`` (a protocol's, as a results file records it) or the metric table's."""
    return how or METRICS[metric].aggregation


def aggregate(metric: str, values: Sequence[float], frames: Sequence[int], how: Optional[str] = None) -> float:
    """A metric's aggregate from per-sequence scores alone (pooled = frame-weighted mean of sequence means).

    Equal to the pooled mean over frames up to rounding. ``values`` (n, k): k runs (samples) of the same n
    sequences; the aggregate is the mean over runs of each run's aggregate.
    """
    how = _how(metric, how)
    v = np.asarray(values, np.float64)
    if v.ndim == 2:
        return float(np.mean([aggregate(metric, v[:, j], frames, how) for j in range(v.shape[1])]))
    if how == "pooled_frames":
        f = np.asarray(frames, np.float64)
        return float((v * f).sum() / f.sum())
    if how == "mean_abs_sequences":
        v = np.abs(v)
    return float(v.mean())


def aggregate_indexed(metric: str, values: np.ndarray, frames: np.ndarray, idx: np.ndarray,
                      axis: int = -1, how: Optional[str] = None) -> np.ndarray:
    """The aggregate over the sequences picked by index arrays ``idx`` (..., n), vectorised: the form scipy's
    resampling functions (``permutation_test``, ``bootstrap``) call a statistic in."""
    how = _how(metric, how)
    v, f = np.asarray(values, np.float64), np.asarray(frames, np.float64)
    if how == "pooled_frames":
        return (v * f)[idx].sum(axis=axis) / f[idx].sum(axis=axis)
    v = np.abs(v) if how == "mean_abs_sequences" else v
    return v[idx].mean(axis=axis)


def resample_counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Batches of (b, n) float64 counts: row r says how often each of n sequences is drawn in replicate r."""
    rng = np.random.default_rng(seed)
    per = max(1, _MAX_ITEMS // max(1, n))
    for a in range(0, n_resamples, per):
        b = min(per, n_resamples - a)
        idx = rng.integers(0, n, (b, n))
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


@functools.lru_cache(maxsize=64)
def counts_matrix(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """All :func:`resample_counts` batches stacked (read-only, cached: the leaderboard reuses them)."""
    w = np.concatenate(list(resample_counts(n, n_resamples, seed)))
    w.flags.writeable = False
    return w


def replicates(metric: str, counts: np.ndarray, values: np.ndarray, frames: np.ndarray,
               how: Optional[str] = None) -> np.ndarray:
    """The metric's aggregate on each resampled draw: ``counts`` (B, n); ``values`` and ``frames`` (n,) for one
    sample or (n, k) for k samples scored on the same n sequences; returns (B,) or (B, k)."""
    how = _how(metric, how)
    v = np.asarray(values, np.float64)
    if how == "pooled_frames":
        f = np.asarray(frames, np.float64)
        if v.ndim == 2 and f.ndim == 1:  # k runs of the same sequences share their frame counts
            f = f[:, None]
        return (counts @ (f * v)) / (counts @ f)
    if how == "mean_abs_sequences":
        v = np.abs(v)
    return (counts @ v) / counts.shape[1]


def percentile_interval(theta: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    alpha = (1.0 - level) / 2
    lo, hi = np.percentile(theta, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def bootstrap_ci(metric: str, values: Sequence[float], frames: Sequence[int], *, n_resamples: int = 10000,
                 seed: int = 0, level: float = 0.95, how: Optional[str] = None) -> tuple[float, float]:
    """Confidence interval of a metric's aggregate by resampling sequences (see :data:`BOOTSTRAP_METHOD`).

    Written with numpy (scipy.stats alone takes longer to import than a BIWI evaluation takes to score);
    ``tests/test_metrics.py`` checks it against ``scipy.stats.bootstrap(method='percentile')``. One sequence,
    or identical scores, give the degenerate interval ``(v, v)``. ``values`` (n, k): k runs of the same
    sequences; each replicate resamples the sequences once for all runs and takes the mean over runs.
    """
    v = np.asarray(values, np.float64)
    f = np.asarray(frames, np.float64)
    point = aggregate(metric, v, f, how)
    if len(v) < 2 or np.all(v == v[0]):
        return (point, point)
    theta = np.concatenate([replicates(metric, c, v, f, how) for c in resample_counts(len(v), n_resamples, seed)])
    return percentile_interval(theta if theta.ndim == 1 else theta.mean(axis=1), level)


def ratio_ci(num: Sequence[float], den: Sequence[float], *, n_resamples: int = 10000, seed: int = 0,
             level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a ratio of sums over sequences, ``sum(num) / sum(den)`` (the same
    resampled counts as :func:`bootstrap_ci`); draws whose denominator is 0 are left out."""
    a, b = np.asarray(num, np.float64), np.asarray(den, np.float64)
    point = float(a.sum() / b.sum())
    if len(a) < 2:
        return (point, point)
    parts = []
    for c in resample_counts(len(a), n_resamples, seed):
        d = c @ b
        parts.append((c @ a)[d > 0] / d[d > 0])
    return percentile_interval(np.concatenate(parts), level)


def paired_difference(metric: str, a: Sequence[float], b: Sequence[float], frames_a: Sequence[int],
                      frames_b: Sequence[int], *, n_resamples: int = 10000, seed: int = 0,
                      level: float = 0.95, how: Optional[str] = None) -> dict[str, Any]:
    """``agg(b) - agg(a)`` on the same n sequences, with its paired percentile bootstrap interval (both
    aggregates recomputed on the same resampled sequences). Returns ``{a, b, diff, ci95}``."""
    va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    fa, fb = np.asarray(frames_a, np.float64), np.asarray(frames_b, np.float64)
    A, B = aggregate(metric, va, fa, how), aggregate(metric, vb, fb, how)
    d = B - A
    if len(va) < 2 or np.array_equal(va, vb):
        return {"a": A, "b": B, "diff": d, "ci95": (d, d)}
    theta = np.concatenate([replicates(metric, c, vb, fb, how) - replicates(metric, c, va, fa, how)
                            for c in resample_counts(len(va), n_resamples, seed)])
    return {"a": A, "b": B, "diff": d, "ci95": percentile_interval(theta, level)}


def interval_contains_zero(d: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Per column of ``d`` (B, n): is 0 inside the percentile interval (numpy's linear interpolation)?

    Exactly ``lo <= 0 <= hi`` with ``lo, hi = np.percentile(d, [2.5, 97.5], axis=0)``, but decided from counts
    of non-positive / negative replicates; only the columns where 0 falls between the two order statistics
    that the interpolation mixes are sorted (``np.percentile`` partitions every column: 10x slower here).
    """
    n_boot = d.shape[0]
    q_lo, q_hi = (1 - level) / 2 * (n_boot - 1), (1 + level) / 2 * (n_boot - 1)
    k, j = int(np.floor(q_lo)), int(np.floor(q_hi))
    n_le = np.count_nonzero(d <= 0, axis=0)   # s_k <= 0  <=>  n_le >= k + 1
    n_lt = np.count_nonzero(d < 0, axis=0)    # s_j <  0  <=>  n_lt >= j + 1
    lo_ok = n_le >= k + 2                     # s_{k+1} <= 0: lo, between s_k and s_{k+1}, is <= 0
    hi_ok = n_lt <= j                         # s_j >= 0: hi, between s_j and s_{j+1}, is >= 0
    amb_lo, amb_hi = n_le == k + 1, n_lt == j + 1
    amb = np.flatnonzero(amb_lo | amb_hi)
    if amb.size:
        lo, hi = np.percentile(d[:, amb], [100 * q_lo / (n_boot - 1), 100 * q_hi / (n_boot - 1)], axis=0)
        lo_ok[amb] = np.where(amb_lo[amb], lo <= 0, lo_ok[amb])
        hi_ok[amb] = np.where(amb_hi[amb], hi >= 0, hi_ok[amb])
    return lo_ok & hi_ok


# ------------------------------------------------------------------------------------------ comparability
#: what two evaluations must share for their numbers to be compared or ranked together, in the order a
#: mismatch is reported
COMPARABLE_FIELDS = ("dataset", "split", "protocol", "protocol_version", "length_policy", "fingerprint",
                     "regions_digest")


def comparability_key(dataset: str, split: Optional[str], protocol: str, protocol_version: Optional[int],
                      length_policy: Optional[str], fingerprint: Optional[str],
                      regions_digest: Optional[str]) -> tuple:
    """The tuple two evaluations must share (:data:`COMPARABLE_FIELDS`): same ground truth (dataset, split, the
    prepared store's fingerprint), same rules (protocol name, version and length policy) and the same lip and
    upper-face vertices (the region digest)."""
    return (dataset, split, protocol, int(protocol_version or 1), length_policy or None, fingerprint,
            regions_digest)


def results_key(doc: dict) -> tuple:
    """:func:`comparability_key` of a results document."""
    ds, pr = doc["dataset"], doc["protocol"]
    return comparability_key(ds["id"], ds.get("split"), pr["name"], pr.get("version"), pr.get("length_policy"),
                             ds.get("fingerprint"), (ds.get("regions") or {}).get("digest"))


def first_difference(a: tuple, b: tuple) -> Optional[str]:
    """The name of the first field where two comparability keys differ, or None."""
    for name, x, y in zip(COMPARABLE_FIELDS, a, b):
        if x != y:
            return name
    return None
