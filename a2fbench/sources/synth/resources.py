"""The stand-ins for the non-public resource files, in their real formats: region masks (index lists,
weights, pickled dicts), topology meshes (OBJ, PLY), blendshape bases (npz) and a FLAME-2020-like model
pickled with chumpy-style objects."""

from __future__ import annotations

import copyreg
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...registry import space_channels
from .face import FaceModel


def write_index_list(path: Path, idx: np.ndarray, sep: str = ", ") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sep.join(str(int(i)) for i in idx))


def write_weights(path: Path, n: int, idx: np.ndarray) -> None:
    w = np.zeros(n)
    w[idx] = 1.0
    np.savetxt(path, w, fmt="%.18e")


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """A small OBJ or ASCII PLY writer for the stand-in topology files."""
    verts = np.asarray(verts, np.float64)
    if path.suffix == ".obj":
        lines = [f"v {x:.9e} {y:.9e} {z:.9e}" for x, y, z in verts]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
        path.write_text("\n".join(lines) + "\n")
    else:
        head = ["ply", "format ascii 1.0", f"element vertex {len(verts)}", "property double x", "property double y",
                "property double z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
        body = [f"{x:.9e} {y:.9e} {z:.9e}" for x, y, z in verts] + [f"3 {a} {b} {c}" for a, b, c in faces]
        path.write_text("\n".join(head + body) + "\n")


def _region_indices(gen: Any, which: str) -> np.ndarray:
    f = gen.face
    return {"lips": f.lips, "upper": f.upper, "forehead": f.forehead, "eye_region": f.eyes}[which]


def write_resources(gen: Any, root: Path) -> None:
    """Region masks, topology meshes, blendshape bases and the FLAME-like model, in their real formats."""
    spec, space, face = gen.spec, gen.space, gen.face
    mean_tmpl = face.points * gen.scale
    if space.kind == "blendshape":
        write_blendshape_basis(root / (space.basis_file or "basis.npz"), space_channels(space) or [], face, gen.scale)
    if space.kind == "flame":
        write_flame_model(root / (space.model_file or "generic_model.pkl"), face, gen.scale)
    for rs in spec.regions.sets.values():
        for which in ("lips", "upper"):
            src = getattr(rs, which)
            p = root / src.file
            if p.exists() or src.format == "basis_channels":
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            idx = _region_indices(gen, which)
            if src.format == "index_list":
                write_index_list(p, idx, ", " if spec.id == "D0" else ",")
            elif src.format == "index_npy":
                np.save(p, idx.astype(np.int64))
            elif src.format == "weights":
                write_weights(p, len(face.points), idx)
            elif src.format == "pickle_dict":
                masks = {"lips": face.lips, "forehead": face.forehead, "eye_region": face.eyes,
                         "face": np.arange(len(face.points)), "nose": np.flatnonzero(np.abs(face.points[:, 0]) < 0.1)}
                with open(p, "wb") as fh:
                    pickle.dump({k: np.asarray(v, np.int64) for k, v in masks.items()}, fh, protocol=2)
    for f in spec.files():
        if f.is_glob or (root / f.path).exists():
            continue
        if f.path.endswith((".ply", ".obj")):
            write_mesh(root / f.path, mean_tmpl, face.faces)


def write_blendshape_basis(path: Path, channels: list[str], face: FaceModel, scale: float) -> None:
    """An npz in UniTalker's layout: ``meanshape`` (V, 3) and ``blendshape`` (K, 3V) deltas.

    Each channel moves its region with the face's motion fields (jaw, lips, blink, brow, cheek), plus a small
    bump of its own near that region, so that no two channels share a shape: like a real ARKit basis, the
    basis has full rank and weights can be recovered from vertices (``spaces.BlendshapeConverter.to_weights``).
    """
    rng = np.random.default_rng([len(channels), 11])
    F = face.fields
    x, y = face.points[:, 0], face.points[:, 1]
    mouth = (0.0, -0.55)
    deltas = []
    for name in channels:
        side = -1 if name.endswith("Left") else (1 if name.endswith("Right") else 0)
        sidew = np.where(side == 0, 1.0, np.clip(0.5 + side * x * 2, 0, 1))[:, None]
        if name.startswith("jaw"):
            d = F["jaw"] * (1.0 if name == "jawOpen" else 0.3)
            c = (mouth[0], mouth[1] - 0.35)
        elif name in ("mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper"):
            d = -F["spread"] * sidew
            c = mouth
        elif name.startswith("mouth"):
            d = F["spread"] * sidew * (1.0 if "Stretch" in name or "Smile" in name else rng.uniform(0.2, 0.5))
            c = mouth
        elif name.startswith("eye"):
            d = F["blink"] * sidew * (1.0 if "Blink" in name or "Squint" in name else rng.uniform(-0.4, 0.4))
            c = (0.38, 0.42)
        elif name.startswith("brow"):
            d = F["brow"] * sidew * (-1.0 if "Down" in name else 1.0)
            c = (0.35, 0.72)
        elif name.startswith("cheek"):
            d = F["cheek"] * sidew
            c = (0.45, -0.25)
        else:  # nose*, tongueOut
            d = 0.2 * F["cheek"] * sidew
            c = (0.0, -0.05) if name.startswith("nose") else mouth
        cx = (c[0] if side >= 0 else -c[0]) * (1 if side else rng.choice([-1, 1])) + rng.normal(0, 0.12)
        cy = c[1] + rng.normal(0, 0.12)
        bump = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.08**2))
        direction = rng.normal(size=3)
        d = d + 0.5 * max(float(np.abs(d).max()), 0.01) * bump[:, None] * (direction / np.linalg.norm(direction))
        deltas.append((d * scale).reshape(-1))
    np.savez(path, meanshape=(face.points * scale).astype(np.float32),
             blendshape=np.asarray(deltas, np.float32))


