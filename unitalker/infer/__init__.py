"""Inference: a checkpoint and audio -> animation in a dataset's native units.

* ``predict``: predictions for a split (``unitalker predict``) and animation of audio files (``unitalker infer``),
  25 s windows cross-faded (templates chosen by :mod:`a2fbench.store.templates`).
* ``fastinfer`` (fixed-shape fast path) and ``bench`` (``unitalker bench``: fast beside reference mode).

Takes: a loaded model (``model.load.load_model``), audio, the store's templates. Gives: ``.npy`` animations and
the predictions record. Imports ``model`` only.
"""

from __future__ import annotations

_LAZY = {'infer': 'predict', 'predict_split': 'predict', 'animate': 'predict'}


def __getattr__(name: str):  # PEP 562: the names above load their module on first use, so importing one
    # module of this sub-package (the CLI does, per command) does not import torch-heavy neighbours
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
