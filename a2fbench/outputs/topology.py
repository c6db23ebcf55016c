"""Faces for a dataset whose store holds none (ARKit bases ship vertices only, a store prepared without its mesh
file): a triangulation of the template as the frontal camera sees it.

The fallback: Delaunay triangles of the template's (x, y) projection, minus the triangles that bridge gaps
(an edge longer than ``max_edge`` x the median edge: the open mouth, the eyes, the outline's concave
parts). It draws a face mask that reads well from the front; it is not the published topology (back and
inner surfaces collapse onto the front), so every output made with it says so.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay, QhullError

from ..errors import OutputError

FALLBACK_NOTE = "approximate faces: Delaunay triangulation of the template's frontal projection (no mesh file)"


def frontal_triangulation(template: np.ndarray, max_edge: float = 4.0) -> np.ndarray:
    """(F, 3) int64 triangles over the (V, 3) ``template`` seen along -z, counter-clockwise from the front."""
    v = np.asarray(template, np.float64).reshape(-1, 3)
    try:
        tri = Delaunay(v[:, :2]).simplices.astype(np.int64)
    except (QhullError, ValueError) as e:
        raise OutputError(f"expected a template to triangulate (no mesh faces in the store), found {len(v)} "
                          f"degenerate points ({str(e).splitlines()[0]}); pass --mesh FILE.obj|ply") from None
    p = v[:, :2]
    edges = np.stack([np.linalg.norm(p[tri[:, a]] - p[tri[:, b]], axis=1) for a, b in ((0, 1), (1, 2), (2, 0))], 1)
    keep = edges.max(1) <= max_edge * np.median(edges)
    tri = tri[keep]
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri[cross < 0] = tri[cross < 0][:, [0, 2, 1]]  # all counter-clockwise: normals face the camera (+z)
    return tri
