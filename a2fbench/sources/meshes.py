"""Topology files as the sources publish them: PLY (ASCII or binary, e.g. CodeTalker's ``BIWI.ply``, VOCA's
``FLAME_sample.ply``) and Wavefront OBJ (MeshTalk's ``face_template.obj``).

Takes: one mesh file. Gives: its vertices (V, 3) float64 and triangles (F, 3) int64 (polygons are split into
fans; OBJ's ``v/vt/vn`` references keep the vertex index). No third-party mesh library: ``prepare`` needs the
faces, and trimesh is an optional extra.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import RawDataError
from ..store.templates import Template
from ..util.guard import show

#: the ``/vt/vn`` part of an OBJ face corner
_REF = re.compile(r"/[^\s]*")
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices (V, 3) float64, faces (F, 3) int64)`` of a ``.ply`` or ``.obj`` file."""
    p = Path(path)
    if not p.is_file():
        raise RawDataError(f"{p}: expected a mesh file (.ply or .obj), found nothing")
    try:
        if p.suffix.lower() == ".ply":
            v, f = _read_ply(p.read_bytes())
        elif p.suffix.lower() == ".obj":
            v, f = _read_obj(p.read_text(encoding="utf-8", errors="replace"))
        else:
            raise ValueError(f"unknown mesh suffix {p.suffix!r}")
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, StopIteration) as e:
        raise RawDataError(f"{show(p)}: expected a readable PLY or OBJ mesh, found a broken file ({show(e)}); "
                           "re-download it") from None
    if len(v) == 0 or len(f) == 0:
        raise RawDataError(f"{p}: expected vertices and faces, found {len(v)} vertices and {len(f)} faces")
    if f.min() < 0 or f.max() >= len(v):
        raise RawDataError(f"{p}: expected face indices in [0, {len(v)}), found [{f.min()}, {f.max()}]")
    if not np.isfinite(v).all():
        raise RawDataError(f"{p}: expected finite vertex coordinates, found NaN or inf")
    return v, f


def _fans(polys: list[list[int]]) -> np.ndarray:
    """Polygons (3+ corners) -> triangles (a, b, c), (a, c, d), ..."""
    tris = [(q[0], q[k], q[k + 1]) for q in polys for k in range(1, len(q) - 1)]
    return np.asarray(tris, np.int64).reshape(-1, 3)


def _read_obj(text: str) -> tuple[np.ndarray, np.ndarray]:
    fast = _read_obj_triangles(text)
    return fast if fast is not None else _read_obj_lines(text)


