"""glTF 2.0 binary (``.glb``) export of facial animation as morph-target weights.

One file holds the base mesh (POSITION, NORMAL, triangle indices), K morph targets (per-vertex POSITION
displacements) and one animation whose sampler drives the node's ``weights``::

    frame(t) = base + sum_k weights[t, k] * targets[k]

* Blendshape heads: ``base`` = neutral, ``targets`` = the 52 ARKit deltas, ``weights`` = (T, 52) activations;
  the names go into ``mesh.extras.targetNames`` (three.js ``morphTargetDictionary``, Blender shape keys).
* Vertex heads: ``targets`` = PCA components as displacements, ``weights`` = PCA coefficients, ``base`` =
  template + PCA mean offset. The file grows with K * V + T * K, not T * V: a 60 s VOCASET clip with
  K = 512 is ~35 MB instead of T meshes. :func:`fit_pca_basis` builds such a basis from a (T, V, 3)
  sequence when the dataset has none; :func:`export_pca_glb` takes a dataset PCA (components, mean).

Everything is stored as little-endian float32 (indices uint16 when they fit, else uint32). The sampler is
LINEAR with one keyframe per frame at ``t / fps`` seconds, so a player that samples at frame times reproduces
the frames exactly up to float32 rounding. POSITION accessors (base and targets) carry the min/max the spec
requires. The file is written under a temporary name beside the target and renamed into place; on any error
the temporary file is removed and an existing file at ``path`` is left untouched.

numpy and the standard library only.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .files import atomic_file

__all__ = [
    "PCABasis",
    "export_pca_glb",
    "export_vertex_sequence_glb",
    "fit_pca_basis",
    "vertex_normals",
    "write_morph_glb",
]

_GLB_MAGIC, _GLB_VERSION = 0x46546C67, 2  # b"glTF"
_CHUNK_JSON, _CHUNK_BIN = 0x4E4F534A, 0x004E4942  # b"JSON", b"BIN\0"
_FLOAT, _USHORT, _UINT = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values; glTF accessors must be finite")


def vertex_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit, area-weighted vertex normals (float64); vertices in no face (or only in degenerate
    faces) get (0, 0, 1) so every NORMAL is unit length as glTF requires."""
    p = np.asarray(positions, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])  # length = 2 * area
    n = np.zeros_like(p)
    for c in range(3):
        for ax in range(3):
            n[:, ax] += np.bincount(f[:, c], weights=fn[:, ax], minlength=len(p))
    length = np.linalg.norm(n, axis=1)
    ok = length > 1e-30
    n[ok] /= length[ok, None]
    n[~ok] = (0.0, 0.0, 1.0)
    return n


