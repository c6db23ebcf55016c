"""The FLAME space: the 413-wide UniTalker parameter vector to FLAME 2020 vertices by linear blend skinning
(numpy, float64), and the FLAME model file (``generic_model.pkl`` through the restricted unpickler, chumpy
objects become arrays without chumpy, or a converted ``flame.npz``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RawDataError, SpaceError
from ..util import safepickle
from ..util.fsutil import atomic_path
from .arrays import frames

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


#: FLAME 2020 stores 300 identity directions first, then the expression directions (smplx's convention).
FLAME_SHAPE_DIRS = 300


#: FLAME joints: 0 global, 1 neck, 2 jaw, 3 left eye, 4 right eye.
FLAME_JAW_JOINT = 2


_CHUNK_FRAMES = 256  # frames per numpy LBS block: bounds the (N, V, 12) skinning temporaries


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


def read_flame_model(path: Path) -> dict[str, np.ndarray]:
    """FLAME arrays from ``generic_model.pkl`` (restricted unpickler) or a converted ``.npz``, validated.

    Returns float64 ``v_template`` (V, 3), ``shapedirs`` (V, 3, S), ``posedirs`` (V, 3, 9(J-1)),
    ``J_regressor`` (J, V) dense, ``weights`` (V, J), int64 ``kintree_table`` (2, J) and ``f`` when present.
    """
    path = Path(path)
    if not path.is_file():
        alt = path.with_name("flame.npz")
        if alt.is_file():
            path = alt
        else:
            raise RawDataError(f"{path}: expected the FLAME 2020 model (generic_model.pkl or flame.npz), found nothing; "
                               "register at https://flame.is.tue.mpg.de/ and place it there")
    if path.suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
            d = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise RawDataError(f"{path}: expected an npz of FLAME arrays, found an unreadable file ({e}); "
                               "re-run `a2fbench convert-flame`") from None
    else:
        d = safepickle.load(path)
        if not isinstance(d, dict):
            raise RawDataError(f"{path}: expected a FLAME model dict, found {type(d).__name__}")
    return check_flame_arrays(d, str(path))


def check_flame_arrays(d: dict, source: str = "FLAME model") -> dict[str, np.ndarray]:
    """Validate and normalise FLAME arrays (see :func:`read_flame_model`); one-line error on any mismatch."""
    missing = [k for k in FLAME_KEYS if k not in d]
    if missing:
        raise RawDataError(f"{source}: expected FLAME keys {list(FLAME_KEYS)}, missing {missing}; use FLAME 2020 "
                           "generic_model.pkl")
    try:
        out = {k: _dense(d[k]) for k in FLAME_KEYS}
    except Exception as e:  # noqa: BLE001
        raise RawDataError(f"{source}: expected numeric FLAME arrays, found unreadable ones ({e})") from None
    V = out["v_template"].shape[0] if out["v_template"].ndim == 2 else -1
    J = out["J_regressor"].shape[0] if out["J_regressor"].ndim == 2 else -1
    checks = {"v_template": (V, 3), "weights": (V, J), "J_regressor": (J, V), "kintree_table": (2, J)}
    for k, shp in checks.items():
        if out[k].shape != shp or V < 1 or J < 2:
            raise RawDataError(f"{source}: expected {k} shaped {shp}, found {out[k].shape}")
    if out["shapedirs"].ndim != 3 or out["shapedirs"].shape[:2] != (V, 3):
        raise RawDataError(f"{source}: expected shapedirs shaped ({V}, 3, S), found {out['shapedirs'].shape}")
    if out["posedirs"].shape != (V, 3, 9 * (J - 1)):
        raise RawDataError(f"{source}: expected posedirs shaped ({V}, 3, {9 * (J - 1)}), found {out['posedirs'].shape}")
    parents = out["kintree_table"][0].astype(np.int64)
    if not all(0 <= parents[j] < j for j in range(1, J)):
        raise RawDataError(f"{source}: expected kintree_table parents listed before their children, found {parents.tolist()}")
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        out[k] = out[k].astype(np.float64)
        if not np.isfinite(out[k]).all():
            raise RawDataError(f"{source}: expected finite {k}, found NaN or inf; re-download the model")
    out["kintree_table"] = out["kintree_table"].astype(np.int64)
    if "f" in d:
        out["f"] = np.asarray(d["f"]).astype(np.int64)
    return out


def convert_flame(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``generic_model.pkl`` -> ``flame.npz`` (plain arrays, J_regressor dense), written atomically."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise RawDataError(f"{src}: expected the FLAME 2020 generic_model.pkl, found nothing; download it from "
                           "https://flame.is.tue.mpg.de/")
    arrays = read_flame_model(src)
    if dst.suffix != ".npz":
        raise SpaceError(f"expected an output name ending in .npz, found {dst.name}; e.g. flame.npz")
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, meta=np.array([json.dumps({"source": src.name, "format": "a2fbench flame npz v1"})]))
    return dst


def rodrigues(r: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices, exact at and near zero.

    ``R = I + a K + b K^2`` with ``K = [r]_x``, ``a = sin t / t``, ``b = (1 - cos t) / t^2``, ``t = |r|``;
    below t = 1e-4 the Taylor series of ``a`` and ``b`` is used (error < 1e-17).
    """
    r = np.asarray(r, np.float64)
    t2 = (r * r).sum(-1)
    small = t2 < 1e-8
    t = np.sqrt(np.where(small, 1.0, t2))
    a = np.where(small, 1 - t2 / 6, np.sin(t) / t)
    b = np.where(small, 0.5 - t2 / 24, (1 - np.cos(t)) / np.where(small, 1.0, t2))
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    o = np.zeros_like(x)
    K = np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*r.shape[:-1], 3, 3)
    return np.eye(3) + a[..., None, None] * K + b[..., None, None] * (K @ K)


