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
    v = np.frombuffer(buf, "<f4", 3 * n, width).reshape(n, 3)
    return v.astype(np.float32)


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


def read_take_bytes(src: Path) -> list[bytes]:
    """The raw bytes of each frame of a take (folder or archive), frames 1..T in order. An archive is read
    once, front to back, whatever order its members are stored in; memory holds one take."""
    pairs: list[tuple[str, int, bytes]] = []
    if src.is_dir():
        for p in sorted(src.rglob("*.vl")):
            k = _frame_number(p.name)
            if k is not None:
                pairs.append((str(p.relative_to(src)), k, p.read_bytes()))
        return _collect(src, pairs)
    try:
        with tarfile.open(src, "r:*") as tf:
            for m in tf:
                k = _frame_number(m.name) if m.isfile() else None
                if k is None:
                    continue
                fh = tf.extractfile(m)
                b = fh.read() if fh is not None else b""
                if len(b) != m.size:
                    raise EOFError(f"member {m.name} ends after {len(b)} of {m.size} bytes")
                pairs.append((m.name, k, b))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise RawDataError(f"{src}: expected a readable .tar/.tgz of frame_NNN.vl files, found an unreadable or "
                           f"truncated archive ({e}); restore it (see `a2fbench doctor D0`)") from None
    return _collect(src, pairs)


def read_take(src: Path, n_vertices: int = N_VERTICES) -> np.ndarray:
    """A take's frames as (T, N, 3) float32, as stored (see :func:`parse_vl`)."""
    frames = read_take_bytes(src)
    out = np.empty((len(frames), n_vertices, 3), np.float32)
    for i, b in enumerate(frames):
        out[i] = parse_vl(b, f"{src}: frame_{i + 1:03d}.vl", n_vertices)
    return out


# ------------------------------------------------------------------------------------------ processing
def triangle_area_total(X: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Total triangle area of each frame of (..., N, 3) float64 points: the total of the mixed-Voronoi vertex
    areas of ``cotLaplacian.m`` (module doc). Computed as there: |(p1 - p2) x (p1 - p3)| / 2 per triangle,
    summed over the triangles in their order (numpy's pairwise sum of one frame's contiguous row)."""
    X = np.asarray(X, np.float64)
    lead = X.shape[:-2]
    flat = X.reshape((-1,) + X.shape[-2:])
    kernel = _Area(faces)
    out = np.array([kernel(np.ascontiguousarray(x.T)) for x in flat], np.float64)
    return out.reshape(lead)


class _Area:
    """The total triangle area of one frame given coordinate-major (3, N) float64, with buffers made once per
    mesh: 9 gathers and the cross product in place, element by element the same operations (and so the same
    bits) as ``np.cross`` of the rows would give, then one sum over the triangles."""

    def __init__(self, faces: np.ndarray):
        f = np.asarray(faces, np.intp)
        self.corner = [np.ascontiguousarray(f[:, k]) for k in range(3)]
        F = len(f)
        self.g = np.empty((3, 3, F))  # corner, coordinate, triangle
        self.u, self.v, self.n, self.t = np.empty((3, F)), np.empty((3, F)), np.empty((3, F)), np.empty(F)

    def __call__(self, C: np.ndarray) -> float:
        g, u, v, n, t = self.g, self.u, self.v, self.n, self.t
        for k in range(3):
            for c in range(3):
                np.take(C[c], self.corner[k], out=g[k, c])
        np.subtract(g[0], g[1], out=u)  # u = p1 - p2, v = p1 - p3
        np.subtract(g[0], g[2], out=v)
        for i, (p, q) in enumerate(((1, 2), (2, 0), (0, 1))):  # n_i = u_p v_q - u_q v_p
            np.multiply(u[p], v[q], out=n[i])
            np.multiply(u[q], v[p], out=t)
            np.subtract(n[i], t, out=n[i])
        np.multiply(n, n, out=n)
        np.add(n[0], n[1], out=t)  # (nx^2 + ny^2) + nz^2
        np.add(t, n[2], out=t)
        np.sqrt(t, out=t)
        return float(t.sum()) / 2


def _normalise_block(blk: np.ndarray, kernel: _Area) -> None:
    """CodeTalker's processing of (b, N, 3) float64 frames in place (see :func:`codetalker_normalise`), on a
    coordinate-major copy (contiguous rows: the rotation, the centring and the triangle gathers run on them)."""
    n = blk.shape[1]
    C = np.ascontiguousarray(blk.transpose(0, 2, 1))  # (b, 3, N)
    y, z = C[:, 1].copy(), C[:, 2]
    np.add(y * _C, z * _S, out=C[:, 1])  # row vector times MATLAB's rotx(pi): y' = c y + s z, z' = -s y + c z
    np.add(y * -_S, z * _C, out=C[:, 2])
    # each frame's mean as MATLAB's mean(V) and numpy's mean over the vertices of (b, N, 3) compute it: a
    # running sum over the vertices in order (np.cumsum's last element is exactly that running sum), then / N
    C -= (np.cumsum(C, axis=-1)[..., -1:] / n)
    area = np.array([kernel(C[i]) for i in range(len(C))], np.float64)
    C /= np.sqrt(area)[:, None, None]
    blk[...] = C.transpose(0, 2, 1)


def codetalker_normalise(V: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """CodeTalker's BIWI processing of one mesh (N, 3) or of frames (T, N, 3): rotx(pi), centre on the frame's
    own mean, divide by sqrt(its own total area). Returns float64 of the same shape. Frames are independent:
    blocks of :data:`_CHUNK` frames run on up to :data:`THREADS` threads (numpy releases the GIL)."""
    V = np.asarray(V)
    one = V.ndim == 2
    X = np.array(V[None] if one else V, dtype=np.float64)
    blocks = [X[a: a + _CHUNK] for a in range(0, len(X), _CHUNK)]
    workers = min(THREADS, len(blocks))
    if workers <= 1:
        kernel = _Area(faces)
        for blk in blocks:
            _normalise_block(blk, kernel)
    else:
        local = threading.local()

        def run(blk: np.ndarray) -> None:
            if not hasattr(local, "kernel"):
                local.kernel = _Area(faces)
            _normalise_block(blk, local.kernel)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, blocks))
    return X[0] if one else X


def read_template(path: Path, n_vertices: int = N_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """A subject's ``rigid_scans/<subj>.obj``: (processed template (N, 3) float64, triangles (F, 3) int64).
    The vertices are read from the text as doubles (MATLAB ``sscanf('%f')``), the triangles from the vertex
    index of each ``f v/vt`` corner."""
    v, f = read_mesh(path)
    if len(v) != n_vertices:
        raise RawDataError(f"{path}: expected the {n_vertices}-vertex BIWI template, found {len(v)} vertices; restore "
                           "the subject's rigid_scans .obj")
    return codetalker_normalise(v, f), f
