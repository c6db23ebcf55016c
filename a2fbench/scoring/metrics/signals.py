"""The arithmetic of the evaluation axes beyond LVE/FDD (``docs/metrics.md``, "Timing, silence, intensity and
diversity"): mouth opening, silent spans of a recording, MTM (derivative DTW between mouth-opening curves),
lip lag (best cross-correlation lag), lip intensity and SLCC (speech-lip intensity correlation), and the
distance between samples. Pure functions on small per-frame vectors; the per-chunk parts
(:func:`mouth_opening`, :func:`lip_speed`, :func:`mean_pair_distance`) are what the streamed scorer calls on
each chunk, so no sequence is ever held whole for them.

Arithmetic is float64 (lip steps of float32 inputs: float32, see :func:`lip_speed`). Constants are module-level and recorded in every results file by
:mod:`.axes`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

# ---------------------------------------------------------------------------------------------- constants
#: MTM: Gaussian smoothing of the mouth-opening curves (frames; scipy defaults truncate 4, mode reflect), as P3D
MTM_SIGMA = 2.0
#: lip lag: the largest lag searched, in seconds (round(0.5 f) frames, at most T - 3)
LAG_WINDOW_S = 0.5
#: silence: a frame is silent below this level relative to the loudest frame of the recording
SILENCE_DB = -40.0
#: silence: shortest run of silent frames that counts (ceil(0.2 f) frames)
MIN_SPAN_S = 0.2
#: silence: frames dropped at each end of a span not at the sequence's first/last frame (ceil(0.05 f))
GUARD_S = 0.05
#: silence: a recording whose loudest frame has an RMS below this (-80 dBFS) has no silence
MIN_PEAK_RMS = 1e-4
_EPS = 1e-9  # frame-window boundaries: floor(t sr / f + eps), so exact multiples are not lost to rounding


def frames_for(seconds: float, fps: float) -> int:
    """``ceil(seconds * fps)`` frames (6 for 0.2 s at 30 fps, 2 for 0.05 s at 25 or 30 fps)."""
    return int(math.ceil(seconds * fps - _EPS))


# ------------------------------------------------------------------------------------------- per chunk


def mouth_opening(x: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """``o(t) = ||x_upper(t) - x_lower(t)||`` in float64 for ``(T, V, 3)`` vertices: ``(T,)``."""
    d = np.asarray(x[:, upper], np.float64) - np.asarray(x[:, lower], np.float64)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


def lip_speed(lips: np.ndarray, previous: Optional[np.ndarray], block_bytes: int = 512 << 10) -> np.ndarray:
    """Per frame step ``mean_{v in lips} ||x_{t+1,v} - x_{t,v}||`` of a chunk of lip vertices ``(t, L, 3)``.

    ``previous``: the last lip frame of the chunk before (None on the first chunk); returns ``t`` values, or
    ``t - 1`` on the first chunk (a sequence of T frames has T - 1 steps). The steps are taken in the input's
    precision (float32 for float32 predictions: the difference of two nearby float32 values is exact, the squared
    norm carries ~1e-7 relative rounding, far below anything a correlation over clips can see; float64 otherwise),
    a few frames at a time in one cache-sized buffer (``block_bytes``); squares summed ``(x + y) + z``; the mean
    over lips in float64.
    """
    x = np.asarray(lips)
    dt = np.float32 if x.dtype == np.float32 else np.float64
    n, L = x.shape[0], x.shape[1]
    first = 0 if previous is not None else 1
    out = np.empty(max(n - first, 0))
    step = max(1, block_bytes // max(1, L * 3 * 8))
    buf, sq = np.empty((step, L, 3), dt), np.empty((step, L), dt)
    for a in range(first, n, step):
        b = min(n, a + step)
        d = buf[:b - a]
        if a == 0:  # the step from the previous chunk's last frame
            np.subtract(x[0], previous, out=d[0], dtype=dt, casting="unsafe")
            np.subtract(x[1:b], x[:b - 1], out=d[1:], dtype=dt)
        else:
            np.subtract(x[a:b], x[a - 1:b - 1], out=d, dtype=dt)
        np.multiply(d, d, out=d)
        s = np.add(d[..., 0], d[..., 1], out=sq[:b - a])
        s += d[..., 2]
        out[a - first:b - first] = np.sqrt(s, out=s).mean(axis=1, dtype=np.float64)
    return out


def mean_pair_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame ``mean_v ||a_v - b_v||`` of two ``(t, V, 3)`` chunks (float64): ``(t,)``."""
    d = np.subtract(a, b, dtype=np.float64)
    return np.sqrt(np.einsum("tvk,tvk->tv", d, d)).mean(axis=1)


# ---------------------------------------------------------------------------------------------- silence


