"""The raw BIWI B3D(AC)^2 corpus, read and processed as CodeTalker's ``BIWI/data_preprocess`` does, in numpy.

Formats (docs/datasets.md, D0, says where each fact comes from):

* ``.vl`` frame: a little-endian unsigned vertex count N, then N x (x, y, z) float32 (MATLAB's
  ``fread(fid, [3, N], 'float')`` reads them column-major, i.e. vertex after vertex). The width of the count is
  not documented (MATLAB ``'ulong'``): 4 bytes when the file is 4 + 12 N bytes long, 8 when it is 8 + 12 N;
  any other size is a damaged file.
* a take: the frames ``frame_NNN.vl``, numbered 1..T without a gap (CodeTalker's Python reads
  ``frame_001`` .. ``frame_<count>``), in an extracted folder or in a ``.tar`` / ``.tgz`` / ``.tar.gz``.
  Inside an archive only the member's base name counts (any folder prefix is accepted), because the layout
  inside the real archives is not documented.

Processing (``creatDataset_BIWI.m``, ``process_BIWI_template.m``, ``MESH.compute_normalize``), float64 from
the float32 read on: ``V * rotx(pi)`` with MATLAB's own matrix (cos(pi) = -1, sin(pi) = 1.22e-16), centring on
the frame's own vertex mean, division by the square root of the frame's own total mixed-Voronoi vertex area
with the subject's ``.obj`` triangles. The mixed-Voronoi areas of ``cotLaplacian.m`` tile each triangle
(Voronoi parts when no angle is obtuse; area/2, /4, /4 when one is), so their total is the total triangle
area: that closed form is what is computed (tests compare it with a line-by-line mixed-Voronoi reference).

Takes: ``.vl`` bytes, take folders and archives, an ``.obj``. Gives: (T, N, 3) float32 frames and the processed
(T, 3N) float64 motion; every damage is a :class:`RawDataError` naming the file (and the frame).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import RawDataError
from .meshes import read_mesh

#: vertices of the BIWI tracked face (CodeTalker BIWI/README.md)
N_VERTICES = 23370
#: take files in the order they are tried: an extracted folder first, then the archives (README: "the .tar
#: archives contain a .vl file for each frame")
TAKE_SUFFIXES = ("", ".tar", ".tgz", ".tar.gz")
_FRAME = re.compile(r"^frame_(\d+)\.vl$")
#: MATLAB's rotx(pi): cos and sin of pi in IEEE double, as MATLAB computes them
_C, _S = float(np.cos(np.pi)), float(np.sin(np.pi))
#: frames per block of work: bounds the temporaries (a (3, N) copy per frame; the triangle buffers are per thread)
_CHUNK = 8
#: threads processing blocks of frames (frames are independent; numpy's loops release the GIL)
THREADS = min(4, os.cpu_count() or 1)


def parse_vl(buf: bytes, where: str, n_expected: int = N_VERTICES) -> np.ndarray:
    """One ``.vl`` frame -> (N, 3) float32 (a copy); ``where`` names the file in errors."""
    return _vl_view(buf, where, n_expected).copy()


def _vl_view(buf: bytes | memoryview, where: str, n_expected: int = N_VERTICES) -> np.ndarray:
    """One ``.vl`` frame -> a read-only (N, 3) float32 view of ``buf``, checked (:func:`parse_vl`)."""
    size = len(buf)
    for width in (4, 8):
        if size >= width:
            n = int.from_bytes(buf[:width], "little")
            if size == width + 12 * n:
                break
    else:
        n4 = int.from_bytes(buf[:4], "little") if size >= 4 else None
        raise RawDataError(f"{where}: expected a .vl frame of 4 + 12 x {n_expected} = {4 + 12 * n_expected} bytes "
                           f"(a vertex count then float32 xyz), found {size} bytes"
                           f"{f' with a count of {n4}' if n4 is not None else ''}; the file is truncated or damaged, "
                           "restore the take (see `a2fbench doctor D0`)")
    if n != n_expected:
        raise RawDataError(f"{where}: expected {n_expected} vertices (the BIWI face), found {n}; this is not a BIWI "
                           "tracked-face frame")
    return np.frombuffer(buf, "<f4", 3 * n, width).reshape(n, 3)


def take_path(folder: Path, take: str) -> Optional[Path]:
    """The file or folder holding a take's frames in ``faces/<subj>/`` (first of :data:`TAKE_SUFFIXES`)."""
    for suf in TAKE_SUFFIXES:
        p = folder / f"{take}{suf}"
        if (p.is_dir() if suf == "" else p.is_file()):
            return p
    return None


