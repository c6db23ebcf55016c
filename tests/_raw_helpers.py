"""Helpers for tests that modify raw stand-ins: hard-link clones of the shared session folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def clone(src: Path, dst: Path) -> Path:
    """Copy a raw folder with hard links (fast). Never write into a cloned file in place: unlink it first
    (or call :func:`rewrite`), or the shared session copy changes too."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def rewrite(path: Path) -> Path:
    """Give ``path`` its own inode, so that writing it leaves the shared session copy alone."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path
