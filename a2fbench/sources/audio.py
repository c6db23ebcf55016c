"""Audio input: any common format to mono float32 at 16 kHz.

soundfile (libsndfile) reads wav, flac, ogg and mp3; soxr resamples with a proper (HQ, linear-phase)
anti-aliasing filter, as librosa does by default. Channels are averaged to mono.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile as sf
import soxr

from ..errors import RawDataError
from ..util.constants import SAMPLE_RATE


def resample(x: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float audio from ``sr`` to ``target`` Hz (soxr HQ)."""
    x = np.asarray(x, dtype=np.float32)
    if sr == target or x.size == 0:
        return x
    return soxr.resample(x, sr, target, quality="HQ").astype(np.float32, copy=False)


def to_mono_float(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) samples of any numeric dtype to mono float32 in [-1, 1]."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        x = x.astype(np.float32) / float(max(abs(info.min), info.max))
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] <= 16 else x.mean(axis=0)
    elif x.ndim != 1:
        raise RawDataError(f"expected audio shaped (N,) or (N, channels), found {x.shape}")
    return x


def read_audio(path: str | os.PathLike, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (wav/flac/ogg/mp3, or .npy holding raw 16 kHz samples) as mono float32 at ``target_sr``."""
    p = Path(path)
    if not p.is_file():
        raise RawDataError(f"{p}: expected an audio file, found nothing there; put the file back or re-download")
    if p.suffix.lower() == ".npy":
        try:
            x = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise RawDataError(f"{p}: expected a .npy of raw 16 kHz audio, found an unreadable file ({e})") from None
        return resample(to_mono_float(x), SAMPLE_RATE, target_sr)
    try:
        x, sr = sf.read(str(p), dtype="float32", always_2d=False)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        raise RawDataError(f"{p}: expected readable audio (wav/flac/ogg/mp3), found an unreadable file ({e})") from None
    return resample(to_mono_float(x), int(sr), target_sr)


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int) -> None:
    """Write mono float audio as 16-bit PCM wav."""
    sf.write(str(path), np.asarray(x, dtype=np.float32), int(sr), subtype="PCM_16", format="WAV")


#: the rate CodeTalker's video2audio.py asks ffmpeg for (``-f wav -ar 44100``: 16-bit PCM)
FLV_WAV_RATE = 44100


def read_video_audio(path: str | os.PathLike, target_sr: int = SAMPLE_RATE,
                     digests: Optional[dict[Path, str]] = None) -> np.ndarray:
    """The sound track of a video (BIWI's ``.flv``), decoded by PyAV (FFmpeg) as CodeTalker's
    ``ffmpeg -i x.flv -f wav -ar 44100`` does: 16-bit samples at 44.1 kHz, channels kept; then channels are
    averaged and resampled to ``target_sr`` as :func:`read_audio` does with that wav. Mono float32. With
    ``digests``, the file is read once into memory, decoded from there and its sha256 recorded there."""
    import av

    p = Path(path)
    if not p.is_file():
        raise RawDataError(f"{p}: expected a video with the sequence's audio, found nothing; restore it")
    src: Any = str(p)
    if digests is not None:
        data = p.read_bytes()
        digests[p] = hashlib.sha256(data).hexdigest()
        src = io.BytesIO(data)
    try:
        with av.open(src) as c:
            if not c.streams.audio:
                raise RawDataError(f"{p}: expected an audio stream in the video, found none; this video has no sound, "
                                   "restore the original file")
            st = c.streams.audio[0]
            rs = av.AudioResampler(format="s16", layout=st.codec_context.layout.name, rate=FLV_WAV_RATE)
            ch = st.codec_context.layout.nb_channels
            parts = []
            for frame in c.decode(st):
                parts += [g.to_ndarray().reshape(-1, ch) for g in rs.resample(frame)]
            parts += [g.to_ndarray().reshape(-1, ch) for g in rs.resample(None)]
    except av.FFmpegError as e:
        raise RawDataError(f"{p}: expected a readable video, found an unreadable or truncated file ({e}); restore "
                           "it") from None
    x = np.concatenate(parts) if parts else np.zeros((0, 1), np.int16)
    return resample(to_mono_float(x[:, 0] if x.shape[1] == 1 else x), FLV_WAV_RATE, target_sr)
