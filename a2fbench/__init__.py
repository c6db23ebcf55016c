"""A2F-Bench: datasets, metrics and a leaderboard for audio-driven 3D facial animation.

Public API::

    import a2fbench
    ds = a2fbench.open_dataset(DATA, "D1")
    ds.split("test"); seq = ds[ds.split("test")[0]]; seq.audio, seq.motion, ds.template(seq.subject)
"""

__version__ = "0.1.0"

from .errors import A2FBenchError  # noqa: E402
from .registry import all_specs, get_spec, resolve  # noqa: E402


def open_dataset(data, dataset):  # noqa: ANN001, ANN201 - re-exported, documented in store
    """Open a prepared dataset; see :func:`a2fbench.store.open_dataset`."""
    from .store import open_dataset as _open

    return _open(data, dataset)


__all__ = ["__version__", "A2FBenchError", "open_dataset", "get_spec", "resolve", "all_specs"]
