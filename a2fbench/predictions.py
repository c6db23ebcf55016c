"""The predictions folder: names, shapes, validation, streamed reading and an atomic writer.

A folder ``PRED/`` holds one ``.npy`` per sequence of the evaluated split:

* ``<seq_id>.npy``, or
* ``<seq_id>_condition_<subject>.npy`` (FaceFormer / CodeTalker naming; the subject whose style was used).

Which files count (``docs/metrics.md``, "Predictions"): a plain ``<seq_id>.npy`` if present; otherwise the
own-subject condition ``<seq_id>_condition_<its subject>.npy`` (Test-A, seen subjects); otherwise, for an unseen
subject (BIWI Test-B, VOCASET test), every condition present, and the sequence is scored as the mean over its
conditions. A plain file together with condition files for the same sequence is ambiguous and an error.

Arrays: ``(T, 3V)`` or ``(T, V, 3)`` vertices in the dataset's units, or ``(T, P)`` parameters for a parameter
space (converted to vertices with the space's converter, like the ground truth). Any float dtype; loaded with
``allow_pickle=False``. Every problem is an :class:`~a2fbench.errors.PredictionError` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .errors import PredictionError
from .fsutil import write_npy

log = logging.getLogger(__name__)

CONDITION_SEP = "_condition_"
_SAFE_ID = re.compile(r"^[^/\\\x00]+$")


def prediction_name(seq_id: str, condition: Optional[str] = None) -> str:
    """File name of a prediction: ``<seq_id>.npy`` or ``<seq_id>_condition_<condition>.npy``."""
    return f"{seq_id}{CONDITION_SEP}{condition}.npy" if condition else f"{seq_id}.npy"


def write_prediction(pred_dir: str | os.PathLike, seq_id: str, array: np.ndarray,
                     condition: Optional[str] = None) -> Path:
    """Write one prediction atomically as ``PRED/<seq_id>.npy`` (or the ``_condition_`` name); returns the path.

    ``array``: ``(T, 3V)``, ``(T, V, 3)`` or ``(T, P)``, finite floats; torch tensors are accepted.
    """
    if not _SAFE_ID.match(seq_id) or seq_id.startswith(".") or (condition and not _SAFE_ID.match(condition)):
        raise PredictionError(f"expected a sequence id usable as a file name, found {seq_id!r}")
    if hasattr(array, "detach"):  # torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.dtype.kind != "f":
        raise PredictionError(f"{seq_id}: expected a float array, found dtype {a.dtype}")
    if a.ndim not in (2, 3) or a.shape[0] == 0 or (a.ndim == 3 and a.shape[2] != 3):
        raise PredictionError(f"{seq_id}: expected (T, D) or (T, V, 3) with T > 0, found shape {a.shape}")
    if not np.isfinite(a).all():
        raise PredictionError(f"{seq_id}: expected finite values, found NaN or inf; fix the model output")
    target = Path(pred_dir) / prediction_name(seq_id, condition)
    write_npy(target, a)
    return target


# ------------------------------------------------------------------------------------------- reading
@dataclass
class PredFile:
    """One prediction file, its header already checked."""

    path: Path
    seq_id: str
    condition: Optional[str]
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data
    kind: str = "vertices"  # or "parameters"

    @property
    def n_frames(self) -> int:
        return int(self.shape[0])

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])


@dataclass
class PredictionSet:
    """The files to score, per sequence in split order, plus what was ignored."""

    root: Path
    files: dict[str, list[PredFile]]  # seq_id -> the files that count (1, or one per condition)
    ignored: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return sum(len(v) for v in self.files.values())


def read_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of an ``.npy`` file, without reading its data."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise PredictionError(f"{path}: expected a NumPy .npy file, found an unreadable one ({e}); "
                              "save predictions with numpy.save") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), int(offset)


def _shorten(names: Sequence[str], n: int = 5) -> str:
    s = ", ".join(names[:n])
    return s + (f" and {len(names) - n} more" if len(names) > n else "")


def scan(pred_dir: str | os.PathLike, seq_ids: Sequence[str], subjects: dict[str, str], *, n_vertices: int,
         n_params: Optional[int] = None, ignore_extra: bool = False, what: str = "the split") -> PredictionSet:
    """Match a predictions folder to the sequences ``seq_ids`` and check every header (no data read).

    ``subjects`` maps sequence id -> subject (own-subject conditions). ``n_params``: width of a parameter
    space (None for vertex spaces). Raises :class:`PredictionError` (one line) on any mismatch.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise PredictionError(f"expected a predictions folder at {root}, found "
                              f"{'a file' if root.exists() else 'nothing'}; pass the folder of <seq_id>.npy files")
    hidden, others, npys = [], [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            hidden.append(p.name)
        elif p.suffix == ".npy" and p.is_file():
            npys.append(p)
        else:
            others.append(p.name + ("/" if p.is_dir() else ""))
    if hidden:
        log.info("%s: ignoring %d hidden entries (%s)", root, len(hidden), _shorten(hidden, 3))
    if others:
        raise PredictionError(f"{root}: expected only .npy files, found {len(others)} other entries "
                              f"({_shorten(others)}); move them out of the predictions folder")
    if not npys:
        raise PredictionError(f"{root}: expected one .npy per sequence of {what} ({len(seq_ids)} sequences, e.g. "
                              f"{prediction_name(seq_ids[0]) if seq_ids else '<seq_id>.npy'}), found an empty folder")
    wanted = set(seq_ids)
    plain: dict[str, Path] = {}
    conds: dict[str, dict[str, Path]] = {}
    extra: list[str] = []
    for p in npys:
        stem = p.name[:-4]
        if stem in wanted:
            plain[stem] = p
        elif CONDITION_SEP in stem and stem.rsplit(CONDITION_SEP, 1)[0] in wanted:
            sid, cond = stem.rsplit(CONDITION_SEP, 1)
            conds.setdefault(sid, {})[cond] = p
        else:
            extra.append(p.name)
    chosen: dict[str, list[tuple[Path, Optional[str]]]] = {}
    missing = []
    for sid in seq_ids:
        c = conds.get(sid, {})
        if sid in plain and c:
            raise PredictionError(f"{root}: both {sid}.npy and {len(c)} {sid}{CONDITION_SEP}*.npy files; expected "
                                  "one kind per sequence; remove one")
        if sid in plain:
            chosen[sid] = [(plain[sid], None)]
        elif subjects.get(sid) in c:
            own = subjects[sid]
            chosen[sid] = [(c[own], own)]
            extra += [c[k].name for k in sorted(c) if k != own]
        elif c:
            chosen[sid] = [(c[k], k) for k in sorted(c)]
        else:
            missing.append(sid)
    if missing:
        raise PredictionError(f"{root}: missing predictions for {len(missing)} of {len(seq_ids)} sequences of {what}: "
                              f"{_shorten(missing)}; expected <seq_id>.npy or <seq_id>{CONDITION_SEP}<subject>.npy")
    if extra:
        if not ignore_extra:
            raise PredictionError(f"{root}: {len(extra)} files do not belong to {what}: {_shorten(sorted(extra))}; "
                                  "remove them or pass --ignore-extra")
        log.info("%s: ignoring %d files that do not belong to %s: %s", root, len(extra), what, _shorten(sorted(extra)))
    files = {sid: [_check_header(p, sid, cond, n_vertices, n_params) for p, cond in chosen[sid]] for sid in seq_ids}
    return PredictionSet(root, files, sorted(extra))


def _check_header(path: Path, sid: str, cond: Optional[str], n_vertices: int, n_params: Optional[int]) -> PredFile:
    shape, fortran, dtype, offset = read_header(path)
    if dtype.hasobject:
        raise PredictionError(f"{path}: expected a numeric float array, found an object array (pickled Python "
                              "objects are not loaded); save a float32/float64 ndarray")
    if dtype.kind != "f":
        raise PredictionError(f"{path}: expected a float array, found dtype {dtype}; save float32 or float64")
    V = n_vertices
    want = f"(T, {3 * V}) or (T, {V}, 3)" + (f" vertices or (T, {n_params}) parameters" if n_params else "")
    if len(shape) == 2 and shape[1] == 3 * V or len(shape) == 3 and shape[1:] == (V, 3):
        kind = "vertices"
    elif n_params and len(shape) == 2 and shape[1] == n_params:
        kind = "parameters"
    else:
        found_v = ""
        if len(shape) == 3 and shape[2] == 3:
            found_v = f" ({shape[1]} vertices, expected V={V})"
        elif len(shape) == 2 and shape[1] % 3 == 0 and shape[1] != n_params:
            found_v = f" ({shape[1] // 3} vertices if xyz-flattened, expected V={V})"
        raise PredictionError(f"{path}: expected shape {want}, found {shape}{found_v}")
    if shape[0] == 0:
        raise PredictionError(f"{path}: expected at least one frame, found an empty array")
    return PredFile(path, sid, cond, shape, dtype, fortran, offset, kind)


class BufferPool:
    """Reusable arrays for streamed reads (fresh large arrays cost page faults and kernel zeroing).

    ``take`` hands out a :class:`Lease` on a free buffer of that shape, or a new one when all are out (never
    blocks: the pipeline's bounded queues bound how many are out); a buffer comes back when every holder has
    released it.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, queue.SimpleQueue] = {}
        self._lock = threading.Lock()

    def take(self, rows: int, row_shape: tuple[int, ...], dtype: np.dtype, holders: int = 1) -> "Lease":
        key = (int(rows), tuple(row_shape), np.dtype(dtype).str)
        with self._lock:
            q = self._free.setdefault(key, queue.SimpleQueue())
        try:
            buf = q.get_nowait()
        except queue.Empty:
            buf = np.empty((key[0], *key[1]), key[2])
        return Lease(buf, q, holders)


class Lease:
    """A pooled buffer shared by ``holders`` users; returned to its pool by the last :meth:`release`."""

    def __init__(self, buf: np.ndarray, home: Optional[Any], holders: int):
        self.buf, self.home, self.left = buf, home, holders
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self.left -= 1
            done = self.left == 0
        if done and self.home is not None:
            self.home.put(self.buf)


class HashWorker:
    """sha256 updates in one background thread, in the order queued (hashlib releases the GIL).

    At most ``max_pending`` buffers wait (back-pressure on the reader); an optional callback runs after each
    update (to release a pooled buffer). Call :meth:`close` before reading any digest.
    """

    def __init__(self, max_pending: int = 2):
        self.q: queue.Queue = queue.Queue(max_pending)
        self.t = threading.Thread(target=self._run, name="a2fbench-sha256", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            item[0].update(item[1])
            if item[2] is not None:
                item[2]()

    def update(self, h: Any, data: Any, done: Optional[Any] = None) -> None:
        self.q.put((h, data, done))

    def close(self) -> None:
        if self.t.is_alive():
            self.q.put(None)
            self.t.join()


class NpyReader:
    """Read an ``.npy`` file's rows in order, hashing every byte of the file (sha256) as it goes.

    Memory is one chunk. ``read(n, check=True)`` refuses NaN/inf (callers that check later pass False).
    Fortran-ordered files are read whole. With a :class:`HashWorker` the hashing runs in its thread.
    """

    def __init__(self, pf: PredFile, hasher: Optional[HashWorker] = None):
        self.pf = pf
        self.h = hashlib.sha256()
        self.hasher = hasher
        self.f = open(pf.path, "rb")
        self._update(self.f.read(pf.offset))
        self.row_items = int(np.prod(pf.row_shape))
        self.pos = 0
        self._whole: Optional[np.ndarray] = None
        if pf.fortran:
            data = self.f.read()
            self._update(data)
            n = pf.n_frames * self.row_items * pf.dtype.itemsize
            if len(data) < n:
                self._truncated()
            self._whole = np.ndarray(pf.shape, pf.dtype, buffer=data[:n], order="F")

    def _update(self, data: Any, done: Optional[Any] = None) -> None:
        if self.hasher is not None:
            self.hasher.update(self.h, data, done)
        else:
            self.h.update(data)
            if done is not None:
                done()

    def _truncated(self) -> None:
        raise PredictionError(f"{self.pf.path}: expected {self.pf.n_frames} frames as its header says, found a "
                              "truncated file; write it again")

    def read(self, n: int, check: bool = True) -> np.ndarray:
        """The next ``n`` rows, ``(n, *row_shape)``, in a new array."""
        out, _ = self.read_leased(n, None, check)
        return out

    def read_leased(self, n: int, pool: Optional[BufferPool], check: bool = True, holders: int = 1,
                    rows: Optional[int] = None) -> tuple[np.ndarray, Lease]:
        """The next ``n`` rows in a buffer from ``pool`` (new if None) and the lease to release after use.

        Pooled buffers have ``rows`` rows (the caller's chunk size; default ``n``). The hasher holds the buffer
        too until it has hashed it; ``holders`` counts the caller's own users.
        """
        n = min(n, self.pf.n_frames - self.pos)
        if self._whole is not None:
            out = np.ascontiguousarray(self._whole[self.pos:self.pos + n])
            lease = Lease(out, None, holders)
        else:
            if pool is None:
                lease = Lease(np.empty((n, *self.pf.row_shape), self.pf.dtype), None, holders + 1)
            else:
                lease = pool.take(max(rows or n, n, 1), self.pf.row_shape, self.pf.dtype, holders + 1)
            out = lease.buf[:n]
            buf = memoryview(out).cast("B")
            if self.f.readinto(buf) != buf.nbytes:
                lease.release()
                self._truncated()
            self._update(buf, lease.release)
        if check:
            check_finite(out, self.pf.path, self.pos)
        self.pos += n
        return out, lease

    def finish(self, chunk_rows: int = 256) -> Any:
        """Read (and check) the rows not scored; returns the sha256 object (its digest is final once the
        :class:`HashWorker`, if any, is closed)."""
        while self.pos < self.pf.n_frames:
            self.read(chunk_rows)
        rest = self.f.read()
        if rest:
            self._update(rest)
        self.close()
        return self.h

    def close(self) -> None:
        self.f.close()


def check_finite(x: np.ndarray, path: Any, first_frame: int = 0) -> None:
    """Raise :class:`PredictionError` naming ``path`` and the frame if ``x`` (frames first) has NaN or inf."""
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1))[0]) + first_frame
        raise PredictionError(f"{path}: expected finite values, found NaN or inf at frame {bad}; fix the model output")


def fingerprint(digests: dict[str, str]) -> str:
    """``sha256:`` over the sorted ``name  sha256`` lines of the scored files."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}  {digests[name]}\n".encode())
    return "sha256:" + h.hexdigest()
