"""SQLite used carefully: one write transaction at a time (``BEGIN IMMEDIATE``), retries on SQLITE_BUSY with
jittered back-off, and the generation counter every write bumps (the web page's cache key)."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional

from a2fbench.util.guard import show

from .model import LeaderboardError

BUSY_TIMEOUT_S = 60.0


OPEN_DEADLINE_S = 120.0


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def retry(fn: Callable[[], Any], deadline_s: float = OPEN_DEADLINE_S) -> Any:
    """Call ``fn`` until it stops raising SQLITE_BUSY/LOCKED, with jittered back-off, up to a deadline."""
    end = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not is_busy(e) or time.monotonic() > end:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` (waits for the write lock), COMMIT, or ROLLBACK on error."""
    try:
        retry(lambda: conn.execute("BEGIN IMMEDIATE"))
    except sqlite3.OperationalError as e:
        if not is_busy(e):
            raise not_writable(conn, e) from None
        raise LeaderboardError(f"the leaderboard database stayed locked for {OPEN_DEADLINE_S:.0f} s (another process "
                               "holds its write lock); retry when it has finished") from None
    try:
        yield conn
        retry(lambda: conn.execute("COMMIT"))
    except BaseException as e:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.OperationalError) and not is_busy(e):
            raise not_writable(conn, e) from None
        raise


def not_writable(conn: sqlite3.Connection, e: sqlite3.Error) -> LeaderboardError:
    """One line for a write SQLite refused (read-only file or folder, full disk, I/O error)."""
    try:
        path = next((r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"), "") or ":memory:"
    except sqlite3.Error:
        path = "the leaderboard database"
    return LeaderboardError(f"{show(path)}: cannot write the leaderboard database ({e}); check that the file and "
                            "its folder are writable and the disk has space, or pass another --db; nothing was "
                            "changed")


def bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def generation(conn: sqlite3.Connection) -> int:
    """A counter bumped by every write transaction (the web app's cache key)."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def meta_value(conn: sqlite3.Connection, key: str) -> Optional[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None
