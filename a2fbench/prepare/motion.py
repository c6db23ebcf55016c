"""Temporal resampling of motion to the benchmark frame rate, and the audio/motion length rule.

* Whole-number ratio (60 -> 30, 100 -> 25): exact decimation ``m[::k]`` starting at frame 0, as every
  reference loader does, so numbers stay comparable. T frames become ceil(T / k).
* Otherwise (60 -> 25, 30 -> 25, 25 -> 30): time-based linear interpolation. Output frame j sits at time
  j / fps_out; frames are produced while that time is within the input's last frame time (T - 1) / fps_in.

Length rule (documented in docs/datasets.md): the store keeps the whole recording and the whole motion, each
with its own length; their difference (:func:`av_mismatch`) is recorded per sequence and must be at most the
manifest's ``filters.max_av_mismatch_s`` (a larger one is an error naming the file). Whoever uses both aligns
them by frame count (``a2fbench.store.common_length``: UniTalker's rule).
"""

from __future__ import annotations

import math

import numpy as np

from ..util.constants import SAMPLE_RATE


def decimation_factor(fps_in: float, fps_out: float) -> int | None:
    r = fps_in / fps_out
    k = round(r)
    return k if k >= 1 and abs(r - k) < 1e-9 else None


def n_frames_out(T: int, fps_in: float, fps_out: float) -> int:
    k = decimation_factor(fps_in, fps_out)
    if k is not None:
        return math.ceil(T / k)
    return int(math.floor((T - 1) * fps_out / fps_in + 1e-9)) + 1


def resample_motion(m: np.ndarray, fps_in: float, fps_out: float, *, chunk: int = 256) -> np.ndarray:
    """(T, D) motion at ``fps_in`` -> (T', D) at ``fps_out``, in m's dtype (see module doc).

    >>> resample_motion(np.arange(5.0)[:, None], 60, 30).ravel().tolist()
    [0.0, 2.0, 4.0]
    >>> resample_motion(np.arange(7.0)[:, None], 30, 25).ravel().tolist()
    [0.0, 1.2, 2.4, 3.6, 4.8, 6.0]
    """
    k = decimation_factor(fps_in, fps_out)
    if k is not None:
        return np.ascontiguousarray(m[::k])
    T = m.shape[0]
    n = n_frames_out(T, fps_in, fps_out)
    pos = np.arange(n) * (fps_in / fps_out)
    out = np.empty((n,) + m.shape[1:], dtype=m.dtype)
    for a in range(0, n, chunk):
        p = pos[a: a + chunk]
        i0 = np.minimum(np.floor(p + 1e-9).astype(np.int64), T - 1)
        i1 = np.minimum(i0 + 1, T - 1)
        w = (p - i0).reshape(-1, *([1] * (m.ndim - 1)))
        lo = np.asarray(m[i0], dtype=np.float64)
        hi = np.asarray(m[i1], dtype=np.float64)
        out[a: a + chunk] = lo * (1 - w) + hi * w
    return out


def av_mismatch(n_samples: int, n_frames: int, fps: float, sr: int = SAMPLE_RATE) -> float:
    """Audio seconds minus motion seconds (positive: the recording runs past the motion).

    >>> av_mismatch(16000 * 5, 100, 25)
    1.0
    """
    return n_samples / sr - n_frames / fps