class FlameModel:
    """FLAME arrays with the quantities LBS reuses precomputed (float64)."""

    def __init__(self, arrays: dict[str, np.ndarray], n_shape: int, n_expr: int):
        a = {k: np.asarray(arrays[k]) for k in FLAME_KEYS}
        V, _, S = a["shapedirs"].shape
        if S < FLAME_SHAPE_DIRS + n_expr or n_shape > FLAME_SHAPE_DIRS:
            raise SpaceError(f"expected a FLAME model with >= {FLAME_SHAPE_DIRS + n_expr} shape+expression directions "
                             f"(FLAME 2020: 300 + 100), found {S}; use FLAME 2020 generic_model.pkl")
        sd = np.concatenate([a["shapedirs"][:, :, :n_shape],
                             a["shapedirs"][:, :, FLAME_SHAPE_DIRS:FLAME_SHAPE_DIRS + n_expr]], axis=2).astype(np.float64)
        self.n_vertices = V
        self.v_template = a["v_template"].astype(np.float64)  # (V, 3)
        self.dirs = sd.reshape(3 * V, -1).T.copy()  # (S+E, 3V)
        Jr = _dense(a["J_regressor"]).astype(np.float64)  # (J, V)
        self.n_joints = Jr.shape[0]
        self.J_template = Jr @ self.v_template  # (J, 3)
        self.J_dirs = np.einsum("jv,vck->kjc", Jr, sd).reshape(sd.shape[2], -1)  # (S+E, 3J)
        self.posedirs = a["posedirs"].astype(np.float64).reshape(3 * V, -1).T.copy()  # (9(J-1), 3V)
        self.weights = a["weights"].astype(np.float64)  # (V, J)
        parents = a["kintree_table"][0].astype(np.int64).copy()
        parents[0] = -1
        self.parents = parents


def flame_lbs(model: FlameModel, betas: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Batched FLAME LBS in numpy: betas (N, S+E), pose (N, J, 3) axis-angle -> (N, V, 3) float64."""
    N, V, J = len(betas), model.n_vertices, model.n_joints
    v_shaped = (model.v_template.reshape(-1) + betas @ model.dirs).reshape(N, V, 3)  # 1. shape + expression
    joints = (model.J_template.reshape(-1) + betas @ model.J_dirs).reshape(N, J, 3)  # 2. joints of the shaped mesh
    R = rodrigues(pose)  # (N, J, 3, 3)
    pose_feat = (R[:, 1:] - np.eye(3)).reshape(N, -1)  # 3. pose-corrective blend shapes
    v_posed = v_shaped + (pose_feat @ model.posedirs).reshape(N, V, 3)
    G = np.zeros((N, J, 3, 4))  # 4. world transforms along the kinematic chain
    for j in range(J):
        p = model.parents[j]
        rel = joints[:, j] - (joints[:, p] if p >= 0 else 0.0)
        if p < 0:
            G[:, j, :, :3], G[:, j, :, 3] = R[:, j], rel
        else:
            G[:, j, :, :3] = G[:, p, :, :3] @ R[:, j]
            G[:, j, :, 3] = np.einsum("nab,nb->na", G[:, p, :, :3], rel) + G[:, p, :, 3]
    G[:, :, :, 3] -= np.einsum("njab,njb->nja", G[:, :, :, :3], joints)  # relative to the rest pose
    T = (model.weights @ G.reshape(N, J, 12)).reshape(N, V, 3, 4)  # 5. skinning
    return np.einsum("nvab,nvb->nva", T[..., :3], v_posed) + T[..., 3]


class FlameConverter:
    """The 413-wide UniTalker FLAME vector -> FLAME vertices (numpy, float64; see module doc)."""

    def __init__(self, arrays: dict[str, np.ndarray], layout: dict[str, tuple[int, int]]):
        need = ("shape", "expression", "jaw")
        if any(k not in layout for k in need):
            raise SpaceError(f"expected a FLAME layout with {list(need)}, found {sorted(layout)}; fix spaces.yaml")
        self.layout = {k: (int(a), int(b)) for k, (a, b) in layout.items()}
        self.n_params = max(b for _, b in self.layout.values())
        L = self.layout
        self.model = FlameModel(arrays, L["shape"][1] - L["shape"][0], L["expression"][1] - L["expression"][0])
        self.n_vertices = self.model.n_vertices

    def split(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 413) -> betas (N, shape+expression), pose (N, J, 3) with only the jaw set."""
        L = self.layout
        betas = np.concatenate([P[:, slice(*L["shape"])], P[:, slice(*L["expression"])]], axis=1)
        pose = np.zeros((len(P), self.model.n_joints, 3))
        pose[:, FLAME_JAW_JOINT] = P[:, slice(*L["jaw"])]
        return betas, pose

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        """(..., 413) -> (..., V, 3) float64, in blocks of 256 frames."""
        P = frames(params, self.n_params, "FLAME parameter")
        lead = P.shape[:-1]
        P = P.reshape(-1, self.n_params)
        out = np.empty((len(P), self.n_vertices, 3))
        for a in range(0, len(P), _CHUNK_FRAMES):
            out[a:a + _CHUNK_FRAMES] = flame_lbs(self.model, *self.split(P[a:a + _CHUNK_FRAMES]))
        return out.reshape(*lead, self.n_vertices, 3)
