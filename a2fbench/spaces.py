"""Output spaces: what a motion vector means and how it becomes vertices (numpy; torch in ``_torch_spaces``).

A space is declared in ``manifests/spaces.yaml`` (:class:`~a2fbench.registry.Space`: name, kind, width,
channel names, basis or model file). Every dataset names one; UniTalker keys its heads by it and the metrics
score every space in vertices. Three kinds:

* ``vertices``: a frame is the flattened absolute positions, (3V,). Converting is a reshape.
* ``blendshape`` (ARKit-52 in EmoTalk's alphabetical order, ARKit-51 of the UniTalker release):
  ``vertices = weights @ blendshape + meanshape`` (UniTalker's ``bs2vertices``) with a basis npz holding
  ``meanshape`` (V, 3) or (3V,) and ``blendshape`` (K, 3V) or (K, V, 3) deltas. The way back, vertices to
  weights, is a bounded least-squares solve in [0, 1] (:meth:`BlendshapeConverter.to_weights`).
* ``flame``: the 413-wide UniTalker vector ``[0:300]`` shape, ``[300:400]`` expression, ``[400:403]`` jaw
  (axis-angle), ``[403:409]`` 6-D head rotation, ``[409:412]`` translation, ``[412]`` scale, turned into
  vertices by FLAME 2020 linear blend skinning with global rotation, neck and eyeballs at zero and
  rotation, translation and scale ignored, as UniTalker's ``FlameLayer`` does. The model is read from
  ``generic_model.pkl`` through :mod:`a2fbench.safepickle` (chumpy objects become arrays without chumpy)
  or from a converted ``flame.npz`` (``a2fbench convert-flame``).

Python API (stable inside the project)::

    conv = converter(space, arrays)        # None for vertex spaces
    conv.to_vertices(params)               # (T, P) -> (T, V, 3) float64
    conv.to_weights(vertices)              # blendshape spaces: (T, V, 3) -> (T, K) in [0, 1]
    torch_converter(space, arrays)         # torch.nn.Module, (..., P) -> (..., V, 3); vertex spaces: reshape

``arrays`` are the converter arrays of the space: ``Dataset.space_arrays()`` of a prepared store, or
:func:`read_space_files` of a raw folder. numpy and torch converters agree to float rounding (tested).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from .errors import RawDataError, SpaceError
from .registry import Space, get_space, match_channels, space_channels

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
#: FLAME 2020 stores 300 identity directions first, then the expression directions (smplx's convention).
FLAME_SHAPE_DIRS = 300
#: FLAME joints: 0 global, 1 neck, 2 jaw, 3 left eye, 4 right eye.
FLAME_JAW_JOINT = 2
_CHUNK_FRAMES = 256  # frames per numpy LBS block: bounds the (N, V, 12) skinning temporaries


class Converter(Protocol):
    n_vertices: int
    n_params: int

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        """(T, P) parameters -> (T, V, 3) float64 vertices."""


def _frames(x: Any, width: int, what: str) -> np.ndarray:
    """``x`` as a float64 array (..., width); one clear line when the width is wrong."""
    a = np.asarray(x, np.float64)
    if a.ndim == 0 or a.shape[-1] != width:
        raise SpaceError(f"expected {what} frames of width {width} (shape (T, {width})), found shape "
                         f"{tuple(a.shape)}; pass one row of {width} values per frame")
    return a


def _vertex_frames(x: Any, n_vertices: int, what: str) -> np.ndarray:
    """``x`` shaped (..., V, 3) or (..., 3V) as float64 (..., 3V)."""
    a = np.asarray(x, np.float64)
    if a.ndim >= 2 and a.shape[-2:] == (n_vertices, 3):
        return a.reshape(*a.shape[:-2], 3 * n_vertices)
    if a.ndim >= 1 and a.shape[-1] == 3 * n_vertices:
        return a
    raise SpaceError(f"expected {what} shaped (T, {n_vertices}, 3) or (T, {3 * n_vertices}), found "
                     f"{tuple(a.shape)}; pass vertices of the basis topology")


# ------------------------------------------------------------------------------------------ blendshapes
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
        self._solver: Optional[_BoxLsq] = None

    def to_vertices(self, params: np.ndarray) -> np.ndarray:
        """(..., K) weights -> (..., V, 3) float64 vertices."""
        w = _frames(params, self.n_params, "blendshape weight")
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
        d = _vertex_frames(vertices, self.n_vertices, "vertices") - self.mean
        lead = d.shape[:-1]
        d = d.reshape(-1, d.shape[-1])
        if not np.isfinite(d).all():
            raise SpaceError("expected finite vertex coordinates, found NaN or inf; clean the input first")
        if self._solver is None:
            self._solver = _BoxLsq(self.B.T)
        w, info = self._solver.solve(d, lower, upper)
        if return_info:
            info["residual"] = np.linalg.norm(w @ self.B - d, axis=1).reshape(lead)
        w = w.reshape(*lead, self.n_params)
        return (w, info) if return_info else w


class _BoxLsq:
    """Batched ``min ||A w - d||`` subject to ``lo <= w <= hi`` for many right-hand sides ``d``.

    ``A`` (M, K) is reduced once by a thin QR (``A = Q R``), so each frame is a K-dimensional problem
    ``min 1/2 w'Hw - b'w`` with ``H = R'R``, ``b = R'Q'd``. All frames run a primal active-set method
    together (Nocedal & Wright, Algorithm 16.3, for bounds): start from the clipped unconstrained solution
    with the clipped variables fixed at their bounds; minimise over the free variables exactly (one batched
    K x K solve); step as far as feasibility allows, fixing the variable that blocks; at a face minimum,
    release the fixed variable whose multiplier has the wrong sign, or stop when none has (the KKT point,
    i.e. the optimum: the problem is convex). Frames still running after ``max_iter`` iterations (none in
    practice) are finished one at a time by scipy's BVLS.
    """

    def __init__(self, A: np.ndarray, max_iter: Optional[int] = None, rtol: float = 1e-9):
        import scipy.linalg as sl

        self.Q, self.R = sl.qr(np.asarray(A, np.float64), mode="economic")
        K = self.R.shape[1]
        H = self.R.T @ self.R
        # a ridge of 1e-13 x the mean diagonal keeps a rank-deficient basis (duplicate channels) solvable;
        # it is far below float64 noise for a full-rank one
        self.H = H + 1e-13 * float(np.trace(H)) / K * np.eye(K)
        self.max_iter = max_iter or 4 * K + 20
        self.rtol = rtol

    def solve(self, d: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, dict]:
        H = self.H
        K = H.shape[0]
        b = (d @ self.Q) @ self.R  # (T, K) = R'Q'd per frame
        w = np.linalg.solve(H, b.T).T
        low, high = w <= lo, w >= hi
        w = np.clip(w, lo, hi)
        # multiplier tolerance: relative to the size of the gradient terms
        tol = self.rtol * (np.abs(b).max(axis=1) + np.abs(H).max() * max(abs(lo), abs(hi), hi - lo))
        at_min = np.zeros(len(w), bool)  # the current point minimises over its face
        todo = np.arange(len(w))
        it = 0
        for it in range(1, self.max_iter + 1):
            if not len(todo):
                break
            wt, lw, hg, am = w[todo], low[todo], high[todo], at_min[todo]
            fixed = lw | hg
            g = wt @ H - b[todo]
            # frames at a face minimum: check the multipliers of the fixed variables
            wrong = np.where(lw, -g, 0.0) + np.where(hg, g, 0.0)  # > 0: the bound holds the optimum back
            worst = wrong.argmax(1)
            done = am & (wrong.max(1, initial=0.0) <= tol[todo])
            if done.any():
                keep = ~done
                todo, wt, lw, hg, am, g, wrong, worst = (x[keep] for x in (todo, wt, lw, hg, am, g, wrong, worst))
                if not len(todo):
                    break
            release = am
            r = np.flatnonzero(release)
            lw[r, worst[r]] = False
            hg[r, worst[r]] = False
            fixed = lw | hg
            # every frame not done: exact minimiser over its free variables
            free = ~fixed
            M = np.where(free[:, :, None] & free[:, None, :], H[None], 0.0) + fixed[:, :, None] * np.eye(K)
            p = -np.linalg.solve(M, np.where(free, g, 0.0)[..., None])[..., 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(free & (p < 0), (lo - wt) / p, np.where(free & (p > 0), (hi - wt) / p, np.inf))
            ratio = np.maximum(ratio, 0.0)
            amax = ratio.min(1)
            alpha = np.minimum(1.0, amax)
            wt = np.where(free, wt + alpha[:, None] * p, wt)
            block = (amax < 1.0)[:, None] & free & (ratio <= amax[:, None] * (1 + 1e-12))
            lw |= block & (p < 0)
            hg |= block & (p > 0)
            wt = np.where(lw, lo, np.where(hg, hi, wt))
            am = amax >= 1.0
            w[todo], low[todo], high[todo], at_min[todo] = wt, lw, hg, am
        fallback = 0
        if len(todo):  # safety net; not reached on the bases we know
            from scipy.optimize import lsq_linear

            c = d[todo] @ self.Q
            for i, t in enumerate(todo):
                w[t] = lsq_linear(self.R, c[i], bounds=(lo, hi), method="bvls", tol=1e-14).x
            fallback = len(todo)
        return w, {"iterations": it, "fallback_frames": fallback}


def read_blendshape_basis(path: Path, space: Space) -> dict[str, np.ndarray]:
    """``meanshape`` (V, 3) and ``blendshape`` (K, 3V) float32 from a basis npz, checked against the space."""
    path = Path(path)
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
    w = _frames(weights, len(names_from), "weight")
    pos = {n: i for i, n in enumerate(names_from)}
    out = np.full((*w.shape[:-1], len(names_to)), float(fill))
    for j, n in enumerate(names_to):
        if n in pos:
            out[..., j] = w[..., pos[n]]
    return out


# ------------------------------------------------------------------------------------------------- FLAME
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
        from . import safepickle

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
    from .fsutil import atomic_path

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
        P = _frames(params, self.n_params, "FLAME parameter")
        lead = P.shape[:-1]
        P = P.reshape(-1, self.n_params)
        out = np.empty((len(P), self.n_vertices, 3))
        for a in range(0, len(P), _CHUNK_FRAMES):
            out[a:a + _CHUNK_FRAMES] = flame_lbs(self.model, *self.split(P[a:a + _CHUNK_FRAMES]))
        return out.reshape(*lead, self.n_vertices, 3)


# ------------------------------------------------------------------------------------------------- API
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
    from . import _torch_spaces

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
        m = _frames(motion, space.dim, f"{space.name} vertex")
        return m.reshape(*m.shape[:-1], -1, 3)
    return conv.to_vertices(motion)