def _read_obj_triangles(text: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The common OBJ in one pass per kind (a BIWI template: 23k ``v``, 47k ``f``, ~10x faster than line by
    line): every ``v`` line with exactly x y z and every ``f`` a triangle of positive indices. Numbers are parsed
    by numpy's text reader (correctly rounded, as ``float()``); anything else returns None (the line-by-line
    reader handles it)."""
    lines = text.splitlines()
    v = "\n".join(ln[2:] for ln in lines if ln.startswith("v "))
    f = _REF.sub("", "\n".join(ln[2:] for ln in lines if ln.startswith("f ")))
    try:  # numpy's C reader: a row with another number of columns or a non-number is a ValueError
        xyz = np.loadtxt(io.StringIO(v), np.float64, comments=None, ndmin=2) if v else np.zeros((0, 3))
        idx = np.loadtxt(io.StringIO(f), np.int64, comments=None, ndmin=2) if f else np.zeros((0, 3), np.int64)
    except ValueError:
        return None
    if xyz.shape[1] != 3 or idx.shape[1] != 3 or (idx.size and idx.min() < 1):
        return None
    return xyz.reshape(-1, 3), (idx - 1).reshape(-1, 3)


def _read_obj_lines(text: str) -> tuple[np.ndarray, np.ndarray]:
    verts, polys = [], []
    for line in text.splitlines():
        if line.startswith("v "):
            verts.append([float(t) for t in line.split()[1:4]])
        elif line.startswith("f "):
            idx = [int(t.split("/")[0]) for t in line.split()[1:]]
            polys.append([i - 1 if i > 0 else len(verts) + i for i in idx])  # 1-based, or negative = relative
    return np.asarray(verts, np.float64).reshape(-1, 3), _fans(polys)


def _read_ply(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError("no PLY header")
    body = data[data.index(b"\n", end) + 1:]
    fmt, elements = "", []  # elements: [name, count, [(prop, type) | (prop, count type, item type)]]
    for raw in data[:end].decode("ascii", "replace").splitlines()[1:]:
        tok = raw.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            if int(tok[2]) < 0:
                raise ValueError(f"element {tok[1]!r} with a negative count {tok[2]}")
            elements.append([tok[1], int(tok[2]), []])
        elif tok[0] == "property":
            elements[-1][2].append((tok[-1], tok[2], tok[3]) if tok[1] == "list" else (tok[-1], tok[1]))
    if fmt == "ascii":
        return _ply_ascii(body, elements)
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unknown PLY format {fmt!r}")
    return _ply_binary(body, elements, "<" if fmt == "binary_little_endian" else ">")


def _ply_ascii(body: bytes, elements: list) -> tuple[np.ndarray, np.ndarray]:
    lines = body.decode("ascii", "replace").splitlines()
    verts, faces, at = None, None, 0
    for name, count, props in elements:
        if at + count > len(lines):  # a header that promises more rows than the body holds
            raise ValueError(f"the header declares {count} {name} rows, the body holds {len(lines) - at}")
        rows = [line.split() for line in lines[at:at + count]]
        at += count
        if name == "vertex":
            names = [p[0] for p in props]
            cols = [names.index(c) for c in "xyz"]
            verts = np.asarray([[float(r[c]) for c in cols] for r in rows], np.float64).reshape(-1, 3)
        elif name == "face":
            if len(props) != 1 or len(props[0]) != 3:
                raise ValueError("face element must hold one list property")
            faces = _fans([[int(t) for t in r[1:1 + int(r[0])]] for r in rows])
    if verts is None or faces is None:
        raise ValueError("PLY without vertex or face element")
    return verts, faces


def _ply_binary(body: bytes, elements: list, order: str) -> tuple[np.ndarray, np.ndarray]:
    pos, verts, faces = 0, None, None
    for name, count, props in elements:
        if all(len(p) == 2 for p in props):  # scalar properties only: one structured read
            dt = np.dtype([(p[0], order + _PLY_TYPES[p[1]]) for p in props])
            arr = np.frombuffer(body, dt, count, pos)
            pos += dt.itemsize * count
            if name == "vertex":
                verts = np.stack([arr[c].astype(np.float64) for c in "xyz"], axis=1)
            continue
        if name != "face" or len(props) != 1:
            raise ValueError(f"element {name!r} with list properties is not supported")
        _, ctype, itype = props[0]
        cdt, idt = np.dtype(order + _PLY_TYPES[ctype]), np.dtype(order + _PLY_TYPES[itype])
        first = int(np.frombuffer(body, cdt, 1, pos)[0]) if count else 3
        row = np.dtype([("n", cdt), ("i", idt, (first,))])
        arr = np.frombuffer(body, row, count, pos) if len(body) - pos >= row.itemsize * count else None
        if arr is not None and (arr["n"] == first).all():  # every face has the same corner count: vectorised
            polys = arr["i"].astype(np.int64)
            pos += row.itemsize * count
            faces = polys if first == 3 else _fans(polys.tolist())
        else:  # mixed polygons: one face at a time
            lst = []
            for _ in range(count):
                n = int(np.frombuffer(body, cdt, 1, pos)[0])
                pos += cdt.itemsize
                lst.append(np.frombuffer(body, idt, n, pos).astype(np.int64).tolist())
                pos += idt.itemsize * n
            faces = _fans(lst)
    if verts is None or faces is None:
        raise ValueError("PLY without vertex or face element")
    return verts, faces


# ------------------------------------------------------------------------- a user's template mesh
class TemplateError(RawDataError):
    """A template mesh that cannot be used with the chosen head."""


def _template_vertices(p: Path) -> np.ndarray:
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise TemplateError(f"{p}: expected a numeric .npy of vertices, found an unreadable file ({e})") from None
    if suffix in (".obj", ".ply"):
        try:
            verts, _faces = read_mesh(p)  # vertex order as in the file
        except RawDataError as e:
            raise TemplateError(str(e)) from None
        return verts
    raise TemplateError(f"{p}: expected a template as .npy, .obj or .ply, found {suffix or 'no suffix'}")


def read_template_file(path: str | os.PathLike, n_vertices: int, what: str) -> Template:
    """A user's own neutral mesh (``unitalker infer --template``): ``.npy`` as (V, 3) or (3V,), ``.obj`` or ``.ply``
    (vertex order kept as in the file), in the native units of the head's dataset, as a :class:`Template` of
    (3V,) float64 values; ``n_vertices`` is the head's count, ``what`` names the head."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TemplateError(f"--template {p}: expected a mesh file, found nothing; check the path")
    v = _template_vertices(p)
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
    return Template(v, "file", str(p.resolve()))
