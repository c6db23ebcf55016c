"""Frames of a mesh sequence (+ ground truth beside it, error colouring with a colour bar, captions) and
the mp4 they make with sound.

Composes :mod:`.raster` (frames), :mod:`.overlays` (colour bar, captions) and :mod:`.video` (encoding).
Frames are generated lazily, so memory stays flat for clips of any length (pass memmaps for very long
ones).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from . import overlays, raster, video

__all__ = ["frames", "render_mp4", "nice_ceil"]


def nice_ceil(x: float) -> float:
    """Smallest of {1, 2, 4, 6, 8} x 10^k that is >= x (round colour-bar ends and ticks)."""
    if not (x > 0 and np.isfinite(x)):
        return 1.0
    k = 10.0 ** np.floor(np.log10(x))
    return float(next(m * k for m in (1, 2, 4, 6, 8, 10) if m * k >= x * (1 - 1e-9)))


# -- whole sequences -------------------------------------------------------------------------
def frames(faces: np.ndarray, vertices: np.ndarray, gt: np.ndarray | None = None, *,
           size: int | Sequence[int] = 512, template: np.ndarray | None = None,
           error: bool = False, error_scale: float = 1000.0, units: str = "mm",
           vmax: float | None = None, cmap: str = "viridis", labels: Sequence[str] = (),
           camera: raster.Camera | None = None, gt_panel: bool = True,
           **renderer_kwargs) -> Iterator[np.ndarray]:
    """Yield one RGBA frame per time step of ``vertices`` (T, V, 3); arrays or memmaps, read
    one frame at a time. ``gt`` (T, V, 3) adds a ground-truth panel on the right (unless
    ``gt_panel=False``: then it only serves the error colouring).

    ``error=True`` colours the prediction by per-vertex distance to ``gt`` x ``error_scale``
    (default metres -> mm) over ``[0, vmax]`` (default: 99th percentile of up to 200 frames,
    rounded up) with a colour bar titled ``units`` in a strip between the panels. The camera
    frames ``template`` (default: first ground-truth frame, else first predicted frame).
    ``labels``: captions, one per panel. Other keywords go to :class:`raster.Renderer`.
    """
    if error and gt is None:
        raise ValueError("error colouring needs ground truth")
    if gt is not None and len(gt) < len(vertices):
        raise ValueError(f"ground truth has {len(gt)} frames, prediction {len(vertices)}")
    template = (gt if gt is not None else vertices)[0] if template is None else template
    cam = camera or raster.Camera.frontal(template, size)
    ren = raster.Renderer(faces, cam, **renderer_kwargs)
    bg = tuple(int(c) for c in ren.background) + (255,)
    if error and vmax is None:
        pick = np.unique(np.linspace(0, len(vertices) - 1, min(len(vertices), 200)).astype(int))
        errs = [np.linalg.norm(np.asarray(vertices[t]) - np.asarray(gt[t]), axis=-1) for t in pick]
        vmax = nice_ceil(float(np.percentile(np.concatenate(errs) * error_scale, 99)))
    if error:
        bar = overlays.colorbar(cam.height // 2, 0.0, vmax, units, cmap, background=bg,
                                font_size=max(cam.height // 40, 8))
        strip = np.empty((cam.height, bar.shape[1] + 8, 4), np.uint8)
        strip[...] = bg
        overlays.paste(strip, bar, 0, (cam.height - bar.shape[0]) // 2)
    ink = (0, 0, 0) if ren.background.mean() > 127 else (255, 255, 255)
    captions = [overlays.text_image(s, max(cam.height // 32, 10), ink) for s in labels]
    for t in range(len(vertices)):
        v = np.asarray(vertices[t], dtype=np.float32)
        if error:
            e = np.linalg.norm(v - np.asarray(gt[t], dtype=np.float32), axis=-1) * error_scale
            panels = [ren.render_rgba(v, values=e, vmin=0.0, vmax=vmax, cmap=cmap)]
        else:
            panels = [ren.render_rgba(v)]
        if gt is not None and gt_panel:
            panels.append(ren.render_rgba(gt[t]))
        for p, cap in zip(panels, captions):
            overlays.paste(p, cap, (cam.width - cap.shape[1]) // 2, cam.height // 40)
        if error:
            panels.insert(1, strip)  # between the panels, or right of a lone error panel
        yield overlays.side_by_side(*panels)


def render_mp4(path, faces: np.ndarray, vertices: np.ndarray, fps: float,
               audio: np.ndarray | None = None, sample_rate: int = 16000, *,
               gt: np.ndarray | None = None, crf: int = video.DEFAULT_CRF,
               preset: str = video.DEFAULT_PRESET, **frame_kwargs) -> video.VideoInfo:
    """Render ``vertices`` (T, V, 3) with ``faces`` (F, 3) to an mp4 at ``path`` with sound.

    Keywords as in :func:`frames` (``gt``, ``error``, ``labels``, ``size``, ...). Returns
    :class:`video.VideoInfo`; ``info.audio_padded_s > 0`` (plus a warning) when the audio was
    shorter than the motion.
    """
    return video.write_mp4(path, frames(faces, vertices, gt, **frame_kwargs), fps, audio,
                           sample_rate, crf=crf, preset=preset)
