"""Blendshape spaces (ARKit-52 in EmoTalk's order, ARKit-51 of the UniTalker release): weights to vertices
``w @ B + mean``, the bounded solve back, the basis file, the vertices a set of channels moves, and channel
re-ordering between spaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import RawDataError, SpaceError
from ..registry import Space, match_channels
from .arkit_solve import BoxLsq
from .arrays import frames, vertex_frames


class BlendshapeConverter:
    """ARKit-style blendshapes: ``vertices = weights @ B + mean``; B (K, 3V) deltas, mean (3V,).

    ``to_vertices`` maps (..., K) weights to (..., V, 3); ``to_weights`` solves the way back (see there).
    ``channels`` are the K channel names in order when the space declares them.
    """

    def __init__(self, meanshape: np.ndarray, blendshape: np.ndarray, channels: Optional[list[str]] = None):
        self.mean = np.asarray(meanshape, np.float64).reshape(-1)
        B = np.asarray(blendshape, np.float64)
        self.B = B.reshape(B.shape[0], -1)
        if self.mean.size % 3 or self.B.shape[1] != self.mean.size:
            raise SpaceError(f"expected a blendshape basis (K, {self.mean.size}) matching meanshape "
                             f"({self.mean.size // 3}, 3), found {tuple(B.shape)}; use the basis of this space")
        self.n_vertices = self.mean.size // 3
        self.n_params = self.B.shape[0]
        if channels is not None and len(channels) != self.n_params:
            raise SpaceError(f"expected {self.n_params} channel names for the basis, found {len(channels)}")
        self.channels = list(channels) if channels is not None else None
        self._solver: Optional[BoxLsq] = None

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        """(..., K) weights -> (..., V, 3) float64 vertices."""
        w = frames(params, self.n_params, "blendshape weight")
        return (w @ self.B + self.mean).reshape(*w.shape[:-1], self.n_vertices, 3)

    def to_weights(self, vertices: np.ndarray, lower: float = 0.0, upper: float = 1.0,
                   return_info: bool = False) -> Any:
        """Vertices (T, V, 3) or (T, 3V) -> weights (T, K): per frame the ``w`` in ``[lower, upper]^K`` that
        minimises ``||w @ B + mean - v||^2`` (bounded least squares), batched over frames.

        Exact (to float64 rounding) whenever the basis has full rank: the generating weights come back when
        the vertices were made by :meth:`to_vertices` from weights inside the bounds. With ``return_info``
        also returns ``{"iterations", "fallback_frames", "residual"}`` (per-frame residual norm).
        """
        if not lower < upper:
            raise SpaceError(f"expected bounds lower < upper, found [{lower}, {upper}]")
        d = vertex_frames(vertices, self.n_vertices, "vertices") - self.mean
        lead = d.shape[:-1]
        d = d.reshape(-1, d.shape[-1])
        if not np.isfinite(d).all():
            raise SpaceError("expected finite vertex coordinates, found NaN or inf; clean the input first")
        if self._solver is None:
            self._solver = BoxLsq(self.B.T)
        w, info = self._solver.solve(d, lower, upper)
        if return_info:
            info["residual"] = np.linalg.norm(w @ self.B - d, axis=1).reshape(lead)
        w = w.reshape(*lead, self.n_params)
        return (w, info) if return_info else w


def read_blendshape_basis(path: Path, space: "Space | Sequence[Space]") -> dict[str, np.ndarray]:
    """``meanshape`` (V, 3) and ``blendshape`` (K, 3V) float32 from a basis npz, checked against the space.

    ``space`` may be several spaces (e.g. arkit52 and arkit51): the file is checked against the one whose
    channel count its ``blendshape`` has, the first when none has it."""
    path = Path(path)
    candidates = [space] if isinstance(space, Space) else list(space)
    space = candidates[0]
    if not path.is_file():
        raise RawDataError(f"{path}: expected the {space.name} blendshape basis ({space.basis_file}), found nothing; "
                           "see `a2fbench info` for where to get it")
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except Exception as e:  # noqa: BLE001
        raise RawDataError(f"{path}: expected an npz with meanshape and blendshape, found an unreadable file ({e})") from None
    if not {"meanshape", "blendshape"} <= keys:
        raise RawDataError(f"{path}: expected keys meanshape and blendshape, found {sorted(keys)}; use the basis "
                           "from UniTalker resources.zip")
    try:
        mean, B = np.asarray(z["meanshape"]), np.asarray(z["blendshape"])
    except Exception as e:  # noqa: BLE001 - object arrays, truncated members
        raise RawDataError(f"{path}: expected numeric meanshape and blendshape arrays, found unreadable ones ({e})") from None
    space = next((c for c in candidates if B.ndim in (2, 3) and B.shape[0] == c.n_params), space)
    if mean.size % 3 or mean.ndim not in (1, 2) or (mean.ndim == 2 and mean.shape[1] != 3) or mean.size == 0:
        raise RawDataError(f"{path}: expected meanshape shaped (V, 3) or (3V,), found {mean.shape}")
    V = mean.size // 3
    if B.ndim not in (2, 3) or B.shape[0] != space.n_params or B.size != space.n_params * 3 * V:
        raise RawDataError(f"{path}: expected blendshape shaped ({space.n_params}, {3 * V}) for {space.name} with "
                           f"V={V}, found {B.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(B).all()):
        raise RawDataError(f"{path}: expected finite basis values, found NaN or inf; re-download the basis")
    return {"meanshape": mean.reshape(V, 3).astype(np.float32), "blendshape": B.reshape(space.n_params, 3 * V).astype(np.float32)}


def basis_region(arrays: dict[str, np.ndarray], channels: list[str], patterns: tuple[str, ...],
                 threshold: float) -> np.ndarray:
    """Vertices displaced by the channels matching ``patterns`` by at least ``threshold`` x the largest such displacement."""
    idx = match_channels(channels, patterns)
    if not idx:
        raise RawDataError(f"no channel matches {list(patterns)}")
    B = np.asarray(arrays["blendshape"], np.float64)
    V = B.shape[1] // 3
    disp = np.linalg.norm(B[idx].reshape(len(idx), V, 3), axis=2).max(axis=0)
    return np.flatnonzero(disp >= threshold * disp.max()).astype(np.int64)


def reorder_channels(weights: np.ndarray, names_from: list[str], names_to: list[str], fill: float = 0.0) -> np.ndarray:
    """Weights (..., len(names_from)) re-ordered to ``names_to``; channels absent from the input get ``fill``.

    ``reorder_channels(w51, space_channels(get_space("arkit51")), space_channels(get_space("arkit52")))``
    widens ARKit-51 to 52 (tongueOut = 0); the other direction drops the channel.
    """
    w = frames(weights, len(names_from), "weight")
    pos = {n: i for i, n in enumerate(names_from)}
    out = np.full((*w.shape[:-1], len(names_to)), float(fill))
    for j, n in enumerate(names_to):
        if n in pos:
            out[..., j] = w[..., pos[n]]
    return out
