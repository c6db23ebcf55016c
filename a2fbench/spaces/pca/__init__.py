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

Takes: a prepared vertex dataset (or any row source). Gives: ``pca.npz`` and :class:`PCA`. Modules:
:mod:`.model`, :mod:`.fileformat`, :mod:`.stream`, :mod:`.backends`, :mod:`.algorithm`, :mod:`.dataset`.

Python API::

    path = fit_dataset("D1", DATA, components=512, device="cpu", seed=0)   # DATA/D1/pca.npz
    p = load(path)               # or load_for(DATA, "D1"), which also checks the store fingerprint
    z = p.encode(x)              # (..., D) -> (..., K); numpy or torch in, same kind out
    x = p.decode(z)              # (..., K') -> (..., D), K' <= K leading components
"""

from .algorithm import fit, fit_array
from .dataset import DatasetSource, check_dataset, fit_dataset, load_for, pca_path
from .fileformat import FORMAT, PCA_FILE, UNITALKER_KEYS, load, save
from .model import (
           DEFAULT_BLOCK_ROWS,
           DEFAULT_COMPONENTS,
           DEFAULT_GEMM_ROWS,
           DEFAULT_PASSES,
           PCA,
           default_oversample,
)
from .stream import ArraySource, Source

__all__ = ["fit", "fit_array", "DatasetSource", "check_dataset", "fit_dataset", "load_for", "pca_path", "FORMAT",
           "PCA_FILE", "UNITALKER_KEYS", "load", "save", "DEFAULT_BLOCK_ROWS", "DEFAULT_COMPONENTS",
           "DEFAULT_GEMM_ROWS", "DEFAULT_PASSES", "PCA", "default_oversample", "ArraySource", "Source"]
