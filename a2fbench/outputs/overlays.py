"""2-D pieces of a frame: colour maps (matplotlib's, sampled), a colour bar with ticks and units, text,
alpha-blended pasting and side-by-side panels. Pillow draws the glyphs."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["COLORMAPS", "lut", "colormap", "colorbar", "text_image", "paste", "side_by_side"]

# Colour maps: 17 evenly spaced samples of matplotlib's maps (hex RGB), interpolated to 256.
COLORMAPS = {
    "viridis": "440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c 1fa088 28ae80 "
               "3fbc73 5ec962 84d44b addc30 d8e219 fde725",
    "inferno": "000004 0b0724 210c4a 3d0965 57106e 71196e 8a226a a32c61 bc3754 d24644 e45a31 "
               "f1731d f98e09 fcac11 f9cb35 f2ea69 fcffa4",
    "reds": "ffffff ff8080 ff0000 800000",
}


def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 table for colour map ``name``."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r}; have {sorted(COLORMAPS)}")
    pts = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in COLORMAPS[name].split()])
    t, tp = np.linspace(0, 1, 256), np.linspace(0, 1, len(pts))
    return np.rint(np.stack([np.interp(t, tp, pts[:, c]) for c in range(3)], 1)).astype(np.uint8)


def colormap(values, vmin: float, vmax: float, cmap: str = "viridis") -> np.ndarray:
    """Map scalars to colours: (...) -> (..., 3) uint8. ``vmin`` -> first entry of the
    256-entry table, ``vmax`` -> last, linear (rounded) in between, clipped outside,
    NaN -> grey (128, 128, 128)."""
    table = np.vstack([lut(cmap), [[128, 128, 128]]]).astype(np.uint8)
    v = np.asarray(values, dtype=np.float64)
    t = np.clip((v - vmin) / max(vmax - vmin, 1e-30), 0, 1)
    idx = np.where(np.isnan(v), 256, np.floor(np.nan_to_num(t) * 255 + 0.5).astype(np.intp))
    return table[idx]


# -- 2-D overlays: text, colour bar, panels (Pillow draws the glyphs) -------------------------
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable font: Pillow >= 10.1 + FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_box(text: str, font) -> tuple[int, int, int, int]:
    return ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)


def text_image(text: str, size: int = 16, color=(0, 0, 0)) -> np.ndarray:
    """``text`` rendered tightly as an (h, w, 4) uint8 RGBA image, transparent elsewhere."""
    font = _font(size)
    x0, y0, x1, y1 = _text_box(text, font)
    img = Image.new("RGBA", (max(x1 - x0, 1), max(y1 - y0, 1)), (0, 0, 0, 0))
    ImageDraw.Draw(img).text((-x0, -y0), text, font=font, fill=tuple(color)[:3] + (255,))
    return np.asarray(img)


def colorbar(height: int, vmin: float, vmax: float, units: str = "mm", cmap: str = "viridis",
             *, bar_width: int = 14, ticks: int = 5, font_size: int = 13, color=(0, 0, 0),
             background=(255, 255, 255, 255)) -> np.ndarray:
    """Vertical colour bar (``vmax`` on top) with tick labels and a ``units`` title, as an
    (height, w, 4) uint8 RGBA image for :func:`paste`."""
    font, pad, ink = _font(font_size), 4, tuple(color)[:3] + (255,)
    labels = [f"{v:.4g}" for v in np.linspace(vmax, vmin, ticks)]
    text_w = max(_text_box(s, font)[2] for s in labels)
    title_w, title_h = _text_box(units, font)[2:]
    width = max(pad + bar_width + 5 + text_w + pad, title_w + 2 * pad)
    img = Image.new("RGBA", (int(width), int(height)), tuple(background))
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), units, font=font, fill=ink)
    top, bottom = pad + title_h + 8, height - pad - font_size // 2
    if bottom - top < 2:
        raise ValueError("colour bar too short for its labels")
    ramp = colormap(np.linspace(vmax, vmin, bottom - top), vmin, vmax, cmap)
    img.paste(Image.fromarray(np.repeat(ramp[:, None], bar_width, axis=1)), (pad, top))
    draw.rectangle((pad - 1, top - 1, pad + bar_width, bottom), outline=ink)
    for i, s in enumerate(labels):
        y = top + (bottom - 1 - top) * i / max(ticks - 1, 1)
        draw.line((pad + bar_width, y, pad + bar_width + 3, y), fill=ink)
        draw.text((pad + bar_width + 5, y), s, font=font, fill=ink, anchor="lm")
    return np.asarray(img)


def paste(frame: np.ndarray, overlay: np.ndarray, x: int, y: int) -> np.ndarray:
    """Alpha-blend RGBA ``overlay`` into ``frame`` (RGB or RGBA; in place) with its top-left
    corner at column ``x``, row ``y``, clipped to the frame. Returns ``frame``."""
    h, w = frame.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + overlay.shape[1], w), min(y + overlay.shape[0], h)
    if x1 > x0 and y1 > y0:
        src = overlay[y0 - y:y1 - y, x0 - x:x1 - x].astype(np.float32)
        dst, alpha = frame[y0:y1, x0:x1, :3], src[..., 3:] / 255
        dst[...] = (dst * (1 - alpha) + src[..., :3] * alpha + 0.5).astype(np.uint8)
    return frame


def side_by_side(*panels: np.ndarray) -> np.ndarray:
    """Same-height panels (all RGB or all RGBA) left to right in one frame."""
    return np.concatenate(panels, axis=1)
