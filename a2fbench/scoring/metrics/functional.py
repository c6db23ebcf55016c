"""Metrics as pure functions: a per-frame step, a per-sequence step and an aggregation step.

Every formula, unit and rule is written out in ``docs/metrics.md``. Shapes: one sequence (or a chunk of
its frames) is ``(T, V, 3)`` or flattened ``(T, 3V)``; region index lists are 0-based vertex indices.

The split into steps is what makes the aggregation explicit:

* per frame (chunkable, frames are independent): :func:`squared_distances`, :func:`lip_errors`,
  :func:`mean_distances`, :func:`upper_displacements`, :func:`frame_terms` (LVE, MVE, UFVE, LVD at once);
* per sequence: :func:`upper_dynamics` (``mean_u std_t``) and :func:`fdd_sequence`;
* over sequences: :func:`pooled_mean` (LVE, MVE, UFVE: one mean over every frame of the split) and
  :func:`mean_over_sequences` / :func:`mean_abs_over_sequences` (FDD, FDD_abs; UniTalker's LVE and LVD);
* over samples (several runs of a stochastic model): :data:`mean_over_samples` (the same mean).

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

# ----------------------------------------------------------------------------------------- frame step


def as_vertices(x: np.ndarray) -> np.ndarray:
    """View ``(T, 3V)`` or ``(T, V, 3)`` as ``(T, V, 3)`` (no copy)."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[2] == 3:
        return x
    if x.ndim == 2 and x.shape[1] % 3 == 0:
        return x.reshape(x.shape[0], -1, 3)
    raise ValueError(f"expected (T, V, 3) or (T, 3V) vertices, got shape {x.shape}")


def _cast(dtype: Optional[np.dtype], *xs: np.ndarray) -> Optional[np.dtype]:
    """``dtype`` only where it differs from the promoted one (a cast-free ufunc loop is faster, same bits)."""
    if dtype is None or np.result_type(*xs) == np.dtype(dtype):
        return None
    return dtype


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
    d = np.subtract(g, p, dtype=_cast(dtype, g, p))
    np.multiply(d, d, out=d)
    return sum_xyz(d, out=out)


@dataclass(frozen=True)
class VertexIndex:
    """Vertex indices with their flat ``(x, y, z)`` column indices precomputed, for gathers on hot paths.

    Every function taking region indices accepts a plain index array or a :class:`VertexIndex`.
    """

    v: np.ndarray  # (n,) vertex indices, in the order given (the order matters for FDD's mean)
    flat: np.ndarray  # (3n,) indices into a (T, 3V) row

    @classmethod
    def of(cls, idx: "np.ndarray | VertexIndex") -> "VertexIndex":
        if isinstance(idx, VertexIndex):
            return idx
        v = np.asarray(idx, np.int64).reshape(-1)
        return cls(v, (3 * v[:, None] + np.arange(3)).reshape(-1))


def _v(idx: "np.ndarray | VertexIndex | None") -> Optional[np.ndarray]:
    return idx.v if isinstance(idx, VertexIndex) else idx


def take_vertices(x: np.ndarray, idx: "np.ndarray | VertexIndex") -> np.ndarray:
    """``x[:, idx]`` for ``(T, V, 3)`` (or ``(T, 3V)``) vertices -> ``(T, len(idx), 3)``; a flat gather (fast)."""
    x3 = as_vertices(x)
    flat = x3.reshape(x3.shape[0], -1)
    return np.take(flat, VertexIndex.of(idx).flat, axis=1).reshape(x3.shape[0], -1, 3)


def frame_terms(gt: np.ndarray, pred: np.ndarray, lips: np.ndarray, upper: Optional[np.ndarray],
                which: Iterable[str], dtype: Optional[np.dtype] = None, scale: float = 1.0) -> dict[str, np.ndarray]:
    """The per-frame terms of the framewise metrics in ``which`` (LVE, MVE, UFVE, LVD) for one chunk:
    ``{name: (T,)}``.

    Shares the work: with MVE or UFVE the squared distances of all vertices are computed once; LVE or LVD alone
    touch only the lip vertices. Bits equal :func:`lve_frames` / :func:`mve_frames`. ``scale``: coordinates
    multiplied by it first (UniTalker's scaled space), applied to the lip terms as ``e_t * scale²`` (LVE) and
    ``sqrt(e_t * scale²)`` (LVD, the max Euclidean lip distance); MVE and UFVE are never scaled.
    """
    which = set(which)
    out: dict[str, np.ndarray] = {}
    lve: Optional[np.ndarray] = None
    if which & {"MVE", "UFVE"}:
        sq = squared_distances(gt, pred, dtype)
        if which & {"LVE", "LVD"}:
            lve = lip_errors(sq, lips)
        dist = np.sqrt(sq, out=sq)
        if "MVE" in which:
            out["MVE"] = dist.mean(axis=1)
        if "UFVE" in which:
            out["UFVE"] = np.take(dist, _v(upper), axis=1).mean(axis=1)
    elif which & {"LVE", "LVD"}:
        lve = lip_errors(squared_distances(take_vertices(gt, lips), take_vertices(pred, lips), dtype))
    if lve is not None:
        if scale != 1.0:
            lve = lve * (float(scale) * float(scale))
        if "LVE" in which:
            out["LVE"] = lve
        if "LVD" in which:
            out["LVD"] = np.sqrt(lve)
    return out


