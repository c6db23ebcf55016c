"""Helpers for the output tests: a small grid mesh, an independent GLB parser, and the Khronos glTF validator.

The validator and three.js come from ``tools/js/node_modules`` (``npm ci`` in ``tools/js``; ``.ci/run`` does it).
Tests that need them skip with the reason :func:`js_missing` gives.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
JS_TOOLS = REPO / "tools" / "js"
NODE_MODULES = JS_TOOLS / "node_modules"


def grid_mesh(rows: int = 8, cols: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy rows x cols vertex grid (metres-sized) and its 2 (rows-1)(cols-1) triangles."""
    xs, ys = np.meshgrid(np.linspace(-0.08, 0.08, cols), np.linspace(-0.1, 0.1, rows))
    verts = np.stack([xs.ravel(), ys.ravel(), 0.05 * np.cos(10 * xs.ravel())], axis=1)
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (i * cols + j).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + cols], 1), np.stack([a + 1, a + cols + 1, a + cols], 1)])
    return verts, faces


_NP = {5126: "<f4", 5125: "<u4", 5123: "<u2", 5121: "u1"}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def read_glb(path: Path) -> tuple[dict, bytes]:
    """Parse a GLB by hand (header, JSON chunk, BIN chunk); no exporter code involved."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and length == len(data)
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    gltf = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942 and blen % 4 == 0 and 28 + jlen + blen == len(data)
    return gltf, data[28 + jlen:28 + jlen + blen]


def accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` as a numpy array of shape (count, ncomp), honouring byteOffset/byteStride."""
    acc = gltf["accessors"][index]
    bv = gltf["bufferViews"][acc["bufferView"]]
    dt = np.dtype(_NP[acc["componentType"]])
    ncomp = _NCOMP[acc["type"]]
    stride = bv.get("byteStride", dt.itemsize * ncomp)
    start = bv.get("byteOffset", 0) + acc.get("byteOffset", 0)
    assert start % dt.itemsize == 0
    count = acc["count"]
    assert acc.get("byteOffset", 0) + stride * (count - 1) + dt.itemsize * ncomp <= bv["byteLength"]
    assert stride == dt.itemsize * ncomp  # our files are tightly packed
    return np.frombuffer(binary, dtype=dt, count=count * ncomp, offset=start).reshape(count, ncomp)


def rebuild(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(frames rebuilt from the file in float64 as base + sum_k w_k target_k, base32, targets32, weights32, gltf)."""
    gltf, binary = read_glb(path)
    prim = gltf["meshes"][0]["primitives"][0]
    base = accessor(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    tg = np.stack([accessor(gltf, binary, t["POSITION"]) for t in prim["targets"]]).astype(np.float64)
    sampler = gltf["animations"][0]["samplers"][0]
    w = accessor(gltf, binary, sampler["output"]).reshape(-1, len(tg)).astype(np.float64)
    frames = base[None] + np.einsum("tk,kvc->tvc", w, tg)
    return frames, base, tg, w, gltf


def js_missing(package: str = "gltf-validator") -> Optional[str]:
    """Why the node-based checks cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH (apt-get install nodejs npm; .ci/run does)"
    if not (NODE_MODULES / package).is_dir():
        return f"npm package {package} is absent (run `npm ci` in {JS_TOOLS}; .ci/run does)"
    return None


def validate(path: Path) -> dict:
    """The Khronos glTF-Validator report (dict) for ``path``, via ``node tools/js/validate.mjs``."""
    proc = subprocess.run(["node", str(JS_TOOLS / "validate.mjs"), str(path), "200"], capture_output=True, text=True,
                          check=False, timeout=300, cwd=JS_TOOLS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
