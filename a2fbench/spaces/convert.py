"""The converter API: any space's converter arrays to a numpy or torch converter, and the space files of
a raw folder (the blendshape basis, the FLAME model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from ..errors import SpaceError
from ..registry import Space, get_space, space_channels
from .arrays import frames
from .blendshape import BlendshapeConverter, read_blendshape_basis
from .flame import FLAME_KEYS, FlameConverter, read_flame_model


class Converter(Protocol):
    n_vertices: int
    n_params: int

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        """(T, P) parameters -> (T, V, 3) float64 vertices."""


def read_space_files(space: Space, root: Path) -> dict[str, np.ndarray]:
    """Converter arrays of a parameter space, read and validated from a raw folder ({} for vertex spaces)."""
    if space.kind == "blendshape":
        return read_blendshape_basis(Path(root) / (space.basis_file or ""), space)
    if space.kind == "flame":
        return read_flame_model(Path(root) / (space.model_file or "generic_model.pkl"))
    return {}


def _space(space: Space | str) -> Space:
    return get_space(space) if isinstance(space, str) else space


def converter(space: Space | str, arrays: dict[str, np.ndarray]) -> Optional[Converter]:
    """The numpy vertex converter of a space (None for vertex spaces)."""
    space = _space(space)
    if space.kind == "blendshape":
        _need(arrays, ("meanshape", "blendshape"), space)
        conv = BlendshapeConverter(arrays["meanshape"], arrays["blendshape"], space_channels(space))
        if conv.n_params != space.n_params:
            raise SpaceError(f"expected a {space.name} basis with {space.n_params} channels, found {conv.n_params}")
        return conv
    if space.kind == "flame":
        _need(arrays, FLAME_KEYS, space)
        conv_f = FlameConverter(arrays, dict(space.layout or {}))
        if conv_f.n_params != space.n_params:
            raise SpaceError(f"expected the {space.name} layout to span {space.n_params} values, found {conv_f.n_params}")
        return conv_f
    return None


def torch_converter(space: Space | str, arrays: dict[str, np.ndarray], dtype: Any = None) -> Any:
    """A ``torch.nn.Module`` mapping (..., P) to (..., V, 3) vertices; vertex spaces: a reshape of (..., 3V).

    The converter arrays are non-persistent buffers (not in ``state_dict``), float32 unless ``dtype`` says
    otherwise; ``.to(device)`` moves them. Differentiable (the FLAME rotation is smooth at zero).
    """
    from . import (
        torch_modules as _torch_spaces,  # torch is imported only when a torch converter is asked for (1-2 s)
    )

    space = _space(space)
    if space.kind == "blendshape":
        conv = converter(space, arrays)
        return _torch_spaces.TorchBlendshapes(conv.mean, conv.B, dtype=dtype)  # type: ignore[union-attr]
    if space.kind == "flame":
        conv_f = converter(space, arrays)
        return _torch_spaces.TorchFlame(conv_f, dtype=dtype)
    return _torch_spaces.VertexReshape(int(space.n_vertices or 0))


def _need(arrays: dict, keys: tuple[str, ...], space: Space) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise SpaceError(f"expected {space.name} converter arrays {list(keys)}, missing {missing}; pass "
                         "Dataset.space_arrays() or read_space_files(space, RAW/<id>)")


def n_vertices(space: Space, arrays: dict[str, np.ndarray]) -> int:
    if space.is_vertex:
        return int(space.n_vertices or 0)
    conv = converter(space, arrays)
    assert conv is not None
    return conv.n_vertices


def channels(space: Space | str) -> Optional[list[str]]:
    """Channel names of a parameter space in order (ARKit), None when unnamed."""
    return space_channels(_space(space))


def to_vertices(space: Space | str, arrays: dict[str, np.ndarray], motion: np.ndarray) -> np.ndarray:
    """Any space's frames (T, D) -> (T, V, 3) float64 vertices (vertex spaces: a reshape)."""
    space = _space(space)
    conv = converter(space, arrays)
    if conv is None:
        m = frames(motion, space.dim, f"{space.name} vertex")
        return m.reshape(*m.shape[:-1], -1, 3)
    return conv.to_vertices(motion)