def normalise_coordinates(x: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """FaceDiffuser's Multiface normalisation, per axis to [-1, 1]: ``((x - lo) / (hi - lo)) * 2 - 1`` in float64,
    in that order (``data/multiface/preprocess.py``); ``x`` is ``(..., 3)``.

    >>> normalise_coordinates(np.array([[0.0, 5.0, 10.0]]), [0, 0, 0], [10, 10, 10]).tolist()
    [[-1.0, 0.0, 1.0]]
    """
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return ((np.asarray(x, np.float64) - lo64) / (hi64 - lo64)) * 2 - 1


def lip_errors(sq: np.ndarray, lips: Optional[np.ndarray] = None) -> np.ndarray:
    """Per frame LVE term: ``max_{v in lips} sq[t, v]``; ``(T, V) -> (T,)`` (``lips=None``: sq is already lips)."""
    s = sq if lips is None else np.take(sq, _v(lips), axis=1)
    return s.max(axis=1)


def mean_distances(sq: np.ndarray, idx: Optional[np.ndarray] = None) -> np.ndarray:
    """Per frame mean Euclidean distance over vertices ``idx`` (all if None): ``(T, V) -> (T,)``."""
    s = sq if idx is None else np.take(sq, _v(idx), axis=1)
    return np.sqrt(s).mean(axis=1)


def upper_displacements(x: np.ndarray, template: np.ndarray, upper: "np.ndarray | VertexIndex",
                        dtype: Optional[np.dtype] = None, template_upper: Optional[np.ndarray] = None,
                        out: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared displacement from the template on the upper-face vertices: ``(T, V, 3) -> (T, |U|)``.

    ``template`` is ``(V, 3)`` or ``(3V,)`` (or pass ``template_upper``, already ``template[upper]``, shaped
    ``(|U|, 3)``); ``x - template`` is taken in the promoted dtype (or ``dtype``). ``out``: where to write.
    """
    tu = template_upper if template_upper is not None else np.asarray(template).reshape(-1, 3)[_v(upper)]
    xu = take_vertices(x, upper)
    m = np.subtract(xu, tu, dtype=_cast(dtype, xu, tu))
    np.multiply(m, m, out=m)
    return sum_xyz(m, out=out)


# ------------------------------------------------------------------------------------- sequence step


def upper_dynamics(disp_ut: np.ndarray) -> float:
    """``mean_u std_t D[t, u]`` from the displacements stored as ``(|U|, T)`` (C order; see module doc).

    ``np.std`` is the population std (ddof 0), as in the reference.
    """
    return np.mean(np.std(disp_ut, axis=1))


def upper_dynamics_rows(disp_tu: np.ndarray, block: int = 512) -> float:
    """:func:`upper_dynamics` from the displacements stored as ``(T, |U|)`` rows, bit for bit.

    Transposes ``block`` vertices at a time (cache-sized) and takes ``np.std`` along time on each block; every
    vertex's std is the same reduction as on the whole ``(|U|, T)`` array, so the bits do not change.
    """
    U = disp_tu.shape[1]
    std = np.empty(U, np.result_type(disp_tu.dtype, np.float16))
    for u0 in range(0, U, block):
        std[u0:u0 + block] = np.std(np.ascontiguousarray(disp_tu[:, u0:u0 + block].T), axis=1)
    return np.mean(std)


class RunningDynamics:
    """``mean_u std_t D[t, u]`` accumulated over blocks of frames in O(|U|) memory (float64).

    Merges per-block means and squared deviations (Chan, Golub & LeVeque's pairwise update), so no
    ``T x |U|`` array is kept. Equal to :func:`upper_dynamics` up to rounding (not bit for bit): protocol
    ``a2f`` uses it, the reference protocols use the exact path.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Optional[np.ndarray] = None
        self.m2: Optional[np.ndarray] = None

    def update(self, disp_tu: np.ndarray) -> None:
        d = np.asarray(disp_tu, np.float64)
        nb = d.shape[0]
        if nb == 0:
            return
        mb = d.mean(axis=0)
        m2b = ((d - mb) ** 2).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta * delta * (self.n * nb / n)
        self.n = n

    def result(self) -> float:
        if self.n == 0 or self.m2 is None:
            raise ValueError("no frames")
        return float(np.mean(np.sqrt(self.m2 / self.n)))


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
    """FDD: Python ``sum`` over the per-sequence values in split order, divided by their number. The same mean
    is the headline of several runs, as :data:`mean_over_samples`."""
    vals = list(values)
    return sum(vals) / len(vals)


def mean_abs_over_sequences(values: Iterable[float]) -> float:
    """FDD_abs: the mean over sequences of ``|FDD_s|``."""
    vals = [abs(v) for v in values]
    return sum(vals) / len(vals)


#: the headline of several runs (FaceDiffuser samples): :func:`mean_over_sequences` over the runs in index order
#: (one run: its own value, exactly)
mean_over_samples = mean_over_sequences
