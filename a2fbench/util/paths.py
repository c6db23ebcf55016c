"""Default locations, all derived from ``$A2FBENCH_HOME`` (default ``~/.a2fbench``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("A2FBENCH_HOME", "~/.a2fbench")).expanduser()


def default_raw() -> Path:
    return home() / "raw"


def default_data() -> Path:
    return home() / "data"


def default_db() -> Path:
    return home() / "leaderboard.sqlite"
