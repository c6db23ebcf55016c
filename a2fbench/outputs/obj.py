"""Vertex animation -> one Wavefront OBJ per frame (``frame_000000.obj``, ...), written atomically.

Each file holds the frame's ``v x y z`` lines and the template's ``f a b c`` lines (1-based). Text is built
with numpy: every number becomes fixed-point digits by vectorised integer arithmetic (two digits per
divmod, via a 100-entry table) in one byte buffer per file, with no per-line Python; the face block,
identical for every frame, is formatted once.
Numbers are right-aligned in fixed-width fields (``v  0.012345 -0.100000  1.250000``); OBJ readers split on
whitespace, and the parse-back error is at most half a unit in the last decimal.

The whole sequence is written into a temporary folder beside the destination and renamed into place, so the
destination either does not exist or holds every frame; on error the temporary folder is removed.

numpy and the standard library only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from ..util.fsutil import atomic_path
from .files import atomic_file

__all__ = ["ObjSequence", "format_faces", "format_vertices", "write_obj", "write_obj_sequence"]


# "00".."99" as little-endian uint16 pairs of ASCII digits: one divmod by 100 yields two characters
_PAIRS = np.array([(48 + i // 10) | ((48 + i % 10) << 8) for i in range(100)], dtype="<u2")


def _fixed_point(x: np.ndarray, decimals: int) -> np.ndarray:
    """(N,) finite floats -> (N, W) ASCII bytes, right-aligned fixed point with ``decimals`` decimals and
    a sign column; W is the same for all N (enough integer digits for the largest |x|)."""
    mag = np.abs(x) * 10.0 ** decimals
    if mag.size and mag.max() >= 2.0 ** 62:
        raise ValueError(f"|value| up to {np.abs(x).max():g} does not fit {decimals} decimals in int64")
    q = np.rint(mag).astype(np.int64)
    top = int(q.max()) if q.size else 0
    n_digits = max(decimals + 1, len(str(top)))
    n_int = n_digits - decimals
    n_pairs = (n_digits + 1) // 2
    rest = q.astype(np.uint32) if top < 2 ** 32 else q.astype(np.uint64)
    pairs = np.empty((len(q), n_pairs), dtype="<u2")
    for j in range(n_pairs - 1, -1, -1):  # one vectorised pass per digit pair, not per number
        rest, r = np.divmod(rest, 100)
        pairs[:, j] = _PAIRS[r]
    digits = pairs.view(np.uint8)[:, 2 * n_pairs - n_digits:]  # drop the spare leading '0' if odd
    width = 1 + n_int + (1 if decimals else 0) + decimals  # sign + integer digits + '.' + decimals
    out = np.empty((len(q), width), dtype=np.uint8)
    out[:, 0] = ord(" ")
    out[:, 1:1 + n_int] = digits[:, :n_int]
    if decimals:
        out[:, 1 + n_int] = ord(".")
        out[:, 2 + n_int:] = digits[:, n_int:]
    # blank the leading zeros of the integer part (keep its last digit), then put '-' just before the
    # first kept digit of negative numbers (a value that rounds to 0 is written unsigned)
    lead = np.logical_and.accumulate(digits[:, :n_int - 1] == ord("0"), axis=1)
    out[:, 1:n_int][lead] = ord(" ")
    neg = np.nonzero((x < 0) & (q > 0))[0]
    out[neg, lead[neg].sum(axis=1)] = ord("-")
    return out


def format_vertices(vertices: np.ndarray, decimals: int = 6) -> bytes:
    """(V, 3) vertices -> the ``v x y z`` lines of an OBJ file, as bytes."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("vertices hold NaN or infinite values")
    cols = _fixed_point(v.reshape(-1), decimals).reshape(len(v), 3, -1)
    w = cols.shape[2]
    line = np.empty((len(v), 2 + 3 * (w + 1)), dtype=np.uint8)
    line[:, 0] = ord("v")
    for c in range(3):
        line[:, 1 + c * (w + 1)] = ord(" ")
        line[:, 2 + c * (w + 1):2 + c * (w + 1) + w] = cols[:, c]
    line[:, -1] = ord("\n")
    return line.tobytes()


def format_faces(faces: np.ndarray, n_vertices: int) -> bytes:
    """(F, k) 0-based polygon indices -> ``f a b c`` lines (1-based), as bytes."""
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] < 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be (F, k>=3) integers, got shape {f.shape} dtype {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= n_vertices):
        raise ValueError(f"faces index outside 0..{n_vertices - 1} (found {f.min()}..{f.max()})")
    fmt = "f" + " %d" * f.shape[1] + "\n"
    return ((fmt * len(f)) % tuple((f.astype(np.int64) + 1).ravel().tolist())).encode("ascii")


def _write_file(path: Path, *parts: bytes, fsync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as fh:
        for p in parts:
            fh.write(p)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, *, decimals: int = 6,
              fsync: bool = True) -> Path:
    """One OBJ file, written to a temporary name beside ``path`` and renamed into place."""
    path = Path(path)
    body = format_vertices(vertices, decimals) + format_faces(faces, len(vertices))
    with atomic_file(path, fsync=fsync) as fh:
        fh.write(body)
    return path


class ObjSequence(NamedTuple):
    path: Path          # the folder
    files: list[Path]   # frame files in order


def write_obj_sequence(out_dir: str | os.PathLike, frames: Any, faces: np.ndarray, *,
                       decimals: int = 6, prefix: str = "frame_", digits: int = 6, overwrite: bool = False,
                       fsync: bool = False, progress: Optional[Callable[[int], Any]] = None) -> ObjSequence:
    """(T, V, 3) frames -> ``out_dir/{prefix}{i:0{digits}d}.obj`` for every frame, atomically.

    ``frames``: an array, or any sequence of (V, 3) frames (``len`` and ``[t]``), read one frame at a time.
    ``progress``: called with 1 after each file.

    The folder is built beside ``out_dir`` and renamed to ``out_dir`` (:func:`a2fbench.util.fsutil.atomic_path`).
    An existing ``out_dir`` raises FileExistsError unless ``overwrite``: then it is first renamed aside and
    removed after the new folder is in place (``out_dir`` is missing only between those two renames; put back
    if the second fails). The folder holding ``out_dir`` must exist.
    fsync: flush every file and the folders to disk before the rename (durable, slower).
    """
    out = Path(out_dir)
    n = len(frames)
    first = np.asarray(frames[0]) if n else np.zeros((0,))
    if n == 0 or first.ndim != 2 or first.shape[1] != 3:
        raise ValueError(f"frames must be (T, V, 3) with T >= 1, got {n} frames shaped {first.shape}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    width = max(int(digits), len(str(n - 1)))
    face_block = format_faces(faces, first.shape[0])  # identical for every frame: format once
    names = [f"{prefix}{i:0{width}d}.obj" for i in range(n)]
    if not out.absolute().parent.is_dir():  # atomic_path would create it; this package never creates folders
        raise FileNotFoundError(f"{out.absolute().parent}: expected an existing folder, found none")
    with atomic_path(out, is_dir=True, fsync=fsync) as tmp:
        for i, name in enumerate(names):
            v = np.asarray(frames[i])
            if v.shape != first.shape:
                raise ValueError(f"frame {i} is shaped {v.shape}, frame 0 {first.shape}")
            _write_file(tmp / name, format_vertices(v, decimals), face_block, fsync=fsync)
            if progress is not None:
                progress(1)
    return ObjSequence(out, [out / n for n in names])

