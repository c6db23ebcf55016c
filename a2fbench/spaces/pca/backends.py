"""The linear algebra of the fit on two back ends with one interface: numpy on the CPU (float32 GEMMs
accumulated in float64, in place through BLAS) and torch (the GPU path; also runs on the CPU for parity
tests); and the (D, L) Krylov blocks kept for the end of the fit, in memory or in scratch files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import scipy.linalg as sl
from scipy.linalg import blas

from ...errors import SpaceError

ROWS = 8192  # row chunk for the float64 products of (D, .) matrices: bounds their temporaries




class NumpyOps:
    """float32 GEMMs over the data with float64 accumulation; float64 for the small products (CPU path)."""

    name = "numpy"

    def put(self, x32: np.ndarray) -> np.ndarray:
        return x32

    def zeros64(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)

    def accumulator(self, D: int, L: int) -> "NumpyAcc":
        return NumpyAcc(D, L)

    def sub_outer(self, Y: np.ndarray, a: np.ndarray, K: np.ndarray, n: float) -> None:
        """``Y -= n a (a' K)`` (turns the shifted covariance into the centred one exactly), in row chunks."""
        aK = n * (a @ K.astype(np.float64))
        for r in range(0, len(Y), ROWS):
            Y[r:r + ROWS] -= np.outer(a[r:r + ROWS], aK)

    def orth(self, Y: np.ndarray) -> np.ndarray:
        """float32 orthonormal basis of span(Y); Y is overwritten (columns normalised first so small ones keep
        their precision)."""
        Y /= np.maximum(np.linalg.norm(Y, axis=0), 1e-300)
        return sl.qr(Y.astype(np.float32), mode="economic", overwrite_a=True, check_finite=False)[0]

    def rows64(self, A: Any, r: int) -> np.ndarray:
        return np.asarray(A[r:r + ROWS], np.float64)

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


class TorchOps:
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

    def accumulator(self, D: int, L: int) -> "TorchAcc":
        return TorchAcc(self, D, L)

    def sub_outer(self, Y: Any, a: np.ndarray, K: Any, n: float) -> None:
        at = self.torch.from_numpy(a).to(self.device)
        Y -= n * self.torch.outer(at, at @ K.double())

    def orth(self, Y: Any) -> Any:
        Ys = (Y / Y.norm(dim=0).clamp_min(1e-300)).float()
        return self.torch.linalg.qr(Ys, mode="reduced")[0]

    def rows64(self, A: Any, r: int) -> Any:
        return A[r:r + ROWS].double()

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


class NumpyAcc:
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


class TorchAcc:
    def __init__(self, ops: "TorchOps", D: int, L: int):
        self.Y = ops.zeros64((D, L))

    def add(self, X: Any, K: Any) -> None:
        self.Y += (X.T @ (X @ K)).double()

    def result(self) -> Any:
        return self.Y


def ops_for(device: str) -> Any:
    if device == "cpu":
        return NumpyOps()
    if device.startswith("torch"):  # "torch" / "torch:cpu": the torch path on the CPU (parity tests)
        return TorchOps(device.split(":", 1)[1] if ":" in device else "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SpaceError(f"expected a CUDA device for --device {device}, found none (torch "
                             f"{torch.__version__}, cuda available: False); use --device cpu")
        return TorchOps(device)
    raise SpaceError(f"expected device cpu or cuda[:N], found {device!r}")


class Blocks:
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
            for r in range(0, A.shape[0], ROWS):
                np.ascontiguousarray(self.ops.to_np(A[r:r + ROWS]), self.dtype).tofile(f)
        self.items.append((path, tuple(A.shape)))

    def rows64(self, i: int, r: int) -> Any:
        """Rows r : r + ROWS of matrix i as float64."""
        it = self.items[i]
        if not isinstance(it, tuple):
            return self.ops.rows64(it, r)
        path, (D, L) = it
        n = min(ROWS, D - r)
        with open(path, "rb") as f:
            f.seek(r * L * self.dtype.itemsize)
            a = np.fromfile(f, dtype=self.dtype, count=n * L).reshape(n, L)
        return self.ops.from_np(a.astype(np.float64))

    def cleanup(self) -> None:
        for it in self.items:
            if isinstance(it, tuple) and it[0].exists():
                it[0].unlink()
        self.items = []
