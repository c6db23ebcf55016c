"""The network and what defines it: config -> model -> checkpoint, and loading one for use.

* ``config``: shipped defaults, a YAML file, ``key=value`` overrides.
* ``encoder`` (WavLM / wav2vec2 + frequency adaptor), ``fastcnn`` (its CNN as GEMMs), ``model`` (decoder, identity,
  one head per space), ``identity`` (the global identity table), ``loss`` (the paper's Eq. 2).
* ``checkpoint``: ``RUN/checkpoints/<tag>.safetensors`` (+ resume state).
* ``runtime``: devices, threads, distributed set-up, ``amp_context``.
* ``load``: :func:`load_model` (inference), ``load_for_finetune``, ``load_for_resume``: the one place that reads a
  checkpoint, resolves its config and builds the model once.

Takes: configs, audio tensors, checkpoints. Gives: a built :class:`UniTalker` and its metadata. Imports nothing from
the other sub-packages.
"""

from __future__ import annotations

_LAZY = {'UniTalker': 'model', 'ModelSpec': 'model', 'HeadSpec': 'model', 'load_config': 'config', 'load_model': 'load', 'Loaded': 'load', 'IdentityTable': 'identity', 'amp_context': 'runtime'}


def __getattr__(name: str):  # PEP 562: the names above load their module on first use, so importing one
    # module of this sub-package (the CLI does, per command) does not import torch-heavy neighbours
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