def take_name(p: Path) -> Optional[str]:
    """``e01`` of ``e01``, ``e01.tar``, ``e01.tgz``, ``e01.tar.gz``; None for anything else."""
    name = p.name
    for suf in sorted(TAKE_SUFFIXES, key=len, reverse=True):
        if suf and name.endswith(suf) and p.is_file():
            return name[: -len(suf)]
    return name if p.is_dir() else None


def _frame_number(name: str) -> Optional[int]:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    m = _FRAME.match(base)
    return int(m.group(1)) if m and not base.startswith("._") else None


def _collect(src: Path, pairs: list[tuple[str, int, bytes]]) -> list[bytes]:
    """Frames 1..T in order from (name, number, bytes); a gap, a duplicate or no frame is an error."""
    if not pairs:
        raise RawDataError(f"{src}: expected frame_NNN.vl files, found none; this take holds no frames, restore it "
                           "(see `a2fbench doctor D0`)")
    by: dict[int, str] = {}
    for name, k, _ in pairs:
        if k in by:
            raise RawDataError(f"{src}: expected one file per frame number, found frame {k} twice ({by[k]} and "
                               f"{name}); remove one")
        by[k] = name
    T = len(pairs)
    missing = [k for k in range(1, T + 1) if k not in by]
    if missing:
        k = missing[0]
        raise RawDataError(f"{src}: expected frames frame_001.vl .. frame_{T:03d}.vl without a gap, found "
                           f"frame_{k:03d}.vl missing ({len(missing)} missing); CodeTalker reads frames 1..count in "
                           "order, restore the take (see `a2fbench doctor D0`)")
    data = {k: b for _, k, b in pairs}
    return [data[k] for k in range(1, T + 1)]


def _record_sha256(digests: Optional[dict[Path, str]], path: Path, data: bytes,
                   hasher: Optional[ThreadPoolExecutor]) -> None:
    if digests is None:
        return
    if hasher is None:
        digests[path] = hashlib.sha256(data).hexdigest()
    else:  # on the hasher's thread (hashlib releases the GIL) while the caller goes on
        hasher.submit(lambda: digests.__setitem__(path, hashlib.sha256(data).hexdigest()))


def read_take_bytes(src: Path, digests: Optional[dict[Path, str]] = None,
                    hasher: Optional[ThreadPoolExecutor] = None) -> list[bytes | memoryview]:
    """The raw bytes of each frame of a take (folder or archive), frames 1..T in order. An archive is read
    once, front to back, whatever order its members are stored in; an uncompressed ``.tar`` is read into memory
    in one piece and its members are views of it (no copy). Memory holds one take. With ``digests``, the
    sha256 of each file read (the archive, or each ``.vl`` of a folder) is recorded there, from the same bytes
    (on ``hasher``'s thread if given: the caller waits for it before reading ``digests``)."""
    pairs: list[tuple[str, int, bytes | memoryview]] = []
    if src.is_dir():
        for p in sorted(src.rglob("*.vl")):
            k = _frame_number(p.name)
            b = p.read_bytes()
            _record_sha256(digests, p, b, hasher)
            if k is not None:
                pairs.append((str(p.relative_to(src)), k, b))
        return _collect(src, pairs)
    try:
        data = src.read_bytes()
        _record_sha256(digests, src, data, hasher)
        bio = io.BytesIO(data)
        with tarfile.open(fileobj=bio, mode="r:*") as tf:
            whole = memoryview(data) if tf.fileobj is bio else None  # a plain tar: members are slices of it
            for m in tf:
                k = _frame_number(m.name) if m.isfile() and not m.issparse() else None
                if k is None:
                    continue
                if whole is not None:
                    b = whole[m.offset_data: m.offset_data + m.size]
                else:
                    fh = tf.extractfile(m)
                    b = fh.read() if fh is not None else b""
                if len(b) != m.size:
                    raise EOFError(f"member {m.name} ends after {len(b)} of {m.size} bytes")
                pairs.append((m.name, k, b))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise RawDataError(f"{src}: expected a readable .tar/.tgz of frame_NNN.vl files, found an unreadable or "
                           f"truncated archive ({e}); restore it (see `a2fbench doctor D0`)") from None
    return _collect(src, pairs)