def write_flame_model(path: Path, face: FaceModel, scale: float) -> None:
    """A FLAME-2020-like ``generic_model.pkl``: same keys, shapes and pickle form (J_regressor sparse).

    5 joints (global, neck, jaw, left eye, right eye) as FLAME; 300 shape + 100 expression directions whose
    first expression directions are the face's lip/cheek/brow/blink fields; jaw-driven lower face via LBS.
    """
    rng = np.random.default_rng(12)
    V = len(face.points)
    v_template = face.points * scale
    x, y = face.points[:, 0], face.points[:, 1]
    basis = np.stack([np.ones_like(x), x, y, x * y, x**2, y**2], axis=1)  # (V, 6)
    shapedirs = np.zeros((V, 3, 400))
    for k in range(300):
        c = rng.normal(0, 0.01 / (1 + k / 10), size=(6, 3))
        shapedirs[:, :, k] = basis @ c
    for k, name in enumerate(["spread", "cheek", "brow", "blink"]):
        shapedirs[:, :, 300 + k] = face.fields[name] * 0.5
    for k in range(304, 400):
        shapedirs[:, :, k] = basis @ rng.normal(0, 0.001, size=(6, 3))
    shapedirs *= scale
    posedirs = rng.normal(0, 1e-4, size=(V, 3, 36)) * scale
    below = np.clip((-0.53 - y) / 0.25, 0, 1)
    weights = np.zeros((V, 5))
    weights[:, 2] = below
    weights[:, 1] = 1 - below
    groups = [np.arange(V), np.flatnonzero(y < -1.0), np.flatnonzero(np.abs(y + 0.55) < 0.08),
              np.flatnonzero(np.hypot(x + 0.38, y - 0.42) < 0.1), np.flatnonzero(np.hypot(x - 0.38, y - 0.42) < 0.1)]
    rows, cols, vals = [], [], []
    for j, g in enumerate(groups):
        g = g if len(g) else np.arange(V)
        rows += [j] * len(g)
        cols += list(g)
        vals += [1.0 / len(g)] * len(g)
    J_regressor = sp.csc_matrix((vals, (rows, cols)), shape=(5, V))
    model = {
        "f": face.faces.astype(np.uint32),
        "v_template": _ChumpyArray(v_template),  # chumpy objects, as in FLAME 2020's pickle
        "shapedirs": _ChumpyArray(shapedirs),
        "posedirs": _ChumpyArray(posedirs),
        "J_regressor": J_regressor,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": _ChumpyArray(weights),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as fh:
        _ChumpyPickler(fh, protocol=2).dump(model)


class _ChumpyArray:
    """An array that pickles the way a plain ``chumpy.ch.Ch`` does (``NEWOBJ`` of the global ``chumpy.ch Ch``
    with its ``__dict__`` as state, ``x`` holding the values), written without chumpy installed."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float64)

    def __reduce_ex__(self, protocol: int):  # noqa: ANN204


        state = {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False,
                 "_make_sparse": False}
        return (copyreg.__newobj__, (type(self),), state)


class _ChumpyPickler(pickle._Pickler):  # type: ignore[name-defined]  # the Python pickler lets us name the class
    def save_global(self, obj, name=None):  # noqa: ANN001, ANN201
        if obj is _ChumpyArray:
            self.write(pickle.GLOBAL + b"chumpy.ch\nCh\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)
