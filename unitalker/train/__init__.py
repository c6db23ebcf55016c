"""Training and fine-tuning: prepared stores -> clips and batches -> steps -> checkpoints and curves.

* ``data`` (several stores in UniTalker's scaled units), ``batches`` (length buckets, padding), ``featcache`` (the
  frozen CNN's features once per run), ``assemble`` (heads, identities, seeds of a run).
* ``step`` (one optimiser step), ``loop`` (the epoch loop: :func:`train`), ``validate`` (LVE beside the static
  template), ``finetune`` (loading a checkpoint into other heads), ``plot`` (``unitalker plot``).

Takes: a prepared store (``a2fbench``) and a config. Gives: a run folder. Imports ``model`` only.
"""

from __future__ import annotations

_LAZY = {'train': 'loop', 'Trainer': 'loop', 'finetune_config': 'finetune', 'plot_run': 'plot'}


def __getattr__(name: str):  # PEP 562: the names above load their module on first use, so importing one
    # module of this sub-package (the CLI does, per command) does not import torch-heavy neighbours
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
