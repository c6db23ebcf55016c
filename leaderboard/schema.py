"""The database schema and its migrations: ``MIGRATIONS[k]`` upgrades a file from ``PRAGMA user_version`` k
to k + 1."""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

from .entries import eval_key, latency_ms
from .scores import score_blob

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    id                      INTEGER PRIMARY KEY,
    fingerprint             TEXT NOT NULL UNIQUE,
    eval_key                TEXT UNIQUE,
    kind                    TEXT NOT NULL CHECK (kind IN ('evaluated', 'reported')),
    method                  TEXT NOT NULL,
    version                 TEXT,
    params                  INTEGER,
    inference_s             REAL,
    inference_device        TEXT,
    training_data           TEXT,
    code_url                TEXT,
    trained_on_test_ids     INTEGER,
    dataset                 TEXT NOT NULL,
    dataset_name            TEXT,
    dataset_version         INTEGER,
    split                   TEXT NOT NULL,
    protocol                TEXT NOT NULL,
    protocol_version        INTEGER,
    dataset_fingerprint     TEXT,
    region_set              TEXT,
    regions_digest          TEXT,
    predictions_fingerprint TEXT,
    n_sequences             INTEGER,
    n_frames                INTEGER,
    synthetic               INTEGER,
    a2fbench_version        TEXT,
    verified                INTEGER NOT NULL DEFAULT 0,
    verified_at             TEXT,
    citation                TEXT,
    source_url              TEXT,
    source_type             TEXT,
    note                    TEXT,
    seeded                  INTEGER NOT NULL DEFAULT 0,
    created                 TEXT,
    submitted_at            TEXT NOT NULL
);
CREATE INDEX entries_group ON entries (dataset, split, protocol);
CREATE TABLE metrics (
    entry_id INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    metric   TEXT NOT NULL,
    value    REAL,
    unit     TEXT,
    ci_lo    REAL,
    ci_hi    REAL,
    PRIMARY KEY (entry_id, metric)
) WITHOUT ROWID;
CREATE TABLE documents (
    entry_id INTEGER PRIMARY KEY REFERENCES entries (id) ON DELETE CASCADE,
    doc      TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('generation', '0');
"""


_V2 = """
CREATE TABLE scores (
    entry_id INTEGER PRIMARY KEY REFERENCES entries (id) ON DELETE CASCADE,
    seqset   TEXT NOT NULL,
    n        INTEGER NOT NULL,
    data     BLOB NOT NULL
);
CREATE INDEX scores_seqset ON scores (seqset);
"""


def _v2(conn: sqlite3.Connection) -> None:
    """Per-sequence score matrices (for paired ties) as float64 blobs, back-filled from the stored documents."""
    for stmt in _split_sql(_V2):
        conn.execute(stmt)
    for entry_id, text in conn.execute("SELECT entry_id, doc FROM documents").fetchall():
        seqset, n, blob = score_blob(json.loads(text))
        conn.execute("INSERT INTO scores (entry_id, seqset, n, data) VALUES (?, ?, ?, ?)", (entry_id, seqset, n, blob))


def _v3(conn: sqlite3.Connection) -> None:
    """The length policy of every evaluated entry (ranked only with entries of the same policy), filled from the
    stored documents; evaluation keys now include it, so they are recomputed."""
    conn.execute("ALTER TABLE entries ADD COLUMN length_policy TEXT")
    for entry_id, text in conn.execute("SELECT entry_id, doc FROM documents").fetchall():
        doc = json.loads(text)
        conn.execute("UPDATE entries SET length_policy = ?, eval_key = ? WHERE id = ?",
                     (doc["protocol"].get("length_policy"), eval_key(doc), entry_id))


def _v4(conn: sqlite3.Connection) -> None:
    """Tamper evidence (additive): how an entry was verified (``signature``: signed by this installation's
    ``evaluate``; ``rescored``: ``submit --verify`` re-ran it), the results file it came from, and, for an
    unverified entry contradicted by a verified one of the same evaluation, that entry's id (shown apart,
    never ranked). Entries verified before v4 were re-scored (``--verify`` was the only way)."""
    conn.execute("ALTER TABLE entries ADD COLUMN verified_by TEXT")
    conn.execute("ALTER TABLE entries ADD COLUMN source TEXT")
    conn.execute("ALTER TABLE entries ADD COLUMN disputed_by INTEGER")
    conn.execute("UPDATE entries SET verified_by = 'rescored' WHERE verified = 1")


def _v5(conn: sqlite3.Connection) -> None:
    """The algorithmic latency (ms) of entries whose predictions were made in streaming mode (NULL: offline), from
    the stored documents' ``predictions.streaming``; streaming entries rank in their own track per latency."""
    conn.execute("ALTER TABLE entries ADD COLUMN latency_ms REAL")
    for entry_id, text in conn.execute("SELECT entry_id, doc FROM documents").fetchall():
        conn.execute("UPDATE entries SET latency_ms = ? WHERE id = ?", (latency_ms(json.loads(text)), entry_id))


def _v1(conn: sqlite3.Connection) -> None:
    for stmt in _split_sql(_V1):
        conn.execute(stmt)


def _split_sql(script: str) -> list[str]:
    # ``executescript`` commits the open transaction first, so migrations run statement by statement instead
    return [s.strip() for s in script.split(";") if s.strip()]


#: ``MIGRATIONS[k]`` upgrades a database from ``user_version`` k to k + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4, _v5]


SCHEMA_VERSION = len(MIGRATIONS)
