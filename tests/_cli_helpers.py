"""Running the ``a2fbench`` command line in-process from a test (exit status, stdout, stderr)."""

from __future__ import annotations

import sys

import pytest


def run_a2fbench(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from a2fbench.cli import main

    monkeypatch.setattr(sys, "argv", ["a2fbench", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err
