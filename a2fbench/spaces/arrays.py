"""Input checks shared by the converters: any array-like as float64 frames of a given width, or as vertices
given as (..., V, 3) or (..., 3V); a wrong width is one clear line."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SpaceError


def frames(x: Any, width: int, what: str) -> np.ndarray:
    """``x`` as a float64 array (..., width); one clear line when the width is wrong."""
    a = np.asarray(x, np.float64)
    if a.ndim == 0 or a.shape[-1] != width:
        raise SpaceError(f"expected {what} frames of width {width} (shape (T, {width})), found shape "
                         f"{tuple(a.shape)}; pass one row of {width} values per frame")
    return a


def vertex_frames(x: Any, n_vertices: int, what: str) -> np.ndarray:
    """``x`` shaped (..., V, 3) or (..., 3V) as float64 (..., 3V)."""
    a = np.asarray(x, np.float64)
    if a.ndim >= 2 and a.shape[-2:] == (n_vertices, 3):
        return a.reshape(*a.shape[:-2], 3 * n_vertices)
    if a.ndim >= 1 and a.shape[-1] == 3 * n_vertices:
        return a
    raise SpaceError(f"expected {what} shaped (T, {n_vertices}, 3) or (T, {3 * n_vertices}), found "
                     f"{tuple(a.shape)}; pass vertices of the basis topology")
