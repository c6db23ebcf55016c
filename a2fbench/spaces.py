"""Output-space converters: parameter spaces to vertices.

A space (declared in ``manifests/spaces.yaml``) is either a vertex space (motion = flattened absolute
vertex positions) or a parameter space whose frames become vertices through a converter:

* ``blendshape``: ``vertices = weights @ blendshape + meanshape`` (UniTalker's ``bs2vertices``), from an npz
  with ``meanshape`` (V, 3) or (3V,) and ``blendshape`` (K, 3V) or (K, V, 3).
* ``flame``: FLAME 2020 linear blend skinning of the 413-wide UniTalker parameter vector (layout in the
  manifest), with global rotation, neck and eyeballs at zero, and rotation, translation, scale ignored, as
  UniTalker does. The model comes from ``generic_model.pkl`` (read with the restricted unpickler; chumpy
  arrays become plain arrays without importing chumpy) or a converted ``flame.npz``.

``read_space_files`` validates and extracts the converter arrays from a raw folder (``prepare`` copies them
into the store); :func:`converter` builds the callable from those arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from .errors import RawDataError
from .registry import Space, get_space, match_channels, space_channels

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


class Converter(Protocol):
    n_vertices: int

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        """(T, P) parameters -> (T, V, 3) float64 vertices."""


# ------------------------------------------------------------------------------------------ blendshapes
class BlendshapeConverter:
    """``vertices = weights @ B + mean``; B (K, 3V), mean (3V,)."""

    def __init__(self, meanshape: np.ndarray, blendshape: np.ndarray):
        self.mean = np.asarray(meanshape, np.float64).reshape(-1)
        self.B = np.asarray(blendshape, np.float64).reshape(blendshape.shape[0], -1)
        self.n_vertices = self.mean.size // 3
        self.n_params = self.B.shape[0]

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        w = np.asarray(params, np.float64).reshape(-1, self.n_params)
        return (w @ self.B + self.mean).reshape(len(w), self.n_vertices, 3)


def read_blendshape_basis(path: Path, space: Space) -> dict[str, np.ndarray]:
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
    mean, B = np.asarray(z["meanshape"]), np.asarray(z["blendshape"])
    if mean.size % 3 or mean.ndim not in (1, 2) or (mean.ndim == 2 and mean.shape[1] != 3):
        raise RawDataError(f"{path}: expected meanshape shaped (V, 3) or (3V,), found {mean.shape}")
    V = mean.size // 3
    if B.shape[0] != space.n_params or B.size != space.n_params * 3 * V:
        raise RawDataError(f"{path}: expected blendshape shaped ({space.n_params}, {3 * V}) for {space.name} with "
                           f"V={V}, found {B.shape}")
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


# ------------------------------------------------------------------------------------------------- FLAME
def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


def read_flame_model(path: Path) -> dict[str, np.ndarray]:
    """FLAME arrays from ``generic_model.pkl`` (restricted unpickler) or a converted ``.npz``."""
    if not path.is_file():
        alt = path.with_name("flame.npz")
        if alt.is_file():
            path = alt
        else:
            raise RawDataError(f"{path}: expected the FLAME 2020 model (generic_model.pkl or flame.npz), found nothing; "
                               "register at https://flame.is.tue.mpg.de/ and place it there")
    if path.suffix == ".npz":
        z = np.load(path, allow_pickle=False)
        d = {k: z[k] for k in z.files}
    else:
        from . import safepickle

        d = safepickle.load(path)
        if not isinstance(d, dict):
            raise RawDataError(f"{path}: expected a FLAME model dict, found {type(d).__name__}")
    missing = [k for k in FLAME_KEYS if k not in d]
    if missing:
        raise RawDataError(f"{path}: expected FLAME keys {list(FLAME_KEYS)}, missing {missing}; use FLAME 2020 generic_model.pkl")
    out = {k: _dense(d[k]) for k in FLAME_KEYS}
    V = out["v_template"].shape[0]
    J = out["J_regressor"].shape[0]
    checks = {"v_template": (V, 3), "weights": (V, J), "J_regressor": (J, V)}
    for k, shp in checks.items():
        if out[k].shape != shp:
            raise RawDataError(f"{path}: expected {k} shaped {shp}, found {out[k].shape}")
    if out["shapedirs"].shape[:2] != (V, 3) or out["posedirs"].shape[:2] != (V, 3):
        raise RawDataError(f"{path}: expected shapedirs/posedirs shaped ({V}, 3, K), found "
                           f"{out['shapedirs'].shape}/{out['posedirs'].shape}")
    if "f" in d:
        out["f"] = np.asarray(d["f"]).astype(np.int64)
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        out[k] = out[k].astype(np.float64)
    out["kintree_table"] = out["kintree_table"].astype(np.int64)
    return out


def rodrigues(r: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    r = np.asarray(r, np.float64)
    theta = np.linalg.norm(r + 1e-8, axis=-1, keepdims=True)
    k = r / theta
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    z = np.zeros_like(kx)
    K = np.stack([z, -kz, ky, kz, z, -kx, -ky, kx, z], -1).reshape(*r.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


class FlameConverter:
    """FLAME LBS on the 413-wide UniTalker layout (numpy, float64; see module doc)."""

    def __init__(self, arrays: dict[str, np.ndarray], layout: dict[str, tuple[int, int]]):
        self.a = {k: np.asarray(v) for k, v in arrays.items()}
        self.layout = layout
        self.n_vertices = int(self.a["v_template"].shape[0])
        self.parents = self.a["kintree_table"][0].astype(np.int64)
        self.parents[0] = -1
        self.n_params = max(b for _, b in layout.values())

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        P = np.asarray(params, np.float64).reshape(-1, self.n_params)
        a, L = self.a, self.layout
        betas = np.concatenate([P[:, slice(*L["shape"])], P[:, slice(*L["expression"])]], axis=1)  # (T, 400)
        n_shape = betas.shape[1]
        sd = a["shapedirs"][:, :, :n_shape]
        v_shaped = a["v_template"][None] + np.einsum("vck,tk->tvc", sd, betas)  # 1. shape blend shapes
        J = np.einsum("jv,tvc->tjc", a["J_regressor"], v_shaped)  # 2. joints (T, J, 3)
        nJ = J.shape[1]
        pose = np.zeros((len(P), nJ, 3))
        pose[:, 2] = P[:, slice(*L["jaw"])]  # global, neck, eyes stay zero
        R = rodrigues(pose)  # (T, J, 3, 3)
        pose_feat = (R[:, 1:] - np.eye(3)).reshape(len(P), -1)  # 3. pose blend shapes
        pd = a["posedirs"].reshape(-1, a["posedirs"].shape[2])
        v_posed = v_shaped + (pose_feat @ pd.T).reshape(v_shaped.shape)
        # 4. rigid transforms along the kinematic chain
        G = np.zeros((len(P), nJ, 4, 4))
        for j in range(nJ):
            rel = J[:, j] - (J[:, self.parents[j]] if self.parents[j] >= 0 else 0)
            M = np.zeros((len(P), 4, 4))
            M[:, :3, :3] = R[:, j]
            M[:, :3, 3] = rel
            M[:, 3, 3] = 1
            G[:, j] = M if self.parents[j] < 0 else G[:, self.parents[j]] @ M
        G[:, :, :3, 3] -= np.einsum("tjab,tjb->tja", G[:, :, :3, :3], J)
        # 5. skinning
        Tm = np.einsum("vj,tjab->tvab", a["weights"], G)
        return np.einsum("tvab,tvb->tva", Tm[..., :3, :3], v_posed) + Tm[..., :3, 3]


# ------------------------------------------------------------------------------------------------- API
def read_space_files(space: Space, root: Path) -> dict[str, np.ndarray]:
    """Converter arrays of a parameter space, read and validated from a raw folder ({} for vertex spaces)."""
    if space.kind == "blendshape":
        return read_blendshape_basis(Path(root) / (space.basis_file or ""), space)
    if space.kind == "flame":
        return read_flame_model(Path(root) / (space.model_file or "generic_model.pkl"))
    return {}


def converter(space: Space | str, arrays: dict[str, np.ndarray]) -> Optional[Converter]:
    """The vertex converter of a space (None for vertex spaces)."""
    space = get_space(space) if isinstance(space, str) else space
    if space.kind == "blendshape":
        return BlendshapeConverter(arrays["meanshape"], arrays["blendshape"])
    if space.kind == "flame":
        return FlameConverter(arrays, dict(space.layout or {}))
    return None


def n_vertices(space: Space, arrays: dict[str, np.ndarray]) -> int:
    if space.is_vertex:
        return int(space.n_vertices or 0)
    conv = converter(space, arrays)
    assert conv is not None
    return conv.n_vertices


def channels(space: Space) -> Optional[list[str]]:
    return space_channels(space)
