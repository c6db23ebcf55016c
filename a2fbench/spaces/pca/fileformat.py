"""``pca.npz``: UniTalker's keys (``components_to_data``, ``original_data_mean``, ``S``,
``explained_variance_ratio``, ``data_components_mean``, ``data_components_std``) plus ``explained_variance``
and a ``meta`` JSON string; no pickles. Reads UniTalker's released files too (they have no ``meta``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...errors import StoreError
from ...util.fsutil import atomic_path
from .model import PCA

PCA_FILE = "pca.npz"


FORMAT = "a2fbench-pca-1"


UNITALKER_KEYS = ("explained_variance_ratio", "components_to_data", "original_data_mean", "S",
                  "data_components_mean", "data_components_std")


def save(p: PCA, path: str | os.PathLike) -> Path:
    """Write ``pca.npz`` atomically (UniTalker keys + ``explained_variance`` + ``meta``; no pickles)."""
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
    for k in ("components_to_data", "original_data_mean", "S", "explained_variance_ratio"):
        if k in d and (d[k].dtype.kind not in "fiu" or not np.isfinite(d[k]).all()):
            raise StoreError(f"{path}: expected finite numbers in {k}, found NaN, inf or non-numbers; re-run "
                             "`a2fbench pca` or restore the file")
    try:
        meta = json.loads(str(d["meta"].reshape(-1)[0])) if "meta" in d else {}
    except ValueError as e:
        raise StoreError(f"{path}: expected a JSON meta entry, found an unreadable one ({e}); re-run `a2fbench pca`") from None
    S = np.asarray(d.get("S", np.zeros(K)), np.float64)[:K]
    evr = np.asarray(d.get("explained_variance_ratio", np.zeros(K)), np.float64)[:K]
    return PCA(W.astype(np.float32), mu.astype(np.float32), S, evr, int(meta.get("n_frames", 0)), meta)