def read_take_frames(src: Path, n_vertices: int = N_VERTICES, digests: Optional[dict[Path, str]] = None,
                     hasher: Optional[ThreadPoolExecutor] = None) -> list[np.ndarray]:
    """A take's frames as read-only (N, 3) float32 views of the bytes read (checked as :func:`parse_vl` does);
    ``digests`` and ``hasher`` as in :func:`read_take_bytes`."""
    return [_vl_view(b, f"{src}: frame_{i + 1:03d}.vl", n_vertices)
            for i, b in enumerate(read_take_bytes(src, digests, hasher))]


def read_take(src: Path, n_vertices: int = N_VERTICES) -> np.ndarray:
    """A take's frames as (T, N, 3) float32, as stored (see :func:`parse_vl`)."""
    frames = read_take_frames(src, n_vertices)
    out = np.empty((len(frames), n_vertices, 3), np.float32)
    for i, v in enumerate(frames):
        out[i] = v
    return out


# ------------------------------------------------------------------------------------------ processing
def triangle_area_total(X: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Total triangle area of each frame of (..., N, 3) points, in float64: the total of the mixed-Voronoi
    vertex areas of ``cotLaplacian.m`` (module doc), |(p1 - p2) x (p1 - p3)| / 2 per triangle, summed."""
    X = np.asarray(X)
    lead = X.shape[:-2]
    flat = X.reshape((-1,) + X.shape[-2:])
    kernel = _Frame(faces, X.shape[-2])
    out = np.array([kernel.area(kernel.load(x)) for x in flat], np.float64)
    return out.reshape(lead)


class _Frame:
    """CodeTalker's processing of one frame with buffers made once per mesh (one per thread).

    ``load`` widens a frame to float64 and makes it coordinate-major (3, N) in one copy. ``area`` is the total
    triangle area of those (raw) coordinates: the area does not change under rotx(pi) and centring, so it is
    computed before them. All nine triangle-corner coordinates come from one gather (triangles sorted by their
    corners, for locality; the order is fixed by the mesh alone), then the edges u = p1 - p2, v = p1 - p3, the
    cross product, its norm and the sum over the triangles run on contiguous rows. ``finish`` applies rotx(pi), the centring on the frame's own mean and the
    division by sqrt(area) on the rows and writes them back vertex-major.
    """

    def __init__(self, faces: np.ndarray, n: int):
        f = np.asarray(faces, np.intp).reshape(-1, 3)
        if f.size and (f.min() < 0 or f.max() >= n):
            raise RawDataError(f"expected triangle corners in [0, {n}), found [{f.min()}, {f.max()}]")
        f = f[np.lexsort((f[:, 2], f[:, 1], f[:, 0]))]
        F = len(f)
        self.n = n
        self.idx = np.concatenate([c * n + f[:, k] for k in range(3) for c in range(3)])
        self.C, self.y, self.w = np.empty((3, n)), np.empty(n), np.empty(n)
        self.g, self.u, self.v = np.empty((3, 3, F)), np.empty((3, F)), np.empty((3, F))
        self.cr, self.a = np.empty((3, F)), np.empty(F)

    def load(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self.C, x.T)
        return self.C

    def area(self, C: np.ndarray) -> float:
        g, u, v, cr, a = self.g, self.u, self.v, self.cr, self.a
        np.take(C.reshape(-1), self.idx, out=g.reshape(-1), mode="clip")  # indices checked in __init__
        np.subtract(g[0], g[1], out=u)  # u = p1 - p2, v = p1 - p3
        np.subtract(g[0], g[2], out=v)
        for i, (p, q) in enumerate(((1, 2), (2, 0), (0, 1))):  # n_i = u_p v_q - u_q v_p
            np.multiply(u[p], v[q], out=cr[i])
            np.multiply(u[q], v[p], out=a)
            np.subtract(cr[i], a, out=cr[i])
        np.multiply(cr, cr, out=cr)
        np.add(cr[0], cr[1], out=a)  # (nx^2 + ny^2) + nz^2
        np.add(a, cr[2], out=a)
        np.sqrt(a, out=a)
        return float(a.sum()) / 2

    def finish(self, C: np.ndarray, area: float, out: np.ndarray) -> None:
        y, t = self.y, self.w
        np.copyto(y, C[1])  # row vector times MATLAB's rotx(pi): y' = c y + s z, z' = -s y + c z
        np.multiply(C[1], _C, out=C[1])
        C[1] += np.multiply(C[2], _S, out=t)
        np.multiply(C[2], _C, out=C[2])
        C[2] -= np.multiply(y, _S, out=t)
        C -= C.sum(axis=1, keepdims=True) / self.n  # the frame's own mean (MATLAB's mean(V): sum / n)
        C /= np.sqrt(area)
        np.copyto(out, C.T)

    def __call__(self, x: np.ndarray, out: np.ndarray) -> None:
        C = self.load(x)
        self.finish(C, self.area(C), out)


def process_frames(frames, faces: np.ndarray, out: np.ndarray) -> None:
    """CodeTalker's processing of each frame of ``frames`` (a sequence of (N, 3) arrays of any float dtype)
    into ``out`` (T, N, 3) float64. Frames are independent: blocks of :data:`_CHUNK` frames run on up to
    :data:`THREADS` threads (numpy releases the GIL); each frame's arithmetic is the same whatever the thread."""
    T = len(frames)
    n = out.shape[1]
    blocks = [range(a, min(a + _CHUNK, T)) for a in range(0, T, _CHUNK)]
    workers = min(THREADS, len(blocks))
    local = threading.local()

    def run(blk: range) -> None:
        k = getattr(local, "kernel", None)
        if k is None:
            k = local.kernel = _Frame(faces, n)
        for i in blk:
            k(frames[i], out[i])

    if workers <= 1:
        for blk in blocks:
            run(blk)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, blocks))


def codetalker_normalise(V: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """CodeTalker's BIWI processing of one mesh (N, 3) or of frames (T, N, 3): rotx(pi), centre on the frame's
    own mean, divide by sqrt(its own total area). Returns float64 of the same shape (see :func:`process_frames`)."""
    V = np.asarray(V)
    one = V.ndim == 2
    X = V[None] if one else V
    out = np.empty(X.shape, np.float64)
    process_frames(X, faces, out)
    return out[0] if one else out


def read_template(path: Path, n_vertices: int = N_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """A subject's ``rigid_scans/<subj>.obj``: (processed template (N, 3) float64, triangles (F, 3) int64).
    The vertices are read from the text as doubles (MATLAB ``sscanf('%f')``), the triangles from the vertex
    index of each ``f v/vt`` corner."""
    v, f = read_mesh(path)
    if len(v) != n_vertices:
        raise RawDataError(f"{path}: expected the {n_vertices}-vertex BIWI template, found {len(v)} vertices; restore "
                           "the subject's rigid_scans .obj")
    return codetalker_normalise(v, f), f
