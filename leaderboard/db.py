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

import contextlib
import hashlib
import json
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .model import LeaderboardError, MethodMeta, ReportedEntry, load_reported, seed_path

BUSY_TIMEOUT_S = 60.0
OPEN_DEADLINE_S = 120.0
#: Per-sequence columns kept in the ``scores`` blob, after ``frames``.
SEQ_COLUMNS = ("LVE", "MVE", "UFVE", "FDD")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ migrations
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


def _v1(conn: sqlite3.Connection) -> None:
    for stmt in _split_sql(_V1):
        conn.execute(stmt)


def _split_sql(script: str) -> list[str]:
    # ``executescript`` commits the open transaction first, so migrations run statement by statement instead
    return [s.strip() for s in script.split(";") if s.strip()]


#: ``MIGRATIONS[k]`` upgrades a database from ``user_version`` k to k + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


# ------------------------------------------------------------------------------------------ connection
def _is_busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def _retry(fn: Callable[[], Any], deadline_s: float = OPEN_DEADLINE_S) -> Any:
    """Call ``fn`` until it stops raising SQLITE_BUSY/LOCKED, with jittered back-off, up to a deadline."""
    end = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e) or time.monotonic() > end:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` (waits for the write lock), COMMIT, or ROLLBACK on error."""
    try:
        _retry(lambda: conn.execute("BEGIN IMMEDIATE"))
    except sqlite3.OperationalError as e:
        if not _is_busy(e):
            raise
        raise LeaderboardError(f"the leaderboard database stayed locked for {OPEN_DEADLINE_S:.0f} s (another process "
                               "holds its write lock); retry when it has finished") from None
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    _retry(lambda: conn.execute("COMMIT"))


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
            mode = _retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
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
        if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
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
                _bump(conn)


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def generation(conn: sqlite3.Connection) -> int:
    """A counter bumped by every write transaction (the web app's cache key)."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def _meta(conn: sqlite3.Connection, key: str) -> Optional[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


# ------------------------------------------------------------------------------------------ seeding
def seed_reported(conn: sqlite3.Connection, path: Optional[Path] = None) -> None:
    """Keep the shipped reported rows in sync with ``reported.yaml`` (only when that file changed)."""
    path = path or seed_path()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if _meta(conn, "seed_sha256") == sha:
        return
    rows = load_reported(path)
    with immediate(conn):
        if _meta(conn, "seed_sha256") == sha:
            return
        keep = set()
        for r in rows:
            keep.add(_insert_reported(conn, r, seeded=True)[0])
        stale = [i for (i,) in conn.execute("SELECT id FROM entries WHERE seeded = 1").fetchall() if i not in keep]
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in stale])
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seed_sha256', ?)", (sha,))
        _bump(conn)


# ------------------------------------------------------------------------------------------ writing
@dataclass
class Outcome:
    entry_id: int
    added: bool
    message: str
    verified_now: bool = False


def eval_key(doc: dict) -> str:
    """What makes two results the same evaluation: data, split, protocol, predictions and metric versions."""
    parts = {
        "dataset": doc["dataset"]["fingerprint"], "split": doc["dataset"]["split"],
        "regions": (doc["dataset"].get("regions") or {}).get("digest"),
        "protocol": [doc["protocol"]["name"], doc["protocol"]["version"]],
        "predictions": doc["predictions"]["fingerprint"],
        "metrics": sorted((k, int(v.get("version", 1))) for k, v in doc["metrics"].items()),
    }
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def score_blob(doc: dict) -> tuple[str, int, bytes]:
    """Per-sequence scores as a float64 (S, 1 + len(SEQ_COLUMNS)) matrix, rows in sorted sequence-id order.

    Column 0 holds the frame counts; a missing score is NaN. ``seqset`` names the exact set of GT sequences
    (dataset fingerprint, split, ids): only entries with the same ``seqset`` are compared pairwise.
    """
    rows = sorted(doc["per_sequence"], key=lambda r: str(r["id"]))
    m = np.full((len(rows), 1 + len(SEQ_COLUMNS)), np.nan, dtype=np.float64)
    for i, r in enumerate(rows):
        m[i, 0] = float(r["frames"])
        for j, k in enumerate(SEQ_COLUMNS, 1):
            v = r.get(k)
            if v is not None:
                m[i, j] = float(v)
    ident = "\n".join([doc["dataset"]["fingerprint"], doc["dataset"]["split"], *(str(r["id"]) for r in rows)])
    return "sha256:" + hashlib.sha256(ident.encode()).hexdigest(), len(rows), m.tobytes()


def _insert_entry(conn: sqlite3.Connection, fields: dict[str, Any]) -> int:
    cols = ", ".join(fields)
    marks = ", ".join("?" for _ in fields)
    cur = conn.execute(f"INSERT INTO entries ({cols}) VALUES ({marks})", tuple(fields.values()))
    return int(cur.lastrowid)


def _insert_metrics(conn: sqlite3.Connection, entry_id: int, metrics: dict[str, dict]) -> None:
    for name, m in metrics.items():
        ci = m.get("ci95") or (None, None)
        conn.execute("INSERT INTO metrics (entry_id, metric, value, unit, ci_lo, ci_hi) VALUES (?, ?, ?, ?, ?, ?)",
                     (entry_id, name, m.get("value"), m.get("unit"), ci[0], ci[1]))


def _insert_document(conn: sqlite3.Connection, entry_id: int, doc: dict) -> None:
    conn.execute("INSERT INTO documents (entry_id, doc) VALUES (?, ?)",
                 (entry_id, json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)))
    seqset, n, blob = score_blob(doc)
    conn.execute("INSERT INTO scores (entry_id, seqset, n, data) VALUES (?, ?, ?, ?)", (entry_id, seqset, n, blob))


def _meta_fields(meta: MethodMeta) -> dict[str, Any]:
    d = meta.model_dump()
    tot = d.pop("trained_on_test_ids")
    d["trained_on_test_ids"] = None if tot is None else int(bool(tot))
    return d


def submit_doc(conn: sqlite3.Connection, doc: dict, meta: MethodMeta, *, verified: bool = False) -> Outcome:
    """Store one validated results document as an ``evaluated`` entry, in one transaction. Idempotent."""
    fp = doc.get("content_hash")
    if not fp:
        raise LeaderboardError("results file has no content_hash; expected a file written by `a2fbench evaluate`; "
                               "re-run it")
    key = eval_key(doc)
    ds, proto = doc["dataset"], doc["protocol"]
    with immediate(conn):
        row = conn.execute("SELECT id, method, verified, fingerprint FROM entries WHERE fingerprint = ? OR eval_key = ?",
                           (fp, key)).fetchone()
        if row is not None:
            eid, method, was_verified, old_fp = row
            same = "results file" if old_fp == fp else "predictions evaluated on the same data and protocol"
            if method != meta.method:
                raise LeaderboardError(f"these results ({same}) are already entry #{eid} under method {method!r}, "
                                       f"not {meta.method!r}; one evaluation belongs to one method")
            if verified and not was_verified:
                conn.execute("UPDATE entries SET verified = 1, verified_at = ? WHERE id = ?", (_now(), eid))
                _bump(conn)
                return Outcome(eid, False, f"entry #{eid} ({method}) was already on the leaderboard; now marked "
                                           "verified", verified_now=True)
            return Outcome(eid, False, f"already on the leaderboard as entry #{eid} ({method}; same {same}); "
                                       "nothing added")
        fields = _meta_fields(meta) | {
            "fingerprint": fp, "eval_key": key, "kind": "evaluated",
            "dataset": ds["id"], "dataset_name": ds.get("name"), "dataset_version": ds.get("version"),
            "split": ds["split"], "protocol": proto["name"], "protocol_version": proto.get("version"),
            "dataset_fingerprint": ds.get("fingerprint"), "predictions_fingerprint": doc["predictions"]["fingerprint"],
            "region_set": (ds.get("regions") or {}).get("set"),
            "regions_digest": (ds.get("regions") or {}).get("digest"),
            "n_sequences": ds.get("n_sequences"), "n_frames": ds.get("n_frames"),
            "synthetic": None if ds.get("synthetic") is None else int(bool(ds.get("synthetic"))),
            "a2fbench_version": doc.get("a2fbench_version"),
            "verified": int(verified), "verified_at": _now() if verified else None,
            "created": doc.get("created"), "submitted_at": _now(),
        }
        eid = _insert_entry(conn, fields)
        _insert_metrics(conn, eid, doc["metrics"])
        _insert_document(conn, eid, doc)
        _bump(conn)
    return Outcome(eid, True, f"added entry #{eid}: {meta.method} on {ds['id']}/{ds['split']} ({proto['name']})"
                              + (" [verified]" if verified else "")
                              + (" [scored on a synthetic stand-in]" if ds.get("synthetic") else ""))


def _insert_reported(conn: sqlite3.Connection, r: ReportedEntry, *, seeded: bool) -> tuple[int, bool]:
    fp = r.fingerprint()
    row = conn.execute("SELECT id FROM entries WHERE fingerprint = ?", (fp,)).fetchone()
    if row is not None:
        if seeded:
            conn.execute("UPDATE entries SET seeded = 1 WHERE id = ?", (row[0],))
        return int(row[0]), False
    from a2fbench.registry import get_spec

    spec = get_spec(r.dataset)
    meta = MethodMeta(**{k: getattr(r, k) for k in MethodMeta.model_fields})
    fields = _meta_fields(meta) | {
        "fingerprint": fp, "kind": "reported", "dataset": spec.id, "dataset_name": spec.name,
        "split": r.split, "protocol": r.protocol, "citation": r.citation, "source_url": r.source_url,
        "source_type": r.source_type, "note": r.note, "seeded": int(seeded), "submitted_at": _now(),
    }
    eid = _insert_entry(conn, fields)
    _insert_metrics(conn, eid, {k: m.model_dump() for k, m in r.metrics.items()})
    return eid, True


def add_reported(conn: sqlite3.Connection, rows: Sequence[ReportedEntry]) -> list[Outcome]:
    """Add reported (claimed) rows from a user file, all in one transaction. Idempotent per row."""
    out = []
    with immediate(conn):
        for r in rows:
            eid, added = _insert_reported(conn, r, seeded=False)
            what = "added" if added else "already present as"
            out.append(Outcome(eid, added, f"{what} reported entry #{eid}: {r.method} on {r.dataset}/{r.split}"))
        if any(o.added for o in out):
            _bump(conn)
    return out


def remove_entry(conn: sqlite3.Connection, entry_id: int) -> dict:
    with immediate(conn):
        row = conn.execute("SELECT id, method, kind FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise LeaderboardError(f"expected an entry #{entry_id}, found none; see `a2fbench leaderboard show`")
        conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        _bump(conn)
    return {"id": row[0], "method": row[1], "kind": row[2]}


# ------------------------------------------------------------------------------------------ reading
_ENTRY_COLS = ("id", "kind", "method", "version", "params", "inference_s", "inference_device", "training_data",
               "code_url", "trained_on_test_ids", "dataset", "dataset_name", "dataset_version", "split", "protocol",
               "protocol_version", "dataset_fingerprint", "region_set", "regions_digest", "predictions_fingerprint",
               "n_sequences", "n_frames", "synthetic", "a2fbench_version", "verified", "verified_at", "citation",
               "source_url", "source_type",
               "note", "seeded", "created", "submitted_at", "fingerprint")
_BOOL_COLS = ("trained_on_test_ids", "synthetic", "verified", "seeded")


def fetch_entries(conn: sqlite3.Connection, datasets: Optional[Sequence[str]] = None,
                  kind: Optional[str] = None, ids: Optional[Sequence[int]] = None) -> list[dict[str, Any]]:
    """Entries with their metrics (``{"LVE": {"value", "unit", "ci95"}}``), in id order, one read snapshot."""
    where: list[str] = []
    args: list[Any] = []
    if ids is not None:
        where.append(f"id IN ({', '.join('?' for _ in ids) or 'NULL'})")
        args += [int(i) for i in ids]
    if datasets:
        where.append(f"dataset IN ({', '.join('?' for _ in datasets)})")
        args += list(datasets)
    if kind:
        where.append("kind = ?")
        args.append(kind)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    conn.execute("BEGIN")  # one consistent snapshot for both queries
    try:
        rows = conn.execute(f"SELECT {', '.join(_ENTRY_COLS)} FROM entries{clause} ORDER BY id", args).fetchall()
        mq = "SELECT entry_id, metric, value, unit, ci_lo, ci_hi FROM metrics"
        if clause:
            mq += f" WHERE entry_id IN (SELECT id FROM entries{clause})"
        mrows = conn.execute(mq, args).fetchall()
    finally:
        conn.execute("COMMIT")
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        e = dict(zip(_ENTRY_COLS, r))
        for b in _BOOL_COLS:
            if e[b] is not None:
                e[b] = bool(e[b])
        e["metrics"] = {}
        out[e["id"]] = e
    for eid, name, value, unit, lo, hi in mrows:
        e = out.get(eid)
        if e is not None:
            e["metrics"][name] = {"value": value, "unit": unit,
                                  "ci95": None if lo is None or hi is None else [lo, hi]}
    return list(out.values())


def fetch_scores(conn: sqlite3.Connection, ids: Optional[Sequence[int]] = None) -> dict[int, tuple[str, np.ndarray]]:
    """``{entry_id: (seqset, (S, 1 + len(SEQ_COLUMNS)) float64)}`` for evaluated entries."""
    q = "SELECT entry_id, seqset, n, data FROM scores"
    rows = conn.execute(q).fetchall()
    want = None if ids is None else set(ids)
    out = {}
    for eid, seqset, n, data in rows:
        if want is not None and eid not in want:
            continue
        out[eid] = (seqset, np.frombuffer(data, dtype=np.float64).reshape(n, 1 + len(SEQ_COLUMNS)))
    return out


def fetch_document(conn: sqlite3.Connection, entry_id: int) -> Optional[dict]:
    row = conn.execute("SELECT doc FROM documents WHERE entry_id = ?", (entry_id,)).fetchone()
    return None if row is None else json.loads(row[0])


def check_consistency(conn: sqlite3.Connection) -> list[str]:
    """Everything that should hold after any sequence of (possibly killed) writers. Empty list = consistent."""
    from a2fbench.errors import ResultSchemaError
    from a2fbench.results import check_consistency as doc_consistency

    problems = []
    ic = conn.execute("PRAGMA integrity_check").fetchall()
    if ic != [("ok",)]:
        problems.append(f"integrity_check: {ic[:3]}")
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    if fk:
        problems.append(f"foreign_key_check: {fk[:3]}")
    dup = conn.execute("SELECT fingerprint, count(*) FROM entries GROUP BY fingerprint HAVING count(*) > 1").fetchall()
    if dup:
        problems.append(f"duplicate fingerprints: {dup[:3]}")
    for (eid,) in conn.execute("SELECT id FROM entries e WHERE NOT EXISTS "
                               "(SELECT 1 FROM metrics m WHERE m.entry_id = e.id)").fetchall():
        problems.append(f"entry #{eid} has no metrics")
    rows = conn.execute("SELECT e.id, d.doc, s.n FROM entries e LEFT JOIN documents d ON d.entry_id = e.id "
                        "LEFT JOIN scores s ON s.entry_id = e.id WHERE e.kind = 'evaluated'").fetchall()
    for eid, text, n in rows:
        if text is None or n is None:
            problems.append(f"evaluated entry #{eid} lacks its document or scores")
            continue
        doc = json.loads(text)
        stored = {name: v for name, v in conn.execute("SELECT metric, value FROM metrics WHERE entry_id = ?", (eid,))}
        if set(stored) != set(doc["metrics"]):
            problems.append(f"entry #{eid}: metrics rows {sorted(stored)} differ from its document")
            continue
        for name, v in stored.items():
            if v != doc["metrics"][name].get("value"):
                problems.append(f"entry #{eid}: stored {name} {v!r} differs from its document")
        try:
            doc_consistency(doc, f"entry #{eid}")  # aggregates follow from per-sequence scores (results' tolerance)
        except ResultSchemaError as e:
            problems.append(str(e))
        if n != len(doc["per_sequence"]):
            problems.append(f"entry #{eid}: scores blob has {n} rows, document {len(doc['per_sequence'])}")
    return problems
