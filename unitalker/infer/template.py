"""A user's own neutral mesh for ``unitalker infer --template``: ``.npy`` as (V, 3) or (3V,), ``.obj`` or ``.ply``
(vertex order kept as in the file), in the native units of the head's dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from a2fbench.errors import A2FBenchError, RawDataError
from a2fbench.sources.meshes import read_mesh


class TemplateError(RawDataError):
    """A template mesh that cannot be used with the chosen head."""


def _vertices(p: Path) -> np.ndarray:
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise TemplateError(f"{p}: expected a numeric .npy of vertices, found an unreadable file ({e})") from None
    if suffix in (".obj", ".ply"):
        try:
            verts, _faces = read_mesh(p)  # a2fbench's reader: vertex order as in the file
        except A2FBenchError as e:
            raise TemplateError(str(e)) from None
        return verts
    raise TemplateError(f"{p}: expected a template as .npy, .obj or .ply, found {suffix or 'no suffix'}")


def read_template(path: str | os.PathLike, n_vertices: int, what: str) -> np.ndarray:
    """(3V,) float64 vertices of a template file; ``n_vertices`` is the head's count, ``what`` names the head."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TemplateError(f"--template {p}: expected a mesh file, found nothing; check the path")
    v = _vertices(p)
    if not np.issubdtype(v.dtype, np.number):
        raise TemplateError(f"{p}: expected numeric vertices, found dtype {v.dtype}")
    if v.ndim == 2 and v.shape[1] == 3:
        n = v.shape[0]
    elif v.ndim == 1 and v.size % 3 == 0:
        n = v.size // 3
    else:
        raise TemplateError(f"{p}: expected vertices shaped (V, 3) or (3V,), found {v.shape}")
    if n != n_vertices:
        raise TemplateError(f"{p}: expected {n_vertices} vertices ({what}), found {n}; pass a neutral mesh of that "
                            "head's topology")
    v = np.asarray(v, np.float64).reshape(-1)
    if not np.isfinite(v).all():
        raise TemplateError(f"{p}: expected finite vertex coordinates, found NaN or inf")
    return v
