"""Streaming prediction files into the scorer: pooled reusable buffers, a background sha256 of every byte
read, and an ``.npy`` reader that reads rows straight into those buffers.

Takes: checked :class:`~.predictions.PredFile` headers. Gives: row blocks of each file, and each file's digest
(the predictions fingerprint of the results JSON)."""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Any, Optional

import numpy as np

from ..errors import PredictionError
from .predictions import PredFile


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
