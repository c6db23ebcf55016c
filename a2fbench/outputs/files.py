"""Atomic output files: every writer of this package writes to a temporary name beside its target and renames
it into place only when complete, so a failed or interrupted export never leaves a file that looks finished.

Which paths may be written at all (never an input, an existing one only with ``--force``, missing folders
created) is decided before any work by :mod:`a2fbench.util.guard`.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from ..util.fsutil import fsync_dir, name_target, sweep_stale


def temp_beside(path: Path, suffix: str = "tmp") -> Path:
    """A fresh hidden name in ``path``'s folder: ``.NAME.<random>-<PID>.<suffix>`` (the PID lets a later run
    remove it once this process is gone: :func:`~a2fbench.util.fsutil.sweep_stale`)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}-{os.getpid()}.{suffix}")


@contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = "tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that opens files by name; rename on success, delete
    on any failure (the previous ``path``, if any, is left untouched)."""
    path = Path(path)
    sweep_stale(path.parent)
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        name_target(e, tmp, path)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; flush (and fsync) and rename it over ``path``
    only when the block succeeds."""
    path = Path(path)
    with atomic_target(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, as open() does
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    if fsync and hasattr(os, "O_DIRECTORY"):
        fsync_dir(path.parent)
