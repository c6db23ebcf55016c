"""The fitted PCA: orthonormal components and a mean, with encode/decode in numpy or torch.

Takes: arrays (from a fit or a ``pca.npz``). Gives: :class:`PCA` (``encode``, ``decode``, ``scaled`` for
UniTalker's per-dataset scale, ``to_torch``, ``arrays`` in UniTalker's keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ...errors import SpaceError

DEFAULT_COMPONENTS = 512
DEFAULT_PASSES = 3
DEFAULT_BLOCK_ROWS = 128  # rows per read from the source (float64)
DEFAULT_GEMM_ROWS = 384  # rows per float32 GEMM block

def default_oversample(k: int) -> int:
    """Extra columns per Krylov block: 16 + K/32 (32 for K = 512). The Krylov space holds P blocks, so the
    Rayleigh-Ritz/Nystrom step already chooses K directions out of P (K + oversample)."""
    return 16 + k // 32


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
        if is_torch(x):
            W, mu = self._t(x)
            check_last(x.shape, self.dim, "data")
            return (x - mu) @ W[:n].T
        a = np.asarray(x)
        check_last(a.shape, self.dim, "data")
        dt = np.result_type(a.dtype, np.float32)
        return (a.astype(dt, copy=False) - self.mean.astype(dt)) @ self.components[:n].astype(dt).T

    def decode(self, z: Any) -> Any:
        """(..., n) coefficients, n <= K -> (..., D) data ``z @ components[:n] + mean`` (numpy or torch)."""
        n = z.shape[-1] if len(z.shape) else 0
        if not 1 <= n <= self.n_components:
            raise SpaceError(f"expected PCA coefficients of width 1..{self.n_components}, found shape "
                             f"{tuple(z.shape)}; pass (..., K) coefficients")
        if is_torch(z):
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
        from ..torch_modules import (
            TorchPCA,  # torch is imported only when asked for (1-2 s)
        )

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


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def check_last(shape: tuple, d: int, what: str) -> None:
    if len(shape) == 0 or shape[-1] != d:
        raise SpaceError(f"expected {what} of width {d} (shape (..., {d})), found shape {tuple(shape)}; "
                         "pass rows in the PCA's space (motion minus template)")
