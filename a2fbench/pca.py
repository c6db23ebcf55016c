"""PCA of a vertex dataset, streamed from the store; ``DATA/<id>/pca.npz`` in UniTalker's layout.

UniTalker decodes its vertex heads (D0..D2) through a PCA of the training motion minus the subject template
(reference-facts §5). :func:`fit_dataset` fits it on the training split, mean-centred, 512 components by
default, reading the store in bounded blocks so that memory does not grow with the dataset.

Method: randomized subspace iteration on the covariance ``M = Xc' Xc`` (Halko, Martinsson & Tropp 2011,
Alg. 4.4) finished by a Nystrom step (Tropp et al. 2017), all in passes over the data:

* pass 1: ``Y = M Omega`` with a seeded Gaussian ``Omega`` (D, L), ``L = K + oversample``; the same pass
  accumulates the column sums and the total sum of squares (float64) that give the mean and the total
  variance. Rows are centred on a shift (the first block's mean) and corrected exactly afterwards, so the
  mean costs no extra pass and no cancellation;
* passes 2..P (power iterations): ``Q = orth(Y)``, ``Y = M Q``;
* finish: the Nystrom approximation ``M ~ Y (Q'Y)^+ Y'`` is diagonalised in float64; its top-K eigenvectors
  are the components, its eigenvalues the variances.

Each pass costs two float32 GEMMs per block (``X Q`` and ``X' (X Q)``), accumulated in float64. Memory is
one float64 read block, a few float32 blocks and (D, L) matrices: independent of the number of frames.
``device="cuda"`` runs the same algorithm in torch on the GPU (blocks are cached on the GPU after the first
pass when they fit), ``device="cpu"`` in numpy. Deterministic for a seed.

Python API::

    path = fit_dataset(DATA, "D1", components=512, device="cpu", seed=0)   # DATA/D1/pca.npz
    p = load(path)               # or load_for(DATA, "D1"), which also checks the store fingerprint
    z = p.encode(x)              # (..., D) -> (..., K); numpy or torch in, same kind out
    x = p.decode(z)              # (..., K') -> (..., D), K' <= K leading components
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

import numpy as np

from .errors import SpaceError, StoreError
from .threads import prefetch

log = logging.getLogger(__name__)

PCA_FILE = "pca.npz"
FORMAT = "a2fbench-pca-1"
UNITALKER_KEYS = ("explained_variance_ratio", "components_to_data", "original_data_mean", "S",
                  "data_components_mean", "data_components_std")
DEFAULT_COMPONENTS = 512
DEFAULT_PASSES = 3
DEFAULT_BLOCK_ROWS = 128  # rows per read from the source (float64)
DEFAULT_GEMM_ROWS = 384  # rows per float32 GEMM block


def default_oversample(k: int) -> int:
    """Extra columns per Krylov block: 16 + K/32 (32 for K = 512). The Krylov space holds P blocks, so the
    Rayleigh-Ritz/Nystrom step already chooses K directions out of P (K + oversample)."""
    return 16 + k // 32


# ------------------------------------------------------------------------------------------- the model
@dataclass
class PCA:
    """A fitted PCA: ``components`` (K, D) orthonormal rows, ``mean`` (D,); see module doc."""

    components: np.ndarray
    mean: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray
    n_samples: int
    meta: dict = field(default_factory=dict)
    _torch: dict = field(default_factory=dict, repr=False)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def explained_variance(self) -> np.ndarray:
        """Variance along each component (divided by N - 1, as scikit-learn)."""
        return self.singular_values.astype(np.float64) ** 2 / max(self.n_samples - 1, 1)

    def _t(self, like: Any) -> tuple[Any, Any]:
        key = (like.device, like.dtype)
        if key not in self._torch:
            import torch

            self._torch[key] = (torch.as_tensor(self.components).to(like.device, like.dtype),
                                torch.as_tensor(self.mean).to(like.device, like.dtype))
        return self._torch[key]

    def encode(self, x: Any, n: Optional[int] = None) -> Any:
        """(..., D) data -> (..., n) coefficients ``(x - mean) @ components[:n].T`` (numpy or torch)."""
        n = self._n(n)
        if _is_torch(x):
            W, mu = self._t(x)
            _check_last(x.shape, self.dim, "data")
            return (x - mu) @ W[:n].T
        a = np.asarray(x)
        _check_last(a.shape, self.dim, "data")
        dt = np.result_type(a.dtype, np.float32)
        return (a.astype(dt, copy=False) - self.mean.astype(dt)) @ self.components[:n].astype(dt).T

    def decode(self, z: Any) -> Any:
        """(..., n) coefficients, n <= K -> (..., D) data ``z @ components[:n] + mean`` (numpy or torch)."""
        n = z.shape[-1] if len(z.shape) else 0
        if not 1 <= n <= self.n_components:
            raise SpaceError(f"expected PCA coefficients of width 1..{self.n_components}, found shape "
                             f"{tuple(z.shape)}; pass (..., K) coefficients")
        if _is_torch(z):
            W, mu = self._t(z)
            return z @ W[:n] + mu
        a = np.asarray(z)
        dt = np.result_type(a.dtype, np.float32)
        return a.astype(dt, copy=False) @ self.components[:n].astype(dt) + self.mean.astype(dt)

    def _n(self, n: Optional[int]) -> int:
        if n is None:
            return self.n_components
        if not 1 <= n <= self.n_components:
            raise SpaceError(f"expected 1..{self.n_components} components, found {n}")
        return int(n)

    def scaled(self, s: float) -> "PCA":
        """The same PCA for data multiplied by ``s`` (UniTalker's per-dataset ``scale``): mean and S scale."""
        meta = dict(self.meta, scaled_by=float(s) * float(self.meta.get("scaled_by", 1.0)))
        return PCA(self.components, (self.mean * s).astype(self.mean.dtype), self.singular_values * abs(s),
                   self.explained_variance_ratio, self.n_samples, meta)

    def to_torch(self, n: Optional[int] = None, dtype: Any = None) -> Any:
        """A ``torch.nn.Module`` with ``encode``/``decode`` (``forward`` = decode) over the first ``n`` components;
        its buffers are non-persistent (not in ``state_dict``)."""
        from ._torch_spaces import TorchPCA

        return TorchPCA(self.components[: self._n(n)], self.mean, dtype=dtype)

    def arrays(self) -> dict[str, np.ndarray]:
        """The UniTalker-layout arrays (float32) plus ``explained_variance`` and the ``meta`` JSON."""
        lam = self.singular_values.astype(np.float64) ** 2
        return {
            "explained_variance_ratio": self.explained_variance_ratio.astype(np.float32),
            "components_to_data": self.components.astype(np.float32),
            "original_data_mean": self.mean.astype(np.float32),
            "S": self.singular_values.astype(np.float32),
            # the training data projected on the components: zero mean by construction, std sqrt(lambda / N)
            "data_components_mean": np.zeros(self.n_components, np.float32),
            "data_components_std": np.sqrt(lam / max(self.n_samples, 1)).astype(np.float32),
            "explained_variance": self.explained_variance.astype(np.float32),
            "meta": np.array([json.dumps(self.meta, sort_keys=True)]),
        }


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _check_last(shape: tuple, d: int, what: str) -> None:
    if len(shape) == 0 or shape[-1] != d:
        raise SpaceError(f"expected {what} of width {d} (shape (..., {d})), found shape {tuple(shape)}; "
                         "pass rows in the PCA's space (motion minus template)")


# ------------------------------------------------------------------------------------------ data sources
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


class DatasetSource:
    """Training motion minus the subject template, read from the store in blocks of ``block_rows`` rows
    (several short sequences fill one block; a long one spans several). The yielded array is reused: it is
    valid until the next one is requested (copy it to keep it)."""

    def __init__(self, ds: Any, split: str = "train", block_rows: int = DEFAULT_BLOCK_ROWS):
        self.ds = ds
        self.split = split
        self.ids = ds.split(split)
        self.dim = int(ds.card["dim"])
        self.n_rows = sum(ds[s].n_frames for s in self.ids)
        self.block_rows = block_rows
        self.name = f"{ds.id} {split}"
        self._templates: dict[str, np.ndarray] = {}

    def template(self, subject: str) -> np.ndarray:
        if subject not in self._templates:
            self._templates[subject] = np.asarray(self.ds.template(subject), np.float64).reshape(-1)
        return self._templates[subject]

    def blocks(self) -> Iterator[np.ndarray]:
        from .store import STORE_FILE

        ra = _Readahead(self.ds.path / STORE_FILE, self.n_rows)
        try:
            yield from self._blocks(ra)
        finally:
            ra.stop()

    def _blocks(self, ra: "_Readahead") -> Iterator[np.ndarray]:
        # One reused buffer, filled in place by the store (fresh multi-MB arrays cost a page fault per 4 KiB on
        # first touch).
        buf = np.empty((self.block_rows, self.dim))
        n = 0
        for sid in self.ids:
            seq = self.ds[sid]
            tm = self.template(seq.subject)
            ra.consumed(seq.n_frames)
            a = 0
            while a < seq.n_frames:
                b = min(seq.n_frames, a + self.block_rows - n)
                piece = seq.frames_into(buf[n:n + (b - a)], a)
                piece -= tm
                n += b - a
                a = b
                if n == self.block_rows:
                    yield buf
                    n = 0
        if n:
            yield buf[:n]

    def locate_nonfinite(self) -> str:
        """Which sequence and frame hold the first NaN/inf (slow; only called on error)."""
        for sid in self.ids:
            m = np.asarray(self.ds[sid].motion)
            bad = np.flatnonzero(~np.isfinite(m).all(axis=1))
            if len(bad):
                return f"sequence {sid} frame {int(bad[0])}"
        return "a frame"


class _Readahead:
    """Warms the page cache ahead of h5py: a thread reads the store file front to back in 8 MiB ``pread``s,
    staying ``ahead`` bytes beyond the share of the file consumed so far.

    Stores written before motion was stored contiguously hold one chunk per BIWI frame (560 KB), which h5py
    reads one at a time and a virtual disk serves at about 0.45 GB/s; large sequential reads run at 2+ GB/s,
    after which h5py reads from memory. Contiguous stores are read in large pieces anyway; this still keeps
    the disk busy while the GEMMs run. The store is written
    sequence by sequence in split order, so file position tracks the reading order; if it did not, this only
    wastes some reads. Page cache is not process memory. Disable with ``A2FBENCH_READAHEAD=0``.
    """

    def __init__(self, path: Path, total_rows: int, ahead: int = 1 << 30):
        self.path, self.total, self.ahead = path, max(int(total_rows), 1), ahead
        self.done_rows = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if os.environ.get("A2FBENCH_READAHEAD", "1") != "0" and Path(path).is_file():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def consumed(self, rows: int) -> None:
        """Called as the reader reaches each sequence (rows about to be read)."""
        self.done_rows += rows

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            buf = bytearray(8 << 20)
            pos = 0
            while pos < size and not self._stop.is_set():
                target = size * min(1.0, self.done_rows / self.total) + self.ahead
                if pos >= target:
                    self._stop.wait(0.005)
                    continue
                n = os.preadv(fd, [buf], pos)
                if n <= 0:
                    break
                pos += n
        except OSError:
            pass
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Reader:
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
        bufs = [np.empty((self.gemm_rows, self.source.dim), np.float32) for _ in range(_RING)]
        for i in itertools.count():
            yield bufs[i % _RING]

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


# ------------------------------------------------------------------------------------------- backends
_RING = 3  # reused float32 GEMM blocks: filling, queued, in use
_ROWS = 8192  # row chunk for the float64 products of (D, .) matrices: bounds their temporaries
_SPILL_BYTES = 256 << 20  # CPU: Krylov blocks larger than this in all go to scratch files (with a spill folder)


class _NumpyOps:
    """float32 GEMMs over the data with float64 accumulation; float64 for the small products (CPU path)."""

    name = "numpy"

    def put(self, x32: np.ndarray) -> np.ndarray:
        return x32

    def zeros64(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)

    def accumulator(self, D: int, L: int) -> "_NumpyAcc":
        return _NumpyAcc(D, L)

    def sub_outer(self, Y: np.ndarray, a: np.ndarray, K: np.ndarray, n: float) -> None:
        """``Y -= n a (a' K)`` (turns the shifted covariance into the centred one exactly), in row chunks."""
        aK = n * (a @ K.astype(np.float64))
        for r in range(0, len(Y), _ROWS):
            Y[r:r + _ROWS] -= np.outer(a[r:r + _ROWS], aK)

    def orth(self, Y: np.ndarray) -> np.ndarray:
        """float32 orthonormal basis of span(Y); Y is overwritten (columns normalised first so small ones keep
        their precision)."""
        import scipy.linalg as sl

        Y /= np.maximum(np.linalg.norm(Y, axis=0), 1e-300)
        return sl.qr(Y.astype(np.float32), mode="economic", overwrite_a=True, check_finite=False)[0]

    def rows64(self, A: Any, r: int) -> np.ndarray:
        return np.asarray(A[r:r + _ROWS], np.float64)

    def first_sketch(self, head: list[np.ndarray], Om: np.ndarray) -> np.ndarray:
        """``X0' Omega`` (D, L) float64 for the first rows X0 (a list of blocks) and Omega (rows, L)."""
        out, a = 0.0, 0
        for X in head:
            out = out + X.T.astype(np.float64) @ Om[a:a + len(X)].astype(np.float64)
            a += len(X)
        return np.asarray(out, order="F")

    def to_np(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def copy(self, x: np.ndarray) -> np.ndarray:
        return x.copy()

    def from_np(self, x: np.ndarray) -> np.ndarray:
        return x


class _TorchOps:
    """The same operations in torch on ``device`` (the GPU path; runs on CPU too, which the tests use)."""

    name = "torch"

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def put(self, x32: np.ndarray) -> Any:
        t = self.torch.from_numpy(np.ascontiguousarray(x32))
        return t.to(self.device) if self.device.type != "cpu" else t.clone()  # reader buffers are reused

    def zeros64(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def accumulator(self, D: int, L: int) -> "_TorchAcc":
        return _TorchAcc(self, D, L)

    def sub_outer(self, Y: Any, a: np.ndarray, K: Any, n: float) -> None:
        at = self.torch.from_numpy(a).to(self.device)
        Y -= n * self.torch.outer(at, at @ K.double())

    def orth(self, Y: Any) -> Any:
        Ys = (Y / Y.norm(dim=0).clamp_min(1e-300)).float()
        return self.torch.linalg.qr(Ys, mode="reduced")[0]

    def rows64(self, A: Any, r: int) -> Any:
        return A[r:r + _ROWS].double()

    def first_sketch(self, head: list[Any], Om: np.ndarray) -> Any:
        Omt = self.torch.from_numpy(Om).to(self.device).double()
        out, a = 0.0, 0
        for X in head:
            out = out + X.T.double() @ Omt[a:a + X.shape[0]]
            a += X.shape[0]
        return out

    def to_np(self, x: Any) -> np.ndarray:
        return x.cpu().numpy()

    def copy(self, x: Any) -> Any:
        return x.clone()

    def from_np(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(x).to(self.device)


class _NumpyAcc:
    """``Y = sum over blocks of X' (X K)`` (the covariance of the shifted rows times K), float64 totals.

    BLAS ``sgemm`` adds each block's product in place (beta = 1) into one float32 buffer, which is flushed into
    the float64 total every ``flush_rows`` rows (a few GEMM blocks): no (D, L) temporary per block, and float32
    partial sums never span more than about 1024 rows. (Flushing only every 4096 rows made the eigenvalue estimates
    inconsistent by ~3e-6 of the variance in tests; 1024 rows kept them below the true values.)
    """

    flush_rows = 1024

    def __init__(self, D: int, L: int):
        self.Y = np.zeros((D, L), order="F")
        self.buf = np.zeros((D, L), np.float32, order="F")
        self.rows = 0

    def add(self, X: np.ndarray, K: np.ndarray) -> None:
        from scipy.linalg import blas

        P = X @ K
        blas.sgemm(1.0, X.T, P, beta=1.0 if self.rows else 0.0, c=self.buf, overwrite_c=1)
        self.rows += X.shape[0]
        if self.rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.Y += self.buf
            self.rows = 0

    def result(self) -> np.ndarray:
        self._flush()
        del self.buf
        return self.Y


class _TorchAcc:
    def __init__(self, ops: "_TorchOps", D: int, L: int):
        self.Y = ops.zeros64((D, L))

    def add(self, X: Any, K: Any) -> None:
        self.Y += (X.T @ (X @ K)).double()

    def result(self) -> Any:
        return self.Y


def _ops(device: str) -> Any:
    if device == "cpu":
        return _NumpyOps()
    if device.startswith("torch"):  # "torch" / "torch:cpu": the torch path on the CPU (parity tests)
        return _TorchOps(device.split(":", 1)[1] if ":" in device else "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SpaceError(f"expected a CUDA device for --device {device}, found none (torch "
                             f"{torch.__version__}, cuda available: False); use --device cpu")
        return _TorchOps(device)
    raise SpaceError(f"expected device cpu or cuda[:N], found {device!r}")


class _Blocks:
    """(D, L) matrices kept for the end of the fit (the Krylov bases K_l, float32, and their images
    Y_l = M K_l, float64): in memory, or (CPU, large D x L) in scratch files read back in row chunks with
    ``np.fromfile`` (not a memory map, so they never count as resident memory)."""

    def __init__(self, ops: Any, spill_dir: Optional[Path], tag: str, dtype: Any):
        self.ops = ops
        self.spill_dir = spill_dir
        self.tag = tag
        self.dtype = np.dtype(dtype)
        self.items: list[Any] = []

    @property
    def spilled(self) -> bool:
        return self.spill_dir is not None

    def add(self, A: Any) -> None:
        if self.spill_dir is None:
            self.items.append(A)
            return
        path = self.spill_dir / f".pca-scratch-{self.tag}-{self.dtype.char}{len(self.items)}.bin"
        with open(path, "wb") as f:
            for r in range(0, A.shape[0], _ROWS):
                np.ascontiguousarray(self.ops.to_np(A[r:r + _ROWS]), self.dtype).tofile(f)
        self.items.append((path, tuple(A.shape)))

    def rows64(self, i: int, r: int) -> Any:
        """Rows r : r + _ROWS of matrix i as float64."""
        it = self.items[i]
        if not isinstance(it, tuple):
            return self.ops.rows64(it, r)
        path, (D, L) = it
        n = min(_ROWS, D - r)
        with open(path, "rb") as f:
            f.seek(r * L * self.dtype.itemsize)
            a = np.fromfile(f, dtype=self.dtype, count=n * L).reshape(n, L)
        return self.ops.from_np(a.astype(np.float64))

    def cleanup(self) -> None:
        for it in self.items:
            if isinstance(it, tuple) and it[0].exists():
                it[0].unlink()
        self.items = []


# ------------------------------------------------------------------------------------------- the fit
def fit(source: Source, components: int = DEFAULT_COMPONENTS, *, device: str = "cpu", seed: int = 0,
        oversample: Optional[int] = None, passes: int = DEFAULT_PASSES, progress: bool = True,
        spill_dir: Optional[str | os.PathLike] = None, spill_data: bool = False,
        cache_on_device: Optional[bool] = None) -> PCA:
    """Fit a mean-centred PCA of the rows of ``source`` by block Krylov + Nystrom (see module doc).

    ``passes`` P >= 1 reads of the data; ``oversample`` extra columns per block (default
    :func:`default_oversample`); ``spill_dir``: scratch folder for the Krylov blocks (CPU, when large) and,
    with ``spill_data``, a float32 copy of the centred rows that later passes read instead of the source (worth
    it only when the source is slow to read); all deleted at the end. ``cache_on_device``: keep the row blocks
    on the GPU after pass 1 when they fit.
    """
    from tqdm.auto import tqdm

    N, D, k = int(source.n_rows), int(source.dim), int(components)
    if k < 1:
        raise SpaceError(f"expected at least 1 component, found {k}")
    if N < 2:
        raise SpaceError(f"{source.name}: expected at least 2 frames to fit a PCA, found {N}")
    if k >= N or k > D:
        raise SpaceError(f"{source.name}: expected fewer components than frames ({N}) and at most the dimension "
                         f"({D}), found --components {k}; ask for at most {min(N - 1, D)}")
    if passes < 1:
        raise SpaceError(f"expected at least 1 pass over the data, found {passes}")
    p = default_oversample(k) if oversample is None else max(int(oversample), 0)
    L = min(k + p, N, D)
    ops = _ops(device)
    on_gpu = ops.name == "torch" and ops.device.type == "cuda"
    cache = on_gpu if cache_on_device is None else bool(cache_on_device)
    if cache and on_gpu:
        free, _ = ops.torch.cuda.mem_get_info(ops.device)
        cache = N * D * 4 < 0.6 * free - (passes + 2) * D * L * 8
    tag = f"{os.getpid()}-{threading.get_ident()}"
    sdir = Path(spill_dir) if spill_dir is not None else None
    data_spill = (sdir / f".pca-scratch-{tag}-X.f32" if (spill_data and sdir is not None and passes > 1 and not cache)
                  else None)
    big = ops.name == "numpy" and passes * D * L * 8 > _SPILL_BYTES
    Ys = _Blocks(ops, sdir if big else None, tag, np.float64)
    Ks = _Blocks(ops, sdir if big else None, tag, np.float32)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    reader = _Reader(source, data_spill)
    # Block Krylov. K_0 = orth(X0' Omega): random combinations of the first >= L + 16 (shifted) rows, so it
    # lies in the row space of the data (a Gaussian block would lie mostly in the null space of M when
    # frames < dimension, and its tiny Ritz values, known only to float32 rounding, would be amplified by
    # the Nystrom inverse). Y_l = M K_l; K_{l+1} = orth(Y_l) made orthogonal to K_0..K_l. The Nystrom step
    # uses Kcat = [K_0 .. K_{P-1}] and M Kcat = [Y_0 .. Y_{P-1}].
    nb = passes
    B = np.zeros((nb * L, nb * L))  # Kcat' M Kcat
    G = np.zeros((nb * L, nb * L))  # (M Kcat)' (M Kcat)
    cached: list[Any] = []
    K: Any = None
    try:
        for l in range(passes):
            bar = tqdm(total=N, desc=f"pca {source.name} pass {l + 1}/{passes}", unit="frame",
                       disable=not progress, leave=False)
            blocks: Any = cached if (l and cached) else (ops.put(x) for x in reader.blocks(first=(l == 0), background=on_gpu))
            if l == 0:
                head, rows0 = [], 0
                for X in blocks:  # hold the first rows back (copies: blocks are reused) until K_0 is built
                    head.append(ops.copy(X))
                    rows0 += X.shape[0]
                    if rows0 >= L + 16:
                        break
                K = ops.orth(ops.first_sketch(head, rng.standard_normal((rows0, L), dtype=np.float32)))
                _release()
                blocks = itertools.chain(head, blocks)
                del head
            acc = ops.accumulator(D, L)
            for X in blocks:
                acc.add(X, K)
                if cache and l == 0:
                    cached.append(X)
                bar.update(X.shape[0])
                del X
            del blocks
            bar.close()
            Y = acc.result()
            del acc
            _trace(f"pass {l + 1} data", t0)
            if l == 0 and reader.rows != N:
                raise SpaceError(f"{source.name}: expected {N} rows, read {reader.rows}; re-run `a2fbench prepare`")
            m = reader.colsum / N  # mean - shift
            ops.sub_outer(Y, m, K, float(N))
            Ks.add(K)
            Ys.add(Y)
            # new blocks of B and G: K_i' Y_l and Y_i' Y_l for i <= l, in float64 row chunks
            cl = slice(l * L, (l + 1) * L)
            for r in range(0, D, _ROWS):
                Yr = ops.rows64(Y, r)
                for i in range(l + 1):
                    ci = slice(i * L, (i + 1) * L)
                    B[ci, cl] += ops.to_np(Ks.rows64(i, r).T @ Yr)
                    G[ci, cl] += ops.to_np((Yr if i == l else Ys.rows64(i, r)).T @ Yr)
                del Yr  # a view: it would keep Y alive
            for i in range(l):
                ci = slice(i * L, (i + 1) * L)
                B[cl, ci], G[cl, ci] = B[ci, cl].T, G[ci, cl].T
            if l < passes - 1:  # next block: Y_l made orthogonal to K_0..K_l (block Gram-Schmidt, twice)
                W = Y if Ys.spilled else ops.copy(Y)
                for _ in range(2):
                    coef = [np.zeros((L, L)) for _ in range(l + 1)]
                    for r in range(0, D, _ROWS):
                        Wr = ops.rows64(W, r)
                        for i in range(l + 1):
                            coef[i] += ops.to_np(Ks.rows64(i, r).T @ Wr)
                        del Wr
                    ct = [ops.from_np(np.ascontiguousarray(c)) for c in coef]
                    for r in range(0, D, _ROWS):
                        W[r:r + _ROWS] -= sum(Ks.rows64(i, r) @ ct[i] for i in range(l + 1))
                del K
                K = ops.orth(W)
                del W
            del Y
            _trace(f"pass {l + 1} products", t0)
        del cached
        total = reader.sumsq - N * float(m @ m)  # trace(M) = sum of squared centred norms
        del K
        lam, C = _nystrom(B, G, k)
        _trace("nystrom", t0)
        U = np.zeros((D, len(lam)))
        if len(lam):
            Ct = [ops.from_np(np.ascontiguousarray(C[i * L:(i + 1) * L])) for i in range(nb)]
            for r in range(0, D, _ROWS):
                U[r:r + _ROWS] = ops.to_np(sum(Ys.rows64(i, r) @ Ct[i] for i in range(nb)))
    finally:
        Ys.cleanup()
        Ks.cleanup()
        if data_spill is not None and data_spill.exists():
            data_spill.unlink()
    assert reader.shift is not None
    U = _complete(U, k, D, rng)
    comps = _sign_fix(U).T.astype(np.float32)  # (k, D)
    del U
    lam = np.concatenate([lam, np.zeros(k - len(lam))])
    mean = reader.shift + m
    meta = {"format": FORMAT, "method": "randomized block Krylov + Nystrom (Halko et al. 2011; Musco & Musco 2015; "
                                        "Tropp et al. 2017)",
            "components": k, "block": L, "oversample": L - k, "passes": passes, "seed": seed, "device": device,
            "n_frames": N, "dim": D, "total_variance": total / max(N - 1, 1),
            "explained_variance": float(lam.sum() / total) if total > 0 else 0.0,
            "fit_seconds": round(time.time() - t0, 3)}
    return PCA(comps, mean.astype(np.float32), np.sqrt(np.maximum(lam, 0.0)),
               (lam / total if total > 0 else np.zeros(k)), N, meta)


def _release() -> None:
    """Free unreachable cycles (finished generator pipelines) and hand freed heap memory back to the OS
    (glibc keeps mid-sized freed blocks otherwise)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _trace(what: str, t0: float) -> None:
    """Debug log: elapsed seconds and resident memory (logging at DEBUG)."""
    _release()
    if log.isEnabledFor(logging.DEBUG):
        try:
            rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            rss = float("nan")
        log.debug("pca %-18s %7.1f s  rss %6.0f MiB", what, time.time() - t0, rss)


def _nystrom(B: np.ndarray, G: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of the Nystrom approximation ``(MK)(K'MK)^+(MK)'`` of M, from ``B = K'MK`` and
    ``G = (MK)'(MK)``: returns the eigenvalues and C with eigenvectors ``U = (MK) C`` (float64)."""
    B = (B + B.T) / 2
    th, V = np.linalg.eigh(B)
    keep = th > th.max() * 1e-12 if th.max() > 0 else np.zeros_like(th, bool)
    Vs = V[:, keep] / np.sqrt(th[keep])  # F = (MK) Vs and M ~ F F'
    H = Vs.T @ G @ Vs
    lam, W = np.linalg.eigh((H + H.T) / 2)  # the eigenvalues of F'F are those of F F'
    order = np.argsort(lam)[::-1]
    lam, W = lam[order], W[:, order]
    r = int(min(k, (lam > lam[0] * 1e-12).sum() if len(lam) and lam[0] > 0 else 0))
    return lam[:r], Vs @ (W[:, :r] / np.sqrt(lam[:r]))


def _complete(U: np.ndarray, k: int, D: int, rng: np.random.Generator) -> np.ndarray:
    """U (D, r) orthonormal; when the data had rank r < k, append k - r orthonormal directions orthogonal to
    it (zero variance) so the file always holds k components."""
    r = U.shape[1]
    if r >= k:
        return U[:, :k]
    import scipy.linalg as sl

    extra = rng.standard_normal((D, k - r))
    for _ in range(2):  # twice is enough (Kahan)
        extra -= U @ (U.T @ extra)
    Qe = sl.qr(extra, mode="economic")[0]
    return np.concatenate([U, Qe], axis=1)


def _sign_fix(U: np.ndarray) -> np.ndarray:
    """Deterministic signs, in place: the largest-magnitude entry of each component (column) is positive."""
    cols = np.arange(U.shape[1])
    hi, lo = U[U.argmax(axis=0), cols], U[U.argmin(axis=0), cols]  # no |U| temporary
    s = np.where(hi >= -lo, 1.0, -1.0)
    U *= s[None, :]
    return U


def fit_array(X: np.ndarray, components: int = DEFAULT_COMPONENTS, **kw: Any) -> PCA:
    """:func:`fit` on an in-memory (N, D) array (rows are samples)."""
    block = kw.pop("block_rows", DEFAULT_BLOCK_ROWS)
    return fit(ArraySource(X, block), components, **kw)


# ---------------------------------------------------------------------------------------- files
def pca_path(data: str | os.PathLike, dataset: str) -> Path:
    from .registry import get_spec
    from .store import store_dir

    return store_dir(data, get_spec(dataset)) / PCA_FILE


def check_dataset(ds: Any) -> None:
    """PCA is for vertex spaces; one clear line otherwise."""
    from .registry import get_space

    space = get_space(ds.card["space"])
    if not space.is_vertex:
        raise SpaceError(f"expected a vertex dataset for PCA (D0..D2), found {ds.id} in {space.name}, a "
                         f"{space.kind} parameter space of {space.dim} values: UniTalker predicts its parameters "
                         "directly, without PCA; leave it out of `a2fbench pca`")


def fit_dataset(data: str | os.PathLike, dataset: str, components: int = DEFAULT_COMPONENTS, device: str = "cpu",
                seed: int = 0, *, split: str = "train", passes: int = DEFAULT_PASSES,
                oversample: Optional[int] = None, block_rows: int = DEFAULT_BLOCK_ROWS, progress: bool = True,
                out: Optional[str | os.PathLike] = None) -> Path:
    """Fit the PCA of a prepared vertex dataset and write ``DATA/<id>/pca.npz`` atomically; returns its path."""
    from . import __version__
    from .store import open_dataset

    ds = open_dataset(data, dataset)
    try:
        check_dataset(ds)
        src = DatasetSource(ds, split, block_rows)
        if src.n_rows == 0:
            raise SpaceError(f"{ds.id}: expected frames in split {split!r}, found none; prepare the split first")
        p = fit(src, components, device=device, seed=seed, oversample=oversample, passes=passes, progress=progress,
                spill_dir=ds.path)
        card = ds.card
        p.meta.update({"dataset": ds.id, "space": card["space"], "fingerprint": card.get("fingerprint"),
                       "split": split, "units": card.get("units"), "data": "motion - template(subject), mean removed",
                       "unitalker_scale": ds.spec.unitalker.scale, "a2fbench_version": __version__,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "synthetic": bool(card.get("synthetic", False))})
        target = Path(out) if out is not None else ds.path / PCA_FILE
    finally:
        ds.close()
    save(p, target)
    log.debug("%s: %d components explain %.6f of the %s variance (%d frames x %d) -> %s", dataset, p.n_components,
             p.meta["explained_variance"], split, p.n_samples, p.dim, target)
    return target


def save(p: PCA, path: str | os.PathLike) -> Path:
    """Write ``pca.npz`` atomically (UniTalker keys + ``explained_variance`` + ``meta``; no pickles)."""
    from .fsutil import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **p.arrays())
    return path


def load(path: str | os.PathLike) -> PCA:
    """Read a ``pca.npz`` in UniTalker's layout (ours, or UniTalker's released files, which have no ``meta``)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"expected a PCA file at {path}, found nothing; run `a2fbench pca <dataset> --data DATA`")
    try:
        z = np.load(path, allow_pickle=False)
        d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"{path}: expected an npz PCA file, found an unreadable file ({e}); re-run `a2fbench pca`") from None
    need = ("components_to_data", "original_data_mean")
    missing = [k for k in need if k not in d]
    if missing:
        raise StoreError(f"{path}: expected UniTalker PCA keys {list(UNITALKER_KEYS)}, missing {missing}; "
                         "re-run `a2fbench pca`")
    W, mu = d["components_to_data"], d["original_data_mean"].reshape(-1)
    if W.ndim != 2 or W.shape[1] != mu.size:
        raise StoreError(f"{path}: expected components_to_data (K, {mu.size}) to match original_data_mean, found "
                         f"{W.shape}; re-run `a2fbench pca`")
    K = W.shape[0]
    meta = json.loads(str(d["meta"].reshape(-1)[0])) if "meta" in d else {}
    S = np.asarray(d.get("S", np.zeros(K)), np.float64)[:K]
    evr = np.asarray(d.get("explained_variance_ratio", np.zeros(K)), np.float64)[:K]
    return PCA(W.astype(np.float32), mu.astype(np.float32), S, evr, int(meta.get("n_frames", 0)), meta)


def load_for(data: str | os.PathLike, dataset: str) -> PCA:
    """The PCA of a prepared dataset, checked against the store's fingerprint (stale -> one clear line)."""
    from .store import open_dataset

    ds = open_dataset(data, dataset)
    fp = ds.card.get("fingerprint")
    path = ds.path / PCA_FILE
    ds.close()
    if not path.is_file():
        raise StoreError(f"expected {path}, found nothing; run `a2fbench pca {dataset} --data {data}`")
    p = load(path)
    got = p.meta.get("fingerprint")
    if got is not None and fp is not None and got != fp:
        raise StoreError(f"{path}: stale PCA: fitted on store {got[:19]}..., the store is now {fp[:19]}...; re-run "
                         f"`a2fbench pca {dataset} --data {data}`")
    return p
