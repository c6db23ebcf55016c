"""The fit: randomized block Krylov subspace iteration on the covariance, finished by a Nystrom step, in
passes over streamed rows (see :mod:`a2fbench.spaces.pca` for the method and its references).

Takes: a :class:`~.stream.Source`. Gives: a :class:`~.model.PCA`."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import scipy.linalg as sl

from ...errors import SpaceError
from ...util.memory import release
from ...util.progress import bar as progress_bar
from .backends import ROWS, Blocks, ops_for
from .fileformat import FORMAT
from .model import (
    DEFAULT_BLOCK_ROWS,
    DEFAULT_COMPONENTS,
    DEFAULT_PASSES,
    PCA,
    default_oversample,
)
from .stream import ArraySource, Reader, Source

log = logging.getLogger("a2fbench.pca")
SPILL_BYTES = 256 << 20  # CPU: Krylov blocks larger than this in all go to scratch files (with a spill folder)

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
    ops = ops_for(device)
    on_gpu = ops.name == "torch" and ops.device.type == "cuda"
    cache = on_gpu if cache_on_device is None else bool(cache_on_device)
    if cache and on_gpu:
        free, _ = ops.torch.cuda.mem_get_info(ops.device)
        cache = N * D * 4 < 0.6 * free - (passes + 2) * D * L * 8
    tag = f"{os.getpid()}-{threading.get_ident()}"
    sdir = Path(spill_dir) if spill_dir is not None else None
    data_spill = (sdir / f".pca-scratch-{tag}-X.f32" if (spill_data and sdir is not None and passes > 1 and not cache)
                  else None)
    big = ops.name == "numpy" and passes * D * L * 8 > SPILL_BYTES
    Ys = Blocks(ops, sdir if big else None, tag, np.float64)
    Ks = Blocks(ops, sdir if big else None, tag, np.float32)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    reader = Reader(source, data_spill)
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
            bar = progress_bar(total=N, desc=f"pca {source.name} pass {l + 1}/{passes}", unit="frame",
                       show=progress, leave=False)
            blocks: Any = cached if (l and cached) else (ops.put(x) for x in reader.blocks(first=(l == 0), background=on_gpu))
            if l == 0:
                head, rows0 = [], 0
                for X in blocks:  # hold the first rows back (copies: blocks are reused) until K_0 is built
                    head.append(ops.copy(X))
                    rows0 += X.shape[0]
                    if rows0 >= L + 16:
                        break
                K = ops.orth(ops.first_sketch(head, rng.standard_normal((rows0, L), dtype=np.float32)))
                release()
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
            for r in range(0, D, ROWS):
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
                    for r in range(0, D, ROWS):
                        Wr = ops.rows64(W, r)
                        for i in range(l + 1):
                            coef[i] += ops.to_np(Ks.rows64(i, r).T @ Wr)
                        del Wr
                    ct = [ops.from_np(np.ascontiguousarray(c)) for c in coef]
                    for r in range(0, D, ROWS):
                        W[r:r + ROWS] -= sum(Ks.rows64(i, r) @ ct[i] for i in range(l + 1))
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
            for r in range(0, D, ROWS):
                U[r:r + ROWS] = ops.to_np(sum(Ys.rows64(i, r) @ Ct[i] for i in range(nb)))
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


def _trace(what: str, t0: float) -> None:
    """Debug log: elapsed seconds and resident memory (logging at DEBUG)."""
    release()
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