def frame_levels(audio: np.ndarray, sample_rate: float, fps: float, n_frames: int) -> np.ndarray:
    """Per motion frame the audio level in dB relative to the loudest frame (NaN where the frame has no audio).

    Frame t covers samples ``[floor(t sr / f), floor((t + 1) sr / f))`` clipped to the recording; level
    ``20 log10(rms_t / max rms)``. All NaN when the loudest frame's RMS is below :data:`MIN_PEAK_RMS`.
    """
    a = np.asarray(audio, np.float64).reshape(len(audio), -1).mean(axis=1) if np.ndim(audio) > 1 else \
        np.asarray(audio, np.float64)
    edges = np.floor(np.arange(n_frames + 1) * (float(sample_rate) / float(fps)) + _EPS).astype(np.int64)
    edges = np.minimum(edges, len(a))
    rms = np.full(n_frames, np.nan)
    lo, hi = edges[:-1], edges[1:]
    full = hi > lo  # frames with audio; their windows are consecutive, so one reduceat sums them all
    if full.any():
        sq = np.square(a[lo[full][0]:hi[full][-1]])
        sums = np.add.reduceat(sq, lo[full] - lo[full][0])
        rms[full] = np.sqrt(sums / (hi[full] - lo[full]))
    top = np.nanmax(rms) if np.isfinite(rms).any() else 0.0
    if not top >= MIN_PEAK_RMS:
        return np.full(n_frames, np.nan)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms / top)


def silent_frames(levels: np.ndarray, fps: float, threshold_db: float = SILENCE_DB, min_span_s: float = MIN_SPAN_S,
                  guard_s: float = GUARD_S) -> np.ndarray:
    """Boolean ``(T,)``: frames inside a silent span (``level < threshold_db`` for at least ``min_span_s``),
    with ``guard_s`` dropped at each end that is not the first or last frame of the sequence."""
    n = len(levels)
    quiet = np.nan_to_num(levels, nan=0.0) < threshold_db
    out = np.zeros(n, bool)
    min_run, g = frames_for(min_span_s, fps), frames_for(guard_s, fps)
    t = 0
    while t < n:
        if not quiet[t]:
            t += 1
            continue
        u = t
        while u < n and quiet[u]:
            u += 1
        if u - t >= min_run:
            a = t if t == 0 else t + g
            b = u if u == n else u - g
            if b > a:
                out[a:b] = True
        t = u
    return out


def speech_rms(audio: np.ndarray) -> float:
    """RMS of the whole recording (channels averaged), P3D's speech intensity."""
    a = np.asarray(audio, np.float64)
    if a.ndim > 1:
        a = a.reshape(len(a), -1).mean(axis=1)
    return math.sqrt(float(np.dot(a, a)) / len(a)) if len(a) else float("nan")


# ------------------------------------------------------------------------------------------------- MTM


