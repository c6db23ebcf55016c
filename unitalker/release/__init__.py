"""The official UniTalker release <-> our run folders (``unitalker import-official`` / ``export-official``).

* ``official``: the official checkpoint's key layout beside ours, and the architecture its shapes imply.
* ``release``: the data release folder (``id_template.npy``, ``pca.npz``, ...) as the importer reads it.
* ``convert``: import and export.

Takes: a released ``.pt`` and release folder. Gives: a run folder (and back). Imports ``model`` only.
"""

from __future__ import annotations

_LAZY = {'import_official': 'convert', 'export_official': 'convert'}


def __getattr__(name: str):  # PEP 562: the names above load their module on first use, so importing one
    # module of this sub-package (the CLI does, per command) does not import torch-heavy neighbours
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