def write_morph_glb(path: str | os.PathLike, template: np.ndarray, faces: np.ndarray, targets: np.ndarray,
                    weights: np.ndarray, fps: float, target_names: Sequence[str] | None = None, *,
                    name: str = "face", normals: bool = True, extras: dict | None = None,
                    fsync: bool = True) -> Path:
    """Write one ``.glb``: base mesh + K morph targets + one weights animation at ``fps``.

    template: (V, 3) base positions (for PCA: template + mean offset). faces: (F, 3) 0-based triangles.
    targets: (K, V, 3) displacement per unit weight. weights: (T, K), one row per frame (keyframe at
    ``t / fps`` s, LINEAR). target_names: K unique names for ``mesh.extras.targetNames`` (default
    ``pc000``...). extras: JSON-able dict stored in ``asset.extras`` (fps and frame count are always stored).
    K = 0 writes a static mesh without animation. Returns the path written.
    """
    path = Path(path)
    base = np.asarray(template, dtype=np.float64)
    if base.ndim != 2 or base.shape[1] != 3 or len(base) == 0:
        raise ValueError(f"template must be (V, 3) with V >= 1, got shape {base.shape}")
    n_vert = len(base)
    tri = np.asarray(faces)
    if tri.ndim != 2 or tri.shape[1] != 3 or len(tri) == 0 or not np.issubdtype(tri.dtype, np.integer):
        raise ValueError(f"faces must be (F, 3) integers with F >= 1, got shape {tri.shape} dtype {tri.dtype}")
    if tri.min() < 0 or tri.max() >= n_vert:
        raise ValueError(f"faces index outside 0..{n_vert - 1} (found {tri.min()}..{tri.max()})")
    tgt = np.ascontiguousarray(targets, dtype="<f4")
    if tgt.ndim != 3 or tgt.shape[1:] != (n_vert, 3):
        raise ValueError(f"targets must be (K, {n_vert}, 3), got shape {tgt.shape}")
    n_tgt = tgt.shape[0]
    w = np.ascontiguousarray(weights, dtype="<f4")
    if w.ndim != 2 or w.shape[1] != n_tgt or len(w) == 0:
        raise ValueError(f"weights must be (T, {n_tgt}) with T >= 1, got shape {w.shape}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    names = [f"pc{k:03d}" for k in range(n_tgt)] if target_names is None else [str(s) for s in target_names]
    if len(names) != n_tgt or len(set(names)) != n_tgt:
        raise ValueError(f"target_names must be {n_tgt} unique names, got {len(names)} ({len(set(names))} unique)")
    _finite("template", base)
    _finite("targets", tgt)
    _finite("weights", w)

    pos32 = np.ascontiguousarray(base, dtype="<f4")
    views: list[tuple[np.ndarray, int | None, int | None]] = []  # (array, target, byteStride)
    accessors: list[dict] = []

    def add(arr: np.ndarray, target: int | None = None, stride: int | None = None) -> int:
        views.append((arr, target, stride))
        return len(views) - 1

    def vec3_minmax(a: np.ndarray) -> dict:  # float32 values -> exact doubles in JSON
        return {"min": [float(x) for x in a.min(axis=0)], "max": [float(x) for x in a.max(axis=0)]}

    attributes = {"POSITION": len(accessors)}
    accessors.append({"bufferView": add(pos32, _ARRAY_BUFFER), "componentType": _FLOAT, "count": n_vert,
                      "type": "VEC3", **vec3_minmax(pos32)})
    if normals:
        nrm = np.ascontiguousarray(vertex_normals(base, tri), dtype="<f4")
        attributes["NORMAL"] = len(accessors)
        accessors.append({"bufferView": add(nrm, _ARRAY_BUFFER), "componentType": _FLOAT, "count": n_vert,
                          "type": "VEC3"})
    idx_dtype, idx_ct = ("<u2", _USHORT) if n_vert <= 65535 else ("<u4", _UINT)  # 65535 = restart value
    idx = np.ascontiguousarray(tri, dtype=idx_dtype).reshape(-1)
    primitive: dict = {"attributes": attributes, "indices": len(accessors), "mode": 4}
    accessors.append({"bufferView": add(idx, _ELEMENT_ARRAY_BUFFER), "componentType": idx_ct,
                      "count": int(idx.size), "type": "SCALAR"})
    gltf: dict = {
        "asset": {"version": "2.0", "generator": "a2fbench outputs.gltf",
                  "extras": {"fps": float(fps), "frames": len(w), **(extras or {})}},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "primitives": [primitive]}],
    }
    if n_tgt:
        # All targets share one bufferView (stride 12, as the spec requires when attribute accessors share
        # a view); accessor k starts at k * V * 12 bytes. One reduction pass gives every target's min/max.
        tview = add(tgt.reshape(-1), _ARRAY_BUFFER, 12)
        # per-target min/max over vertices: reduce a (K, 3, V) copy along its contiguous last axis (a reduction
        # over the middle axis of (K, V, 3) runs numpy's inner loop over 3 values: ~5x slower at K = 512)
        tk = np.ascontiguousarray(tgt.transpose(0, 2, 1))
        tmin, tmax = tk.min(axis=2), tk.max(axis=2)
        primitive["targets"] = []
        for k in range(n_tgt):
            primitive["targets"].append({"POSITION": len(accessors)})
            accessors.append({"bufferView": tview, "byteOffset": k * n_vert * 12, "componentType": _FLOAT,
                              "count": n_vert, "type": "VEC3", "min": [float(x) for x in tmin[k]],
                              "max": [float(x) for x in tmax[k]]})
        mesh = gltf["meshes"][0]
        mesh["weights"] = [0.0] * n_tgt
        mesh["extras"] = {"targetNames": names}
        times = (np.arange(len(w), dtype=np.float64) / float(fps)).astype("<f4")
        if len(times) > 1 and not np.all(np.diff(times) > 0):
            raise ValueError(f"{len(w)} frames at {fps} fps give keyframe times float32 cannot keep increasing")
        t_acc = len(accessors)
        accessors.append({"bufferView": add(times), "componentType": _FLOAT, "count": len(times),
                          "type": "SCALAR", "min": [float(times[0])], "max": [float(times[-1])]})
        accessors.append({"bufferView": add(w.reshape(-1)), "componentType": _FLOAT, "count": int(w.size),
                          "type": "SCALAR"})
        gltf["animations"] = [{"name": "speech",
                               "samplers": [{"input": t_acc, "output": t_acc + 1, "interpolation": "LINEAR"}],
                               "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}]

    buffer_views, offset, pieces = [], 0, []
    for arr, target, stride in views:
        offset += -offset % 4  # every view starts 4-byte aligned (float32 / uint32 alignment)
        nbytes = arr.nbytes
        bv = {"buffer": 0, "byteOffset": offset, "byteLength": nbytes}
        if target is not None:
            bv["target"] = target
        if stride is not None:
            bv["byteStride"] = stride
        buffer_views.append(bv)
        pieces.append((offset, arr))
        offset += nbytes
    bin_len = offset
    gltf["accessors"], gltf["bufferViews"] = accessors, buffer_views
    gltf["buffers"] = [{"byteLength": bin_len}]
    js = json.dumps(gltf, separators=(",", ":"), allow_nan=False).encode("utf-8")
    js += b" " * (-len(js) % 4)
    bin_padded = bin_len + (-bin_len % 4)
    total = 12 + 8 + len(js) + 8 + bin_padded
    if total >= 2 ** 32:
        raise ValueError(f"GLB would be {total} bytes; the format caps files below 4 GiB (reduce K or T)")

    with atomic_file(path, fsync=fsync) as fh:
        fh.write(struct.pack("<III", _GLB_MAGIC, _GLB_VERSION, total))
        fh.write(struct.pack("<II", len(js), _CHUNK_JSON))
        fh.write(js)
        fh.write(struct.pack("<II", bin_padded, _CHUNK_BIN))
        pos = 0
        for start, arr in pieces:
            fh.write(b"\0" * (start - pos))
            fh.write(memoryview(arr).cast("B"))  # no copy: arrays are C-contiguous little-endian
            pos = start + arr.nbytes
        fh.write(b"\0" * (bin_padded - pos))
    return path


class PCABasis(NamedTuple):
    """Result of :func:`fit_pca_basis`. ``frames ~= mean + einsum('tk,kvc->tvc', weights, targets)``."""

    mean: np.ndarray              # (V, 3) float64
    targets: np.ndarray           # (K, V, 3) float32 displacement per unit weight
    weights: np.ndarray           # (T, K) float32
    singular_values: np.ndarray   # (r,) singular values of the centred data, descending ("gram": > 1e-7 s_0)
    rms_error: float              # sqrt(mean over frames and vertices of |error|^2), from the spectrum
    max_error: float              # largest per-vertex Euclidean error over all frames (measured, K terms)
    tolerance_met: bool           # False when max_components (or the rank) capped K before the tolerance


class _Spectrum:
    """Thin SVD of the centred (T, D) matrix ``xc``: all singular values ``s`` up front, singular vectors
    on demand (``rows(n)`` -> U[:, :n], Vt[:n]), so only the components actually kept are projected.

    ``gram`` eigendecomposes the smaller Gram matrix (method of snapshots): the same U, s, Vt up to signs
    for every component with s_k > 1e-7 s_0 (smaller ones are dropped: the Gram matrix squares the
    condition number); several times faster than LAPACK's SVD on (1800, 15069). ``svd``: numpy's SVD."""

    def __init__(self, xc: np.ndarray, method: str) -> None:
        self.xc, self.method = xc, method
        if method == "svd":
            self.u, self.s, self.vt = np.linalg.svd(xc, full_matrices=False)
            return
        self.wide = xc.shape[0] <= xc.shape[1]
        ev, vec = np.linalg.eigh(xc @ xc.T if self.wide else xc.T @ xc)
        s = np.sqrt(np.clip(ev[::-1], 0.0, None))
        self.s = s[s > s[0] * 1e-7] if len(s) and s[0] > 0 else s[:0]
        self.vec = vec[:, ::-1][:, :len(self.s)]
        self.u, self.vt = np.zeros((xc.shape[0], 0)), np.zeros((0, xc.shape[1]))

    def rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        have = self.vt.shape[0]
        if self.method == "gram" and n > have:
            v, s = self.vec[:, have:n], self.s[have:n]
            if self.wide:  # vec holds U: Vt = U^T Xc / s
                u, vt = v, (v.T @ self.xc) / s[:, None]
            else:          # vec holds V: U = Xc V / s
                u, vt = (self.xc @ v) / s[None, :], v.T
            self.u, self.vt = np.hstack([self.u, u]), np.vstack([self.vt, vt])
        return self.u[:, :n], self.vt[:n]


def _max_vertex_error(r: np.ndarray) -> float:
    r3 = r.reshape(r.shape[0], -1, 3)
    return float(np.sqrt(np.einsum("tvc,tvc->tv", r3, r3).max())) if r.size else 0.0


def fit_pca_basis(frames: np.ndarray, max_error: float = 1e-5, max_components: int = 512, *,
                  criterion: str = "max", standardize: bool = True, method: str = "gram") -> PCABasis:
    """PCA morph basis for a (T, V, 3) sequence: the fewest components (<= ``max_components``) whose
    reconstruction error is <= ``max_error`` (same unit as ``frames``, e.g. metres).

    criterion ``"max"``: largest per-vertex Euclidean error over all frames (measured by reconstruction,
    galloping + bisection search starting at the ``"rms"`` answer, which is a lower bound since max >= rms;
    the error is not strictly monotone in K, so the K returned is verified but may not be the minimum).
    ``"rms"``: root-mean-square per-vertex error, exact from the singular values.
    standardize: weights get unit variance over the clip (targets scaled by each component's std), which
    keeps them within Blender's shape-key range of [-10, 10]; else targets are the orthonormal components
    and weights the raw coefficients. method: ``"gram"`` (default, fast) or ``"svd"`` (numpy SVD).
    """
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3 or len(x) == 0:
        raise ValueError(f"frames must be (T, V, 3) with T >= 1, got shape {x.shape}")
    if criterion not in ("max", "rms") or method not in ("gram", "svd") or max_components < 0:
        raise ValueError("criterion must be 'max' or 'rms', method 'gram' or 'svd', max_components >= 0")
    _finite("frames", x)
    n_t, n_v = x.shape[:2]
    flat = x.reshape(n_t, -1)
    mean = flat.mean(axis=0)
    xc = flat - mean
    spec = _Spectrum(xc, method)
    s = spec.s
    kept = np.concatenate([[0.0], np.cumsum(s ** 2)])  # kept[k] = sum_{i<k} s_i^2
    total_sq = float(np.einsum("ij,ij->", xc, xc))
    # residual energy of K components = |Xc|^2 - kept[K] (this also counts what the rank cut dropped)
    rms = np.sqrt(np.maximum(total_sq - kept, 0.0) / (n_t * n_v))
    cap = min(int(max_components), len(s))
    ok = np.nonzero(rms[: cap + 1] <= max_error)[0]
    k = int(ok[0]) if len(ok) else cap
    if criterion == "max":
        xc32 = xc.astype(np.float32)

        def drop(r: np.ndarray, a: int, b: int) -> np.ndarray:
            if b <= a:
                return r
            u, vt = spec.rows(b)
            return r - (u[:, a:b] * s[a:b]).astype(np.float32) @ vt[a:b].astype(np.float32)

        r_lo, lo = drop(xc32, 0, k), k
        if _max_vertex_error(r_lo) > max_error:  # galloping search upward, then bisection in (lo, hi]
            hi, step = None, max(1, k // 4)
            while lo < cap:
                cand = min(lo + step, cap)
                r_c = drop(r_lo, lo, cand)
                if _max_vertex_error(r_c) <= max_error:
                    hi = cand
                    break
                lo, r_lo, step = cand, r_c, step * 2
            if hi is None:
                k = cap
            else:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    r_m = drop(r_lo, lo, mid)
                    if _max_vertex_error(r_m) <= max_error:
                        hi = mid
                    else:
                        lo, r_lo = mid, r_m
                k = hi
        del xc32, r_lo
    u, vt = spec.rows(k)
    max_err = _max_vertex_error(xc - (u * s[:k]) @ vt) if k else _max_vertex_error(xc)
    if standardize and k:
        sd = s[:k] / np.sqrt(n_t)  # coefficient c_k(t) = u[t,k] s_k has zero mean and std s_k / sqrt(T)
        weights, targets = u * np.sqrt(n_t), vt * sd[:, None]
    else:
        weights, targets = u * s[:k], vt
    met = (max_err if criterion == "max" else float(rms[k])) <= max_error
    return PCABasis(mean.reshape(n_v, 3), targets.reshape(k, n_v, 3).astype(np.float32),
                    weights.astype(np.float32), s, float(rms[k]), max_err, bool(met))


def export_vertex_sequence_glb(path: str | os.PathLike, frames: np.ndarray, faces: np.ndarray, fps: float, *,
                               max_error: float = 1e-5, max_components: int = 512, criterion: str = "max",
                               fsync: bool = True) -> PCABasis:
    """Vertex sequence (T, V, 3) without a dataset PCA -> ``.glb`` via :func:`fit_pca_basis`; the base
    mesh is the clip's mean shape. Returns the basis (its errors say how faithful the file is)."""
    basis = fit_pca_basis(frames, max_error, max_components, criterion=criterion)
    write_morph_glb(path, basis.mean, faces, basis.targets, basis.weights, fps, fsync=fsync,
                    extras={"pca": {"components": len(basis.targets), "max_error": basis.max_error,
                                    "rms_error": basis.rms_error, "criterion": criterion}})
    return basis


def export_pca_glb(path: str | os.PathLike, faces: np.ndarray, mean: np.ndarray, components: np.ndarray,
                   coefficients: np.ndarray, fps: float, *, template: np.ndarray | None = None,
                   standardize: bool = False, fsync: bool = True) -> Path:
    """Dataset PCA -> ``.glb``: ``frame = [template +] mean + coefficients @ components`` (the PCA's
    decode). mean: (D,) or (V, 3); components: (K, D) rows; coefficients: (T, K). With ``template`` the
    PCA is of displacements and ``template + mean`` is the base. standardize: divide each weight column by
    its std over the clip and scale its target by it (same frames, weights near [-10, 10] for Blender)."""
    comp = np.asarray(components)
    n_k = comp.shape[0]
    m = np.asarray(mean, dtype=np.float64).reshape(-1, 3)
    base = m if template is None else np.asarray(template, dtype=np.float64).reshape(-1, 3) + m
    tgt = comp.reshape(n_k, len(m), 3)
    w = np.asarray(coefficients, dtype=np.float64)
    if standardize:
        sd = w.std(axis=0)
        sd[~(sd > 0)] = 1.0
        tgt, w = tgt * sd[:, None, None], w / sd
    return write_morph_glb(path, base, faces, tgt, w, fps, fsync=fsync, extras={"pca": {"components": n_k}})
