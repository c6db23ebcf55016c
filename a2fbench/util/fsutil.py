"""File-system helpers: atomic writes, hashing, the one JSON reader.

Everything the project writes goes to a temporary name beside the target and is renamed into place only when
complete, so an interrupted or failed command never leaves a file that looks finished. Every JSON file a user
hands in (results, predictions records, sidecars, release lists, run records) is read by :func:`read_json`,
which bounds its size (:data:`JSON_MAX_BYTES`) and nesting (:data:`JSON_MAX_DEPTH`) so that a hostile file is
one line, never a RecursionError or an exhausted memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

_CHUNK = 1 << 20
#: the largest JSON file read from a user (a results file grows by ~0.2 KB per sequence with the default metrics,
#: measured on D1: this is over a million sequences)
JSON_MAX_BYTES = 256 << 20
#: the deepest nesting of arrays/objects accepted (the project's files nest < 10 levels)
JSON_MAX_DEPTH = 64


def sha256_file(path: str | os.PathLike, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.incomplete-{os.getpid()}")


#: the temporaries this tool names after the process that writes them: ``.NAME.incomplete-PID`` and
#: ``.NAME.old-PID`` (:func:`atomic_path`, prepare) and ``.NAME.<12 hex>-PID.<suffix>`` (outputs.files); the
#: resumable ones (``.<id>.incomplete`` of prepare, ``.NAME.<sha12>.part`` of download) carry no PID and are kept
_OUR_TEMP = re.compile(r"^\..+\.(?:incomplete-|old-|[0-9a-f]{12}-)([0-9]+)(?:\.[a-z]+)?$")
#: a temporary untouched this long whose process is gone is stale (a live writer on another machine sharing the
#: folder keeps touching its temporary; its PID says nothing here)
STALE_AFTER_S = 600
_swept: set[str] = set()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user
        return True
    return True


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that a killed run of this tool left in ``folder`` (named by :data:`_OUR_TEMP`, their
    process no longer alive, untouched for :data:`STALE_AFTER_S`); others are left, hidden and never read as
    output. Each folder is swept once per process (writers of many files into one folder pay one scan)."""
    key = os.path.realpath(folder)
    if key in _swept:
        return []
    _swept.add(key)
    removed = []
    try:
        entries = list(os.scandir(key))
    except OSError:
        return []
    now = time.time()
    for e in entries:
        m = _OUR_TEMP.match(e.name)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
                continue
            _remove(Path(e.path))
        except OSError:
            continue
        removed.append(Path(e.path))
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success, delete it on failure.

    With ``is_dir=True`` the temporary path is created as an empty directory and an existing ``target``
    directory is replaced only after the new one is complete: it is renamed aside, the new one renamed in, and
    only then removed; if the new one cannot be renamed in, the old one is put back. ``fsync``: flush the
    finished directory's entries (``is_dir``) before the rename and the parent's after it (the files written
    inside are the caller's to flush).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    tmp = temp_name(target)
    _remove(tmp)
    if is_dir:
        tmp.mkdir()
    old = None
    try:
        yield tmp
        if fsync and is_dir:
            fsync_dir(tmp)
        if is_dir and target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
    except BaseException as e:
        _remove(tmp)
        name_target(e, tmp, target)
        raise
    if fsync:
        fsync_dir(target.parent)
    if old is not None:
        _remove(old)


def name_target(e: BaseException, tmp: Path, target: Path) -> None:
    """An OSError raised while writing ``tmp`` names ``target`` (what the user asked for), not the hidden
    temporary or nothing (``write()`` of a full disk or a file-size limit carries no file name)."""
    if (isinstance(e, OSError) and e.errno is not None  # an errno-less OSError's text is its whole message: kept
            and (e.filename is None or os.fspath(e.filename).startswith(os.fspath(tmp)))):
        try:
            e.filename = os.fspath(target)
        except AttributeError:  # a library's OSError subclass with a read-only filename (PyAV)
            pass


def fsync_dir(d: Path) -> None:
    """Flush a directory's entries (renames, new files) to disk; a no-op where directories cannot be opened."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_json(target: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """Write JSON atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=False, allow_nan=False)
            f.write("\n")


def write_npy(target: str | os.PathLike, arr: Any) -> None:
    """Save one array atomically as .npy (no pickle)."""
    import numpy as np

    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(arr), allow_pickle=False)


def json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` 1, ``[[1]]`` 2), without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        depth = max(depth, d)
        stack.extend((c, d + 1) for c in o if isinstance(c, (dict, list)))
    return depth


def read_json(path: str | os.PathLike, *, what: str = "a JSON file", error: type = None,  # type: ignore[assignment]
              max_bytes: int = JSON_MAX_BYTES, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Parse the JSON file ``path`` within the size and depth limits. Every problem (missing file, unreadable,
    not UTF-8, malformed, too large, too deep) raises ``error`` (default
    :class:`~a2fbench.errors.A2FBenchError`) as one line naming the file and ``what`` was expected; a missing file
    raises :class:`FileNotFoundError` unchanged, for callers to whom it is optional."""
    from ..errors import A2FBenchError
    from .guard import show

    error = error or A2FBenchError
    p = Path(path)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise error(f"{show(p)}: expected {what} of at most {max_bytes >> 20} MiB, found {size / 2**20:.0f} MiB; "
                        "this is not a file the tool wrote")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while read (a pipe, a file being written)
        raise error(f"{show(p)}: expected {what} of at most {max_bytes >> 20} MiB, found more; this is not a file "
                    "the tool wrote")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        doc, deep = None, True
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{show(p)}: expected {what}, found a malformed file ({show(e)})") from None
    else:
        deep = json_depth(doc) > max_depth
    if deep:
        raise error(f"{show(p)}: expected {what} nested at most {max_depth} levels deep, found deeper nesting; this "
                    "is not a file the tool wrote")
    return doc
