"""Stream RGB(A) frames and a mono waveform into an H.264 + AAC mp4 with PyAV.

Frames are consumed one at a time from any iterable (a generator is the intended input),
so a clip of any length is encoded without holding its frames in memory. The audio track
is cut to the video's duration; if it is shorter, silence is appended and reported (never
an error). The file is written under a temporary name beside the target and renamed into
place only when everything succeeded; on any failure the temporary file is removed.

Dependencies: numpy and PyAV (its wheels bundle FFmpeg with libx264 and the native AAC encoder, so
nothing is installed from the system).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from fractions import Fraction
from typing import Iterable

import av
import numpy as np

from .files import atomic_target

__all__ = ["VideoInfo", "write_mp4", "probe"]

#: Picked by measurement on a 2-core CPU (README): for 512 px face renders ``veryfast`` makes
#: files as small as ``medium`` (4x smaller than ``ultrafast``) at ~3 ms of CPU per frame.
DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 20


@dataclasses.dataclass
class VideoInfo:
    """What :func:`write_mp4` wrote."""

    path: str
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    has_audio: bool = False
    audio_padded_s: float = 0.0     # silence appended because the audio ran out
    audio_truncated_s: float = 0.0  # audio dropped beyond the video's end
    warnings: list[str] = dataclasses.field(default_factory=list)


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 4:2:0 needs even sizes: repeat the last row / column when odd."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def _name_path(e: BaseException, tmp: "os.PathLike[str] | str", path: str) -> None:
    """An OSError about the hidden temporary (PyAV's errors name it and keep that name read-only) is raised as
    one naming the file the user asked for, with the same errno and reason."""
    if isinstance(e, OSError) and e.filename is not None and os.fspath(e.filename) == os.fspath(tmp):
        raise OSError(e.errno, e.strerror or str(e), path) from None


def _check_frame(frame, shape) -> np.ndarray:
    f = np.asarray(frame)
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4):
        raise ValueError(f"frames must be (H, W, 3|4) uint8, got {f.shape} {f.dtype}")
    if shape is not None and f.shape != shape:
        raise ValueError(f"frame size changed from {shape} to {f.shape}")
    return f


def _mono(audio, sample_rate: int) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"audio must be a mono (N,) array, got shape {a.shape}")
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    return np.nan_to_num(np.clip(a, -1, 1))


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
              audio: np.ndarray | None = None, sample_rate: int = 16000, *,
              crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET, threads: int = 0,
              audio_bitrate: int = 64000, faststart: bool = True) -> VideoInfo:
    """Encode ``frames`` ((H, W, 3) RGB or (H, W, 4) RGBA uint8, all the same size) at ``fps``
    into an H.264 (yuv420p) mp4 at ``path``, with ``audio`` (float mono, ``sample_rate`` Hz)
    as an AAC track.

    Frames are pulled one at a time; audio is interleaved as the video advances. Odd
    sizes are padded by one edge pixel. ``threads=0`` lets x264 choose. ``faststart``
    moves the index to the front (playable while downloading; one extra copy at the end).
    Audio shorter than the video is padded with silence; when it is short by half a frame
    or more this is reported in ``info.warnings`` and as a ``UserWarning``.
    Raises ``ValueError`` for no frames or bad input; nothing is left at ``path`` or beside
    it when anything raises (including the frame iterator itself).
    """
    path = os.fspath(path)
    if fps <= 0:
        raise ValueError("fps must be positive")
    rate = Fraction(fps).limit_denominator(1001)
    wav = None if audio is None else _mono(audio, sample_rate)
    with atomic_target(path, "part") as tmp:
        container = av.open(os.fspath(tmp), mode="w", format="mp4",
                            options={"movflags": "+faststart"} if faststart else {})
        try:
            vstream = astream = None
            shape, n, fed = None, 0, 0
            for frame in frames:
                frame = _check_frame(frame, shape)
                if vstream is None:
                    shape = frame.shape
                    vstream = container.add_stream("libx264", rate=rate, options={
                        "crf": str(crf), "preset": preset})
                    vstream.height, vstream.width = _even(frame).shape[:2]
                    vstream.pix_fmt = "yuv420p"
                    vstream.codec_context.thread_count = threads
                    if wav is not None:
                        astream = container.add_stream("aac", rate=sample_rate, layout="mono")
                        astream.bit_rate = audio_bitrate
                vf = av.VideoFrame.from_ndarray(_even(frame), format="rgb24" if
                                                frame.shape[2] == 3 else "rgba")
                vf.pts = n
                container.mux(vstream.encode(vf))
                n += 1
                if astream is not None:  # audio up to the end of this video frame
                    target = int(round(n * sample_rate / rate))
                    fed = _feed_audio(container, astream, wav, fed, target, sample_rate)
            if vstream is None:
                raise ValueError("no frames to encode")
            container.mux(vstream.encode(None))
            if astream is not None:
                container.mux(astream.encode(None))
        except BaseException as e:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - already failing; the file goes anyway
                pass
            _name_path(e, tmp, path)
            raise
        try:
            container.close()
        except OSError as e:  # the last writes (faststart's copy) can fail too: same naming
            _name_path(e, tmp, path)
            raise
    info = VideoInfo(path, n, float(rate), vstream.width, vstream.height, float(n / rate),
                     has_audio=wav is not None)
    if wav is not None:
        total = int(round(n * sample_rate / rate))
        info.audio_padded_s = max(total - len(wav), 0) / sample_rate
        info.audio_truncated_s = max(len(wav) - total, 0) / sample_rate
        if info.audio_padded_s * rate > 0.5:  # short by half a frame or more: say so
            msg = (f"audio ({len(wav) / sample_rate:.3f} s) is shorter than the motion "
                   f"({info.duration_s:.3f} s): padded {info.audio_padded_s:.3f} s of silence")
            info.warnings.append(msg)
            warnings.warn(msg, stacklevel=2)
    return info


def _feed_audio(container, stream, wav: np.ndarray, fed: int, target: int, rate: int) -> int:
    """Encode samples ``[fed, target)`` of ``wav`` (zeros past its end); returns ``target``."""
    if target <= fed:
        return fed
    chunk = np.zeros(target - fed, dtype=np.float32)
    have = wav[fed:target]
    chunk[:len(have)] = have
    af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
    af.sample_rate = rate
    af.pts = fed
    af.time_base = Fraction(1, rate)
    container.mux(stream.encode(af))
    return target


def probe(path: str | os.PathLike) -> dict:
    """Decode ``path`` fully with PyAV: ``{"frames", "fps", "width", "height", "video_codec",
    "audio_codec", "audio_samples", "sample_rate", "audio_duration_s"}`` (for tests / checks)."""
    out = {"frames": 0, "audio_samples": 0, "audio_codec": None, "sample_rate": None}
    with av.open(os.fspath(path)) as c:
        v = c.streams.video[0]
        out.update(fps=float(v.average_rate), width=v.codec_context.width,
                   height=v.codec_context.height, video_codec=v.codec_context.name)
        out["frames"] = sum(1 for _ in c.decode(video=0))
    with av.open(os.fspath(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            out.update(audio_codec=a.codec_context.name, sample_rate=a.codec_context.sample_rate)
            out["audio_samples"] = sum(f.samples for f in c.decode(audio=0))
    sr = out["sample_rate"]
    out["audio_duration_s"] = out["audio_samples"] / sr if sr else 0.0
    return out
