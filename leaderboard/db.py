"""The leaderboard store: one SQLite file with versioned schema migrations.

Concurrency and crash safety come from SQLite itself, used carefully:

* WAL journal (readers never block the writer, a killed writer leaves only uncommitted WAL frames, which the
  next opener ignores), ``synchronous=NORMAL`` (durable across process crashes; a power cut may lose the last
  commits but never corrupts), and a long busy timeout so concurrent submitters queue instead of failing.
* Every write is ONE transaction opened with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so a
  transaction never has to upgrade a read snapshot, which is where "database is locked" errors come from in
  WAL mode). The duplicate check and the insert happen inside that transaction.
* Opening, migrating and seeding retry on ``SQLITE_BUSY`` with jittered back-off up to a deadline, because a
  few steps (switching a brand-new file to WAL) can return BUSY without consulting the busy handler.

Schema versions live in ``PRAGMA user_version``; :data:`MIGRATIONS` upgrades a file step by step inside one
immediate transaction, and a file newer than this code is refused.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Optional

from .entries import (
    Outcome,
    add_reported,
    check_consistency,
    edit_entry,
    eval_key,
    fetch_document,
    fetch_entries,
    fetch_scores,
    insert_reported,
    remove_entry,
    submit_doc,
)
from .model import LeaderboardError, load_reported, seed_path
from .schema import MIGRATIONS, SCHEMA_VERSION
from .scores import SEQ_COLUMNS, score_blob
from .transactions import (
    BUSY_TIMEOUT_S,
    OPEN_DEADLINE_S,
    bump,
    generation,
    immediate,
    is_busy,
    meta_value,
    retry,
)

__all__ = ["Outcome", "add_reported", "check_consistency", "edit_entry", "eval_key", "fetch_document", "fetch_entries",
           "fetch_scores", "remove_entry", "submit_doc", "MIGRATIONS", "SCHEMA_VERSION", "SEQ_COLUMNS", "score_blob",
           "generation", "immediate", "connect", "schema_version", "seed_reported"]


# ------------------------------------------------------------------------------------------ connection


def connect(path: str | os.PathLike, *, seed: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) a leaderboard database, migrated to :data:`SCHEMA_VERSION` and seeded.

    ``path`` may be ``":memory:"`` (used by read commands when no database exists yet).
    """
    memory = str(path) == ":memory:"
    if not memory:
        p = Path(path)
        if p.exists() and p.is_dir():
            raise LeaderboardError(f"{p}: expected a leaderboard database file, found a directory; pass --db FILE")
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise LeaderboardError(f"{path}: cannot open the leaderboard database ({e}); check the path and permissions") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if not memory:
            mode = retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise LeaderboardError(f"{path}: expected the database to switch to WAL mode, found {mode!r}; "
                                       "put it on a local file system")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, str(path))
        if seed:
            seed_reported(conn)
    except sqlite3.DatabaseError as e:
        conn.close()
        if isinstance(e, sqlite3.OperationalError) and is_busy(e):
            raise LeaderboardError(f"{path}: the database stayed locked for {OPEN_DEADLINE_S:.0f} s; another process "
                                   "holds it; retry when it has finished") from None
        raise LeaderboardError(f"{path}: expected an A2F-Bench leaderboard (SQLite) database, found an unreadable "
                               f"file ({e}); pass another --db or move this file away") from None
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection, where: str, target: int = SCHEMA_VERSION) -> None:
    v = schema_version(conn)
    if v > SCHEMA_VERSION:
        raise LeaderboardError(f"{where}: database schema version {v} is newer than this A2F-Bench supports "
                               f"({SCHEMA_VERSION}); upgrade a2fbench")
    if v >= target:
        return
    if v == 0:
        # a brand-new file must be empty; refuse to take over somebody else's SQLite database
        n = conn.execute("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()[0]
        if n:
            raise LeaderboardError(f"{where}: expected an A2F-Bench leaderboard database, found another SQLite "
                                   "database; pass another --db")
    with immediate(conn):
        v = schema_version(conn)  # another process may have migrated while we waited for the lock
        for k in range(v, target):
            MIGRATIONS[k](conn)
        if v < target:
            conn.execute(f"PRAGMA user_version = {int(target)}")
            if v > 0:
                bump(conn)


# ------------------------------------------------------------------------------------------ seeding
def seed_reported(conn: sqlite3.Connection, path: Optional[Path] = None) -> None:
    """Keep the shipped reported rows in sync with ``reported.yaml`` (only when that file changed)."""
    path = path or seed_path()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if meta_value(conn, "seed_sha256") == sha:
        return
    rows = load_reported(path)
    with immediate(conn):
        if meta_value(conn, "seed_sha256") == sha:
            return
        keep = set()
        for r in rows:
            keep.add(insert_reported(conn, r, seeded=True)[0])
        stale = [i for (i,) in conn.execute("SELECT id FROM entries WHERE seeded = 1").fetchall() if i not in keep]
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in stale])
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seed_sha256', ?)", (sha,))
        bump(conn)