def ddtw_path(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivative DTW path between two 1-D signals: ``(k, 2)`` index pairs from (0, 0) to (n-1, m-1).

    Derivatives are first differences with the first value prepended (first derivative 0); local cost
    ``|dx_i - dy_j|``; unconstrained DTW (steps diagonal, up, left). Backtracking from (n, m) takes the first
    minimum among (diagonal, up, left).

    The cumulative cost ``D[i, j]`` (1-based cells, ``D[0, 0] = 0``, other borders infinite) is kept by
    anti-diagonal, ``E[i + j, i] = D[i, j]``, so each diagonal is one vectorised step over contiguous slices: the
    same additions and minima as the cell-by-cell recursion, hence the same bits and the same path as
    :func:`a2fbench.scoring.metrics.reference.ddtw_path` (tested).
    """
    dx, dy = np.diff(np.asarray(x, np.float64), prepend=x[0]), np.diff(np.asarray(y, np.float64), prepend=y[0])
    n, m = len(dx), len(dy)
    E = np.full((n + m + 1, n + 1), np.inf)
    E[0, 0] = 0.0
    # every local cost at once, in the same layout: C[s, i] = |dx[i - 1] - dy[s - i - 1]| (cells outside: unused)
    s_i = np.arange(n + m + 1)[:, None] - np.arange(n + 1)[None, :]
    C = np.abs(dx[np.clip(np.arange(n + 1) - 1, 0, n - 1)][None, :] - dy[np.clip(s_i - 1, 0, m - 1)])
    best = np.empty(n + 1)
    for s in range(2, n + m + 1):
        lo, hi = max(1, s - m), min(n, s - 1)  # cells (i, s - i) with 1 <= i <= n, 1 <= s - i <= m
        b = best[:hi + 1 - lo]
        np.minimum(E[s - 2, lo - 1:hi], E[s - 1, lo - 1:hi], out=b)
        np.minimum(b, E[s - 1, lo:hi + 1], out=b)
        np.add(C[s, lo:hi + 1], b, out=E[s, lo:hi + 1])
    path = []
    i, j = n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        diag, up, left = E[i + j - 2, i - 1], E[i + j - 1, i - 1], E[i + j - 1, i]
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    return np.array(path[::-1], np.int64).reshape(-1, 2)


def mtm_offsets(o_gt: np.ndarray, o_pred: np.ndarray, sigma: float = MTM_SIGMA) -> list[int]:
    """The frame offsets |i - j| of matched extrema (P3D's MTM, as its code runs): both curves smoothed, aligned by
    :func:`ddtw_path`; a path pair counts when both frames are extrema (``find_peaks`` of the smoothed curve
    or of its negative) of the same type and j lies between the GT extrema before and after i (0 and the last
    frame at the ends)."""
    g = gaussian_filter1d(np.asarray(o_gt, np.float64), sigma)
    p = gaussian_filter1d(np.asarray(o_pred, np.float64), sigma)
    kind_g = {int(i): 1 for i in find_peaks(g)[0]}
    kind_g.update({int(i): -1 for i in find_peaks(-g)[0]})
    kind_p = {int(i): 1 for i in find_peaks(p)[0]}
    kind_p.update({int(i): -1 for i in find_peaks(-p)[0]})
    order = sorted(kind_g)
    pos = {v: k for k, v in enumerate(order)}
    out = []
    for i, j in ddtw_path(g, p):
        i, j = int(i), int(j)
        if i in kind_g and kind_p.get(j) == kind_g[i]:
            k = pos[i]
            left = order[k - 1] if k > 0 else 0
            right = order[k + 1] if k + 1 < len(order) else len(g) - 1
            if left <= j <= right:
                out.append(abs(i - j))
    return out


def mtm_frames(o_gt: np.ndarray, o_pred: np.ndarray, sigma: float = MTM_SIGMA) -> Optional[float]:
    """Mean matched-extremum offset in frames; None when no extremum pair matches."""
    d = mtm_offsets(o_gt, o_pred, sigma)
    return float(np.mean(d)) if d else None


# -------------------------------------------------------------------------------------------------- lag


def _pearson(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b)) / den if den > 0 else None


def lag_correlations(o_gt: np.ndarray, o_pred: np.ndarray, max_lag: int) -> dict[int, float]:
    """``{lag: r}`` for lags in [-max_lag, max_lag] (at most T - 3): Pearson r of ``o_gt[t]`` and ``o_pred[t + lag]``
    over the overlapping frames; lags where a segment is constant are left out."""
    g, p = np.asarray(o_gt, np.float64), np.asarray(o_pred, np.float64)
    T = min(len(g), len(p))
    L = min(int(max_lag), T - 3)
    out = {}
    for lag in range(-L, L + 1):
        r = _pearson(g[:T - lag], p[lag:T]) if lag >= 0 else _pearson(g[-lag:T], p[:T + lag])
        if r is not None:
            out[lag] = r
    return out


def best_lag(corr: dict[int, float]) -> Optional[int]:
    """The lag of the largest r; ties: the smaller |lag|, then the negative one. None when no lag is defined."""
    if not corr:
        return None
    return min(corr, key=lambda lag: (-corr[lag], abs(lag), lag))


def lip_lag_frames(o_gt: np.ndarray, o_pred: np.ndarray, fps: float,
                   window_s: float = LAG_WINDOW_S) -> Optional[int]:
    """Signed lag in frames of the prediction's mouth opening behind the ground truth's (positive = late)."""
    return best_lag(lag_correlations(o_gt, o_pred, int(round(window_s * fps))))


# ------------------------------------------------------------------------------------------------- SLCC


def lip_intensity(steps: np.ndarray) -> float:
    """``sqrt(mean_t step_t^2)`` over the T - 1 per-frame steps of :func:`lip_speed` (P3D's Dist_k)."""
    s = np.asarray(steps, np.float64)
    return math.sqrt(float(np.dot(s, s)) / len(s)) if len(s) else float("nan")


def zscores_by_group(values: Sequence[float], groups: Sequence[str]) -> np.ndarray:
    """Per group ``(v - mean) / std`` (ddof 1); NaN for groups of fewer than 2 values or zero std."""
    v = np.asarray(values, np.float64)
    out = np.full(len(v), np.nan)
    g = np.asarray(groups, object)
    for name in dict.fromkeys(groups):
        m = (g == name) & np.isfinite(v)
        if m.sum() < 2:
            continue
        sd = float(np.std(v[m], ddof=1))
        if sd > 0:
            out[m] = (v[m] - v[m].mean()) / sd
    return out


def slcc(speech: Sequence[float], lips: Sequence[float], identities: Sequence[str]) -> tuple[Optional[float], int]:
    """(Pearson r over clips of the per-identity z-scores of speech and lip intensity, clips used); r is None
    when fewer than 3 clips remain or a side is constant."""
    zs, zl = zscores_by_group(speech, identities), zscores_by_group(lips, identities)
    ok = np.isfinite(zs) & np.isfinite(zl)
    n = int(ok.sum())
    if n < 3:
        return None, n
    return _pearson(zs[ok], zl[ok]), n
