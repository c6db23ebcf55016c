"""Running the ``a2fbench`` and ``unitalker`` command lines in-process from a test (exit status, output)."""

from __future__ import annotations

import sys
from typing import Callable

import pytest


def _run(main: Callable[[], object], prog: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
         args: tuple[str, ...], clear: bool) -> tuple[int, str, str]:
    """``prog args`` through its console script's ``main()`` (same error policy, no interpreter start-up):
    (exit status, stdout, stderr); ``clear`` first drops what the test printed before."""
    monkeypatch.setattr(sys, "argv", [prog, *map(str, args)])
    if clear:
        capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def run_a2fbench(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from a2fbench.cli import main

    return _run(main, "a2fbench", monkeypatch, capsys, args, clear=False)


def run_unitalker(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """(exit status, stderr) of ``unitalker args``, the output printed before the call dropped."""
    from unitalker.cli import main

    code, _, err = _run(main, "unitalker", monkeypatch, capsys, args, clear=True)
    return code, err
