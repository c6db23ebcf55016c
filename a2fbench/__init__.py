"""A2F-Bench: datasets, metrics and a leaderboard for audio-driven 3D facial animation.

The package follows the data, one subpackage per stage::

    registry/  manifests -> dataset and space specs, names, splits
    sources/   download, synthetic stand-ins, the native raw layouts (RAW/<id>/)
    prepare/   raw -> store: resampling, checks, cards
    store/     DATA/<id>/store.h5 and the reading API (open_dataset)
    spaces/    output spaces -> vertices (blendshapes, FLAME), the ARKit solve, PCA
    scoring/   predictions -> metrics under a protocol -> results JSON; compare
    outputs/   motion -> videos with sound, ARKit CSV, glTF, OBJ; results -> report pages
    cli/       the `a2fbench` command line
    util/      plumbing: atomic files, paths, progress, safe pickles, threads

Public API::

    import a2fbench
    ds = a2fbench.open_dataset(DATA, "D1")
    ds.split("test"); seq = ds[ds.split("test")[0]]; seq.audio, seq.motion, ds.template(seq.subject)
"""

__version__ = "0.1.0"

from .errors import A2FBenchError  # noqa: E402
from .registry import all_specs, get_spec, resolve  # noqa: E402


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: `open_dataset` on first use
    # Not imported at the top: the store loads h5py, and `import a2fbench` (paid by every command of a2fbench,
    # unitalker and leaderboard) took 0.37 s with it, 0.19 s without (median of 5).
    if name == "open_dataset":
        from .store import open_dataset

        globals()["open_dataset"] = open_dataset
        return open_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "A2FBenchError", "open_dataset", "get_spec", "resolve", "all_specs"]
