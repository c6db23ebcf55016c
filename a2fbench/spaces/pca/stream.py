"""The rows of the data matrix, streamed in bounded blocks: the source protocol, an in-memory source, and
the reader that turns float64 source blocks into shifted float32 GEMM blocks, one pass at a time.

Takes: a :class:`Source`. Gives: per pass, float32 ``(gemm_rows, D)`` blocks centred on a fixed shift, with the
column sums and sum of squares of pass 1 (the mean and the total variance, exactly)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np

from ...errors import SpaceError
from ...util.threads import prefetch
from .model import DEFAULT_BLOCK_ROWS, DEFAULT_GEMM_ROWS


class Source(Protocol):
    """Rows of the data matrix, streamed: ``blocks()`` yields float64 arrays of at most ``block_rows`` rows,
    each valid until the next is requested (the reader may modify them in place)."""

    name: str
    n_rows: int
    dim: int

    def blocks(self) -> Iterator[np.ndarray]: ...


class ArraySource:
    """An in-memory (N, D) array as a source (tests, small data)."""

    def __init__(self, X: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS, name: str = "array"):
        self.X = np.asarray(X)
        if self.X.ndim != 2:
            raise SpaceError(f"expected a 2-D (frames, dim) array, found shape {self.X.shape}")
        self.n_rows, self.dim = self.X.shape
        self.block_rows = block_rows
        self.name = name

    def blocks(self) -> Iterator[np.ndarray]:
        for a in range(0, self.n_rows, self.block_rows):
            yield np.array(self.X[a:a + self.block_rows], np.float64)  # a copy: the reader centres in place


class Reader:
    """Streams float32 row blocks centred on a fixed shift, one pass at a time (see :meth:`blocks`).

    Pass 1 reads the source (float64), takes the shift from the first block (its mean row), accumulates the
    column sums and the sum of squares of the shifted rows in float64, checks for NaN (the source raises), and
    casts to float32. With ``spill`` it also writes the float32 blocks to a scratch file, which later passes
    read instead of the source (half the bytes of float64, no HDF5 overhead); otherwise they re-read the
    source. The queue holds one block: memory is a few blocks whatever the number of rows.
    """

    def __init__(self, source: Source, spill: Optional[Path] = None, gemm_rows: int = DEFAULT_GEMM_ROWS):
        self.source = source
        self.spill = spill
        self.gemm_rows = gemm_rows
        self.shift: Optional[np.ndarray] = None
        self.colsum = np.zeros(source.dim)
        self.sumsq = 0.0
        self.rows = 0
        self._spilled: list[int] = []

    def _ring(self) -> Iterator[np.ndarray]:
        """Reused float32 (gemm_rows, D) buffers, cycling through 3: one being filled, one queued, one in the
        consumer's hands (``prefetch`` holds one item). Consumers must not keep a block past the next."""
        bufs = [np.empty((self.gemm_rows, self.source.dim), np.float32) for _ in range(RING)]
        for i in itertools.count():
            yield bufs[i % RING]

    def _coalesce(self, pieces: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """float32 blocks of ``gemm_rows`` rows (the last shorter) from float64 pieces, cast while copying."""
        ring = self._ring()
        out = next(ring)
        n = 0
        for x in pieces:
            a = 0
            while a < len(x):
                m = min(len(x) - a, self.gemm_rows - n)
                out[n:n + m] = x[a:a + m]
                n += m
                a += m
                if n == self.gemm_rows:
                    yield out
                    out = next(ring)
                    n = 0
        if n:
            yield out[:n]

    def _first_pieces(self) -> Iterator[np.ndarray]:
        for x in self.source.blocks():
            if self.shift is None:
                self.shift = x.mean(axis=0)
            x = np.subtract(x, self.shift, out=x if x.flags.writeable else None)
            ss = float(np.einsum("ij,ij->", x, x))
            if not np.isfinite(ss):
                where = self.source.locate_nonfinite() if hasattr(self.source, "locate_nonfinite") else "a row"
                raise SpaceError(f"{self.source.name}: expected finite motion, found NaN or inf in {where}; "
                                 "fix the source file and re-run `a2fbench prepare`")
            self.sumsq += ss
            self.colsum += np.ones(len(x)) @ x
            self.rows += len(x)
            yield x

    def _first_pass(self) -> Iterator[np.ndarray]:
        f = open(self.spill, "wb") if self.spill is not None else None
        try:
            for x32 in self._coalesce(self._first_pieces()):
                if f is not None:
                    x32.tofile(f)
                    self._spilled.append(len(x32))
                yield x32
        finally:
            if f is not None:
                f.close()

    def _later_pass(self) -> Iterator[np.ndarray]:
        assert self.shift is not None
        if self.spill is None:
            yield from self._coalesce(np.subtract(x, self.shift, out=x if x.flags.writeable else None)
                                      for x in self.source.blocks())
            return
        ring = self._ring()
        with open(self.spill, "rb", buffering=0) as f:
            for n in self._spilled:
                out = next(ring)[:n]
                if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                    raise SpaceError(f"scratch file {self.spill} is shorter than written; is the disk full?")
                yield out

    def blocks(self, first: bool, background: bool = True) -> Iterator[np.ndarray]:
        """One pass. ``background``: read in a thread, overlapping the consumer (right when the consumer's
        work runs elsewhere, as on a GPU). On the CPU, read in the consumer's thread: a third busy thread beside
        BLAS's two on a 2-core machine slowed the GEMMs by about three times the reading it hid (D0 stand-in:
        pass 1 took 44 s overlapped, 31 s in turn). The page-cache readahead thread still overlaps the disk."""
        it = self._first_pass() if first else self._later_pass()
        return prefetch(it, name="a2fbench-pca-reader") if background else it


RING = 3  # reused float32 GEMM blocks: filling, queued, in use
