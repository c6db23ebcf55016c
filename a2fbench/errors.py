"""User-facing errors.

Every condition a user can fix (bad path, unknown dataset, corrupt file, wrong shape) raises a subclass of
:class:`A2FBenchError` whose message is one line saying what was expected, what was found and what to do.
The command line prints that line and exits with status 1; it never shows a traceback for these.
"""

from __future__ import annotations


class A2FBenchError(Exception):
    """Base class: a user-fixable problem, reported as one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class SpecError(A2FBenchError):
    """A manifest is malformed or a dataset name is unknown."""


class UnknownNameError(SpecError):
    """A dataset, space, head or config name that does not exist (message carries did-you-mean)."""


class DownloadError(A2FBenchError):
    """A network fetch failed."""


class ChecksumMismatch(A2FBenchError):
    """A file's sha256 differs from the manifest."""


class RawDataError(A2FBenchError):
    """Raw input files are missing, corrupt or have the wrong shape/dtype."""


class UnsafePickleError(RawDataError):
    """A pickle tried to load something other than numpy arrays and plain containers."""


class StoreError(A2FBenchError):
    """A prepared store is absent, incomplete or stale."""


class PredictionError(A2FBenchError):
    """A predictions folder does not match the dataset."""


class ResultSchemaError(A2FBenchError):
    """A results JSON file is malformed or inconsistent."""


class ConfigError(A2FBenchError):
    """A training/model configuration is invalid."""


class SpaceError(A2FBenchError):
    """Output-space input is wrong: PCA asked of a parameter space, converter input of the wrong width, NaN."""


class OutputError(A2FBenchError):
    """An output cannot be made: its folder is missing, the input fits no head of the dataset, or the format has
    no meaning for the dataset's space (ARKit CSV of a topology without a blendshape basis)."""
