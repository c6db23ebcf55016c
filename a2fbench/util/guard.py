"""The output guard: whether a command may write a path, what happens when it is stopped, and how paths and
names from files reach the terminal. One place for all three command lines (``a2fbench``, ``unitalker`` and
``a2fbench leaderboard`` use it; other packages should too).

Rules (docs/architecture.md, "Integrity at the edges"):

* **Never over an input.** :func:`check_output` resolves the output and every input (symlinks, ``..``, hard
  links) and refuses an output that *is*, *contains* or *is inside* an input, even with ``--force``.
* **Existing output needs --force.** Without it, one line and nothing touched; with it, the new output replaces
  the old one whole (written to a temporary name beside it and renamed).
* **Missing folders are created** (``mkdir -p``) for the output, the same in every command
  (:func:`make_parent`).
* **Stopping is clean.** :func:`stop_on_signals` (installed by the command runner) turns SIGTERM and SIGHUP into
  :class:`Terminated`, a ``KeyboardInterrupt``: every ``atomic_path``/``atomic_target`` block deletes its
  temporary exactly as for Ctrl-C. A stale temporary of a killed run (``.NAME.incomplete-PID``,
  ``.NAME.<hex>-PID.part``) is hidden and never read as output, and the next write into its folder removes it
  once its process is gone (:func:`~a2fbench.util.fsutil.sweep_stale`).
* **One line for an OS error.** :func:`describe_os_error`: what failed, on which path, what to do.
* **Terminal-safe text.** :func:`printable` escapes control characters and bidirectional overrides in text
  that came from a file, a name or a database; :func:`safe_streams` applies the same rule (keeping newline,
  tab and carriage return) to everything a command prints.

Typical use in a command::

    out = check_output(out, [pred, data], force=force)       # before any work
    with atomic_path(out) as tmp: ...                          # util.fsutil: temp name + rename
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, TextIO

from ..errors import OutputError

__all__ = ["Terminated", "check_output", "check_apart", "describe_os_error", "make_parent", "printable", "real",
           "safe_streams", "show", "stop_on_signals", "FORCE_HELP"]

#: the help text of every ``--force`` option
FORCE_HELP = "Replace an existing output (never one of the command's inputs)."

PathLike = "str | os.PathLike[str]"


# ------------------------------------------------------------------------------------------ terminal text
# C0 and C1 controls and DEL, and the Unicode bidirectional controls (a name can reorder what the user sees)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_STREAM = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: Any) -> str:
    """``text`` with every control character (newlines and tabs too) and bidirectional control escaped as
    ``\\xNN`` / ``\\uNNNN``: safe to print on one line of a terminal."""
    return _UNSAFE.sub(_escape, str(text))


def show(path: Any) -> str:
    """A path (or any name from outside) for a message: :func:`printable`."""
    return printable(os.fspath(path) if isinstance(path, os.PathLike) else path)


class _SafeText(io.TextIOBase):
    """A text stream that escapes control characters (not newline, tab or carriage return) on the way out."""

    def __init__(self, raw: TextIO):
        self._raw = raw

    def write(self, s: str) -> int:
        self._raw.write(_UNSAFE_STREAM.sub(_escape, s))
        return len(s)

    def flush(self) -> None:
        self._raw.flush()

    def isatty(self) -> bool:
        return self._raw.isatty()

    def fileno(self) -> int:
        return self._raw.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._raw, "encoding", "utf-8")

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self._raw, "errors", None)

    @property
    def buffer(self) -> Any:
        return self._raw.buffer


@contextlib.contextmanager
def safe_streams() -> Iterator[None]:
    """Within the block, everything written to ``sys.stdout``/``sys.stderr`` has its control characters
    escaped (newline, tab and carriage return kept, so tables and progress bars still work)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _SafeText(sys.stdout), _SafeText(sys.stderr)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        sys.stdout, sys.stderr = saved


# ------------------------------------------------------------------------------------------ signals
class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every temporary is removed on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    for s in _SIGNALS:  # a second signal during the clean-up must not interrupt it
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only; elsewhere a no-op);
    the previous handlers come back after it."""
    saved = {}
    try:
        for s in _SIGNALS:
            saved[s] = signal.signal(s, _raise_terminated)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------------------------ OS errors
_ADVICE = {
    errno.EACCES: "check its permissions, or write somewhere you may",
    errno.EPERM: "check its permissions, or write somewhere you may",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EFBIG: "the file is larger than this file system or the file-size limit (ulimit -f) allows; write "
                 "somewhere else or raise the limit",
    errno.EDQUOT: "the disk quota is used up; free some space or write somewhere else",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "expected a file, found a folder; check the path",
    errno.ENAMETOOLONG: "use a shorter name",
}


def describe_os_error(e: OSError) -> str:
    """One line for an OS error: what failed, on which path, what to do (nothing partial is left: every write
    goes to a temporary name that is removed on failure)."""
    what = e.strerror or str(e) or type(e).__name__
    where = getattr(e, "filename", None)
    where2 = getattr(e, "filename2", None)
    paths = " -> ".join(show(p) for p in (where, where2) if p)
    advice = _ADVICE.get(e.errno or -1, "check the path and the disk")
    return (f"{paths}: {what}; {advice}" if paths else f"{what}; {advice}") + "; nothing partial was left"


# ------------------------------------------------------------------------------------------ paths
def real(path: Any) -> Path:
    """``path`` resolved: absolute, ``~`` expanded, symlinks and ``..`` followed (also for a path that does not
    exist yet: its existing part is resolved)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _relation(out: Path, inp: Path) -> Optional[str]:
    """How output ``out`` overlaps input ``inp`` (both resolved): 'is', 'is inside', 'contains' or None."""
    if out == inp or _same_file(out, inp):
        return "is"
    if inp in out.parents:
        return "is inside"
    if out in inp.parents:
        return "contains"
    return None


def check_apart(out: Any, inputs: Iterable[Any], *, option: str = "--out") -> Path:
    """``out`` as a Path, after checking it neither is, contains nor lies inside any of ``inputs`` (None entries
    skipped); else :class:`~a2fbench.errors.OutputError` (one line), whatever ``--force`` says."""
    out = Path(out)
    ro = real(out)
    for inp in inputs:
        if inp is None:
            continue
        how = _relation(ro, real(inp))
        if how is not None:
            raise OutputError(f"{option} {show(out)}: expected a path apart from the command's inputs, found that it "
                              f"{how} the input {show(inp)}; an output never replaces an input, not even with --force; "
                              "pick another path")
    return out


def check_output(out: Any, inputs: Iterable[Any] = (), *, force: bool = False, option: str = "--out") -> Path:
    """The one check before a command writes ``out``: apart from its ``inputs`` (:func:`check_apart`), and new
    unless ``force``. Returns ``out`` as a Path; raises :class:`~a2fbench.errors.OutputError` (one line)."""
    out = check_apart(out, inputs, option=option)
    if not force and (out.exists() or out.is_symlink()):
        kind = "folder" if out.is_dir() else "file"
        raise OutputError(f"{option} {show(out)}: expected a new path, found an existing {kind}; pass --force to "
                          "replace it, or pick another path")
    return out


def make_parent(path: Any) -> Path:
    """Create ``path``'s folder if missing (``mkdir -p``, the one rule for every output); returns ``path``."""
    p = Path(path)
    p.absolute().parent.mkdir(parents=True, exist_ok=True)
    return p
