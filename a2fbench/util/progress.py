"""Progress bars that show on a terminal and stay out of log files.

Every long loop in the project takes its bar from :func:`bar`: a tqdm bar on stderr when stderr is a
terminal, nothing otherwise (a log file gets no carriage-return frames or control codes). ``A2FBENCH_PROGRESS=1``
forces bars on, ``=0`` off; a command's ``--no-progress`` turns them off for that command.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator, Optional

from tqdm.auto import tqdm

ENV = "A2FBENCH_PROGRESS"


def enabled(wanted: Optional[bool] = None) -> bool:
    """Whether bars show: ``wanted`` False turns them off; else ``$A2FBENCH_PROGRESS``, else stderr is a TTY."""
    if wanted is False:
        return False
    env = os.environ.get(ENV)
    if env is not None and env.strip() != "":
        return env.strip().lower() not in ("0", "false", "no", "off")
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable: Any = None, *, show: Optional[bool] = None, **kw: Any) -> tqdm:
    """A tqdm bar (``leave=False``; tqdm's keywords) that is disabled unless :func:`enabled` says otherwise;
    ``show=False`` (a command's ``--no-progress``) always disables it."""
    kw.setdefault("leave", False)
    return tqdm(iterable, disable=not enabled(show), **kw)


@contextlib.contextmanager
def frames_bar(desc: Optional[str], total: int) -> Iterator[Any]:
    """A bar over frames, or None when ``desc`` is None or bars are off (callers test ``if bar``)."""
    if not desc or not enabled():
        yield None
        return
    b = bar(total=total, desc=desc, unit="frame")
    try:
        yield b
    finally:
        b.close()
