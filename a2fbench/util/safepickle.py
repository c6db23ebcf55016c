"""A restricted unpickler for the ``.pkl`` files that raw datasets ship.

Raw downloads (VOCASET ``templates.pkl``, ``raw_audio_fixed.pkl``, FLAME ``generic_model.pkl``,
``FLAME_masks.pkl``) are pickles, and a pickle can run arbitrary code. :func:`load` admits only what those
files need: numpy arrays, dtypes and scalars, plain containers (dict, list, tuple, set), strings, bytes and
numbers. Two foreign classes that FLAME model files carry are turned into plain data *without importing
their packages*: chumpy ``Ch`` objects become their ``x`` array, and scipy sparse matrices become
``scipy.sparse.csc_matrix``/``csr_matrix`` built from their arrays. Anything else is refused with
:class:`~a2fbench.errors.UnsafePickleError` before it can run.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import IO, Any

import numpy as np

from ..errors import UnsafePickleError

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}
# numpy scalar/dtype classes pickled by reference, e.g. ("numpy", "float64")
_NUMPY_TYPES = {name for name in dir(np) if isinstance(getattr(np, name, None), type)
                and issubclass(getattr(np, name), (np.generic,))}
_NUMPY_DTYPE_MODULES = ("numpy.dtypes",)


class _Stub:
    """Holds the state of a foreign object (chumpy Ch, scipy sparse) until it is converted."""

    kind = "stub"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChStub(_Stub):
    kind = "chumpy"


class _SparseStub(_Stub):
    kind = "sparse"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fmt = "csc"


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Python 2 ``copy_reg._reconstructor``: only for our stubs and plain object."""
    if isinstance(cls, type) and issubclass(cls, _Stub):
        return cls()
    if cls is object:
        return object()
    raise UnsafePickleError(f"refusing pickle reconstruct of {cls!r}")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}:
            return _reconstructor
        if (module, name) in _SAFE_GLOBALS:
            if module in ("builtins", "__builtin__"):
                return {"set": set, "frozenset": frozenset, "complex": complex, "object": object}[name]
            return super().find_class(module, name)
        if module == "numpy" and name in _NUMPY_TYPES:
            return getattr(np, name)
        if module in _NUMPY_DTYPE_MODULES and name.endswith("DType"):
            return super().find_class(module, name)
        if module.split(".")[0] == "chumpy":
            return _ChStub
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            stub = type(f"_{name}", (_SparseStub,), {})
            stub.fmt = name[:3]  # type: ignore[attr-defined]
            return stub
        raise UnsafePickleError(
            f"{self.source}: expected a pickle of numpy arrays and plain containers, found a reference to "
            f"'{module}.{name}'; refusing to load it (the file may be corrupt or malicious; re-download it)"
        )


def _convert(obj: Any, depth: int = 0) -> Any:
    if depth > 50:
        raise UnsafePickleError("pickle nests deeper than 50 levels")
    if isinstance(obj, _ChStub):
        st = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in st:
            raise UnsafePickleError("a chumpy object in the pickle carries no 'x' array")
        return np.asarray(_convert(st["x"], depth + 1))
    if isinstance(obj, _SparseStub):
        import scipy.sparse as sp

        st = obj.state if isinstance(obj.state, dict) else {}
        try:
            shape = tuple(st.get("_shape") or st.get("shape"))
            args = (np.asarray(st["data"]), np.asarray(st["indices"]), np.asarray(st["indptr"]))
        except Exception as e:  # noqa: BLE001 - any missing field is a corrupt file
            raise UnsafePickleError(f"a sparse matrix in the pickle lacks its arrays ({e})") from None
        cls = sp.csr_matrix if getattr(obj, "fmt", "csc") == "csr" else sp.csc_matrix
        return cls(args, shape=shape)
    if isinstance(obj, dict):
        return {(_convert(k, depth + 1)): _convert(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert(v, depth + 1) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return np.array([_convert(v, depth + 1) for v in obj.ravel()], dtype=object).reshape(obj.shape)
    return obj


def _load(stream: IO[bytes], source: str) -> Any:
    """Unpickle ``stream`` with the restricted unpickler and convert the stubs; ``source`` names it in errors."""
    try:
        obj = _RestrictedUnpickler(stream, source).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or corrupt pickles raise many types
        raise UnsafePickleError(
            f"{source}: expected a readable pickle, found a corrupt or truncated file ({type(e).__name__}: {e}); "
            "re-download it"
        ) from None
    return _convert(obj)


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only numpy arrays and plain containers (see module doc)."""
    return _load(io.BytesIO(data), source)


def load(path: str | os.PathLike) -> Any:
    """Safely unpickle a file, streaming it (no copy of the whole file in memory). See :func:`loads`."""
    with open(path, "rb") as f:
        return _load(f, str(path))
