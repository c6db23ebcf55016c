"""Temporal resampling of motion to the benchmark frame rate, and the audio/motion length rule.

* Whole-number ratio (60 -> 30, 100 -> 25): exact decimation ``m[::k]`` starting at frame 0, as every
  reference loader does, so numbers stay comparable. T frames become ceil(T / k).
* Otherwise (60 -> 25, 30 -> 25, 25 -> 30): time-based linear interpolation. Output frame j sits at time
  j / fps_out; frames are produced while that time is within the input's last frame time (T - 1) / fps_in.

Length rule (documented in docs/datasets.md): the motion defines the sequence. Audio is trimmed or
zero-padded to ``round(T / fps * 16000)`` samples when it differs from the motion by at most the manifest's
``filters.max_av_mismatch_s``; a larger mismatch is an error naming the file.
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


def fit_audio(audio: np.ndarray, n_frames: int, fps: float, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Trim or zero-pad ``audio`` to the motion's duration; return it and the mismatch in seconds."""
    n = int(round(n_frames / fps * sr))
    diff = (len(audio) - n) / sr
    if len(audio) >= n:
        return np.ascontiguousarray(audio[:n], dtype=np.float32), diff
    return np.concatenate([audio, np.zeros(n - len(audio), np.float32)]).astype(np.float32), diff
