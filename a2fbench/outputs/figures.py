"""The report's pictures, as PNG bytes: per-sequence distributions (matplotlib) and per-vertex maps drawn on the
template by our rasteriser (:mod:`.raster`) with matplotlib colour bars.

matplotlib is used through its object API on the Agg canvas (no ``pyplot``, no global backend switch), so a
report can be made headless and inside any program.
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .raster import Camera, Renderer

#: the metrics the report shows per sequence (a distribution panel each, a column of the worst-sequences table);
#: FDD_abs is |FDD|
REPORT_METRICS = ("LVE", "MVE", "UFVE", "FDD")


def png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def distributions(doc: dict) -> bytes:
    """One panel per metric: every sequence's score (jittered dots) over a box plot, in display units."""
    metrics = [m for m in REPORT_METRICS if m in doc["metrics"]]
    fig = Figure(figsize=(3.2 * max(len(metrics), 1), 3.4), layout="constrained")
    rng = np.random.default_rng(0)
    for i, name in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        m = doc["metrics"][name]
        scale = float(m.get("display_scale") or 1.0)
        vals = np.array([r[name] for r in doc["per_sequence"] if r.get(name) is not None], float) / scale
        if vals.size:
            ax.boxplot(vals, widths=0.5, showfliers=False)
            ax.scatter(1 + rng.uniform(-0.18, 0.18, vals.size), vals, s=10, alpha=0.6, color="tab:blue", zorder=3)
            ax.axhline(float(m["value"]) / scale if m.get("value") is not None else np.nan, color="tab:red", lw=1,
                       label="aggregate")
        if name == "FDD":
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks([])
        unit = m.get("unit", "")
        ax.set_title(f"{name} ({vals.size} sequences)", fontsize=10)
        ax.set_ylabel(f"x{scale:.0e} {unit}" if scale != 1.0 else unit, fontsize=9)
        if i == 0:
            ax.legend(fontsize=8, loc="best")
    return png(fig)


def _rot_y(v: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    return np.stack([c * x + s * z, y, -s * x + c * z], 1)


def mesh_views(template: np.ndarray, faces: np.ndarray, values: np.ndarray, vmin: float, vmax: float,
               views: Sequence[float] = (0.0,), size: int = 320, cmap: str = "viridis") -> list[np.ndarray]:
    """``values`` (V,) drawn on ``template`` (V, 3) seen from the front (0) and turned about the vertical axis by
    each angle in ``views`` (90: the left profile). NaN values show grey. Returns RGB images."""
    out = []
    centre = template.mean(0)
    for deg in views:
        v = _rot_y(template - centre, deg)
        ren = Renderer(faces, Camera.frontal(v, size), background=(1.0, 1.0, 1.0))
        out.append(ren.render(v, values=values, vmin=vmin, vmax=vmax, cmap=cmap))
    return out


def map_figure(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]], float, float]], template: np.ndarray,
               faces: np.ndarray, views: Sequence[float] = (0.0,), size: int = 320,
               note: Optional[str] = None) -> bytes:
    """A grid of maps: each row is ``(colour-bar label, [(title, values (V,)), ...], vmin, vmax)``; each map is
    drawn in every view; one colour bar per row."""
    ncols = max(len(r[1]) for r in rows) * len(views)
    fig = Figure(figsize=(2.6 * ncols + 1.2, 2.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, (label, maps, vmin, vmax) in enumerate(rows):
        for j, (title, vals) in enumerate(maps):
            imgs = mesh_views(template, faces, vals, vmin, vmax, views, size)
            for k, img in enumerate(imgs):
                ax = axes[i][j * len(views) + k]
                ax.imshow(img)
                ax.set_axis_off()
                view = "" if len(views) == 1 else (" (front)" if views[k] == 0 else " (side)")
                ax.set_title(title + view, fontsize=9)
        for ax in axes[i][len(maps) * len(views):]:
            ax.set_axis_off()
        sm = ScalarMappable(Normalize(vmin, vmax), "viridis")
        fig.colorbar(sm, ax=list(axes[i]), shrink=0.8, label=label)
    if note:
        fig.suptitle(note, fontsize=8)
    return png(fig)


def nice_max(values: np.ndarray, q: float = 99.0) -> float:
    """A colour-scale top: the ``q``-th percentile of the finite values (never 0)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    top = float(np.percentile(v, q)) if v.size else 1.0
    return top if top > 0 else 1.0
