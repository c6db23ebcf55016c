"""Writing and reading entries: evaluated results (idempotent by content hash and by evaluation key),
reported rows, removal, and the reads the command line, the page and the ranking use."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from a2fbench.errors import ResultSchemaError
from a2fbench.registry import get_spec
from a2fbench.scoring.results import check_consistency as doc_consistency
from a2fbench.util.guard import show

from .axes import column, stored as stored_metrics
from .model import LeaderboardError, MethodMeta, ReportedEntry
from .scores import decode, score_blob
from .transactions import bump, immediate, now


@dataclass
class Outcome:
    entry_id: int
    added: bool
    message: str
    verified_now: bool = False


def eval_key(doc: dict) -> str:
    """What makes two results the same evaluation: data, split, protocol and length policy, predictions and
    metric versions."""
    parts = {
        "dataset": doc["dataset"]["fingerprint"], "split": doc["dataset"]["split"],
        "regions": (doc["dataset"].get("regions") or {}).get("digest"),
        "protocol": [doc["protocol"]["name"], doc["protocol"]["version"]],
        "length_policy": doc["protocol"].get("length_policy"),
        "predictions": doc["predictions"]["fingerprint"],
        "metrics": sorted((k, int(v.get("version", 1))) for k, v in doc["metrics"].items()),
    }
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def latency_ms(doc: dict) -> Optional[float]:
    """Algorithmic latency of predictions made in streaming mode (``predictions.streaming``), None when offline."""
    st = (doc.get("predictions") or {}).get("streaming")
    v = st.get("algorithmic_latency_ms") if isinstance(st, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _insert_entry(conn: sqlite3.Connection, fields: dict[str, Any]) -> int:
    cols = ", ".join(fields)
    marks = ", ".join("?" for _ in fields)
    cur = conn.execute(f"INSERT INTO entries ({cols}) VALUES ({marks})", tuple(fields.values()))
    return int(cur.lastrowid)


def _insert_metrics(conn: sqlite3.Connection, entry_id: int, metrics: dict[str, dict]) -> None:
    for name, m in metrics.items():
        ci = m.get("ci95") or (None, None)
        conn.execute("INSERT INTO metrics (entry_id, metric, value, unit, ci_lo, ci_hi) VALUES (?, ?, ?, ?, ?, ?)",
                     (entry_id, column(name, m), m.get("value"), m.get("unit"), ci[0], ci[1]))


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


def submit_doc(conn: sqlite3.Connection, doc: dict, meta: MethodMeta, *, verified: bool = False,
               verified_by: Optional[str] = None, source: Optional[str] = None, tampered: bool = False) -> Outcome:
    """Store one validated results document as an ``evaluated`` entry, in one transaction. Idempotent.

    ``verified_by``: ``signature`` or ``rescored`` (with ``verified``); ``source``: the file's path, named in
    conflict messages; ``tampered``: the file carries this installation's signature but no longer matches it
    (refused, see :func:`conflict`). The same evaluation (evaluation key) with other numbers is a conflict: a
    verified document displaces an unverified entry (marked disputed, kept, not ranked); anything else is
    refused naming both files, except an unverified file replacing an unverified entry of the same method
    (a re-made evaluation)."""
    fp = doc.get("content_hash")
    if not fp:
        raise LeaderboardError("results file has no content_hash; expected a file written by `a2fbench evaluate`; "
                               "re-run it")
    key = eval_key(doc)
    ds, proto = doc["dataset"], doc["protocol"]
    verified_by = (verified_by or "rescored") if verified else None
    with immediate(conn):
        row = conn.execute("SELECT id, method, verified, fingerprint, source FROM entries WHERE fingerprint = ? OR "
                           "eval_key = ?", (fp, key)).fetchone()
        displaced = None
        if row is not None:
            differ = _differ(conn, row[0], doc) if row[3] != fp else []
            if not differ or (not verified and not tampered and not row[2] and row[1] == meta.method):
                return _resubmit(conn, row, doc, meta, verified, verified_by)
            if not verified or row[2]:
                raise LeaderboardError(conflict(row, doc, differ, source, tampered))
            displaced = row  # a verified document against an unverified entry: the verified numbers stand
            conn.execute("UPDATE entries SET eval_key = NULL WHERE id = ?", (row[0],))
        elif tampered:
            raise LeaderboardError(f"{show(source or 'results')}: {TAMPERED}; nothing was stored; submit the file "
                                   "`a2fbench evaluate` wrote, or re-score the predictions with --verify PRED")
        fields = _meta_fields(meta) | {
            "fingerprint": fp, "eval_key": key, "kind": "evaluated",
            "dataset": ds["id"], "dataset_name": ds.get("name"), "dataset_version": ds.get("version"),
            "split": ds["split"], "protocol": proto["name"], "protocol_version": proto.get("version"),
            "length_policy": proto.get("length_policy"), "dataset_fingerprint": ds.get("fingerprint"), "predictions_fingerprint": doc["predictions"]["fingerprint"],
            "region_set": (ds.get("regions") or {}).get("set"),
            "regions_digest": (ds.get("regions") or {}).get("digest"),
            "n_sequences": ds.get("n_sequences"), "n_frames": ds.get("n_frames"),
            "synthetic": None if ds.get("synthetic") is None else int(bool(ds.get("synthetic"))),
            "a2fbench_version": doc.get("a2fbench_version"), "latency_ms": latency_ms(doc),
            "verified": int(verified), "verified_at": now() if verified else None, "verified_by": verified_by,
            "source": source, "created": doc.get("created"), "submitted_at": now(),
        }
        eid = _insert_entry(conn, fields)
        _insert_metrics(conn, eid, doc["metrics"])
        _insert_document(conn, eid, doc)
        if displaced is not None:
            conn.execute("UPDATE entries SET disputed_by = ? WHERE id = ?", (eid, displaced[0]))
        bump(conn)
    msg = (f"added entry #{eid}: {show(meta.method)} on {ds['id']}/{show(ds['split'])} ({proto['name']})"
           + (f" [verified] ({verified_by})" if verified else "")
           + (" [scored on a synthetic stand-in]" if ds.get("synthetic") else ""))
    if displaced is not None:
        msg += (f"; conflict: unverified entry #{displaced[0]} ({show(displaced[1])}, from "
                f"{show(displaced[4] or 'an unnamed file')}) claimed other numbers for the same evaluation; it is now "
                "marked disputed and no longer ranked")
    return Outcome(eid, True, msg, verified_now=verified)


#: why a file signed here is refused
TAMPERED = ("its signature (this installation's key) does not match its content: it was edited after `a2fbench "
            "evaluate` wrote it")


def _differ(conn: sqlite3.Connection, eid: int, doc: dict) -> list[str]:
    """The metrics whose value differs between entry ``eid`` and ``doc`` (and those only one of them has)."""
    stored = {n: v for n, v in conn.execute("SELECT metric, value FROM metrics WHERE entry_id = ?", (eid,))}
    docm = stored_metrics(doc["metrics"])  # axes under their versioned names (leaderboard.axes)
    return sorted(n for n, m in docm.items() if stored.get(n) != m.get("value")) + sorted(set(stored) - set(docm))


def conflict(row: tuple, doc: dict, differ: list[str], source: Optional[str], tampered: bool = False) -> str:
    """One line: results ``doc`` (from ``source``) and entry ``row`` are the same evaluation with other numbers."""
    eid, method, was_verified, _, old_source = row
    name = differ[0]
    new = stored_metrics(doc["metrics"]).get(name, {}).get("value")
    return (f"conflict: {show(source or 'these results')} gives {name} {new!r} but entry #{eid} ({show(method)}"
            f"{', verified' if was_verified else ''}, from {show(old_source or 'an unnamed file')}) holds other numbers "
            f"for the same evaluation (same predictions, data and protocol)"
            + (f"; {show(source or 'the file')}: {TAMPERED}" if tampered else "")
            + "; one evaluation has one set of numbers; nothing was stored"
            + ("" if was_verified else "; submit the genuine file with --verify PRED to settle it, or remove "
               f"entry #{eid} (`a2fbench leaderboard remove {eid}`)"))


#: metadata a user may change on an existing entry (the numbers come from its results file only)
EDITABLE = ("version", "params", "inference_s", "inference_device", "training_data", "code_url", "trained_on_test_ids")


def _changes(conn: sqlite3.Connection, eid: int, meta: MethodMeta, fields: Sequence[str] = EDITABLE) -> dict:
    """{field: (old, new)} for the metadata ``meta`` gives (not None) that differs from entry ``eid``'s."""
    new = {k: v for k, v in _meta_fields(meta).items() if k in fields and v is not None}
    if not new:
        return {}
    old = dict(zip(new, conn.execute(f"SELECT {', '.join(new)} FROM entries WHERE id = ?", (eid,)).fetchone()))
    return {k: (old[k], v) for k, v in new.items() if old[k] != v}


def _apply(conn: sqlite3.Connection, eid: int, changes: dict) -> None:
    if changes:
        conn.execute(f"UPDATE entries SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                     (*(v for _, v in changes.values()), eid))


def describe_changes(changes: dict) -> str:
    return "; ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items())


def _show(v: Any) -> str:
    return "unset" if v is None else repr(v)


def _resubmit(conn: sqlite3.Connection, row: tuple, doc: dict, meta: MethodMeta, verified: bool,
              verified_by: Optional[str]) -> Outcome:
    """A results document whose evaluation is already entry ``row`` with the same numbers (or, unverified and of
    the same method, a re-made file with other numbers): update its metadata, mark it verified, or replace its
    numbers."""
    eid, method, was_verified, old_fp, _ = row
    fp = doc["content_hash"]
    same = "results file" if old_fp == fp else "predictions evaluated on the same data and protocol"
    if method != meta.method:
        raise LeaderboardError(f"these results ({same}) are already entry #{eid} under method {show(method)!r}, not "
                               f"{show(meta.method)!r}; one evaluation belongs to one method (rename it with `a2fbench "
                               f"leaderboard edit {eid} --method NAME`)")
    said = []
    differ = _differ(conn, eid, doc)
    if old_fp != fp and differ:  # a re-made file with other numbers (the same numbers: nothing to replace)
        conn.execute("DELETE FROM metrics WHERE entry_id = ?", (eid,))
        conn.execute("DELETE FROM documents WHERE entry_id = ?", (eid,))
        conn.execute("DELETE FROM scores WHERE entry_id = ?", (eid,))
        _insert_metrics(conn, eid, doc["metrics"])
        _insert_document(conn, eid, doc)
        conn.execute("UPDATE entries SET fingerprint = ?, created = ? WHERE id = ?", (fp, doc.get("created"), eid))
        said.append(f"conflicting numbers of the same evaluation, unverified both: results file replaced "
                     f"({', '.join(differ)} changed)")
    changes = _changes(conn, eid, meta)
    _apply(conn, eid, changes)
    if changes:
        said.append("updated " + describe_changes(changes))
    if verified and not was_verified:
        conn.execute("UPDATE entries SET verified = 1, verified_at = ?, verified_by = ? WHERE id = ?",
                     (now(), verified_by, eid))
        said.append(f"now marked verified ({verified_by})")
    if not said:
        return Outcome(eid, False, f"already on the leaderboard as entry #{eid} ({show(method)}; same {same}); "
                                   "nothing changed")
    bump(conn)
    return Outcome(eid, False, f"entry #{eid} ({show(method)}): " + "; ".join(said),
                   verified_now=verified and not was_verified)


def edit_entry(conn: sqlite3.Connection, entry_id: int, meta: MethodMeta, *, rename: bool = False) -> Outcome:
    """Change an entry's metadata (and, with ``rename``, its method name); its numbers never change."""
    with immediate(conn):
        row = conn.execute("SELECT id, method, kind, seeded FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise LeaderboardError(f"expected an entry #{entry_id}, found none; the ids are in the `id` column of "
                                   "`a2fbench leaderboard show`")
        eid, method, kind, seeded = row
        if seeded:
            raise LeaderboardError(f"entry #{eid} is a reported row shipped with A2F-Bench (leaderboard/reported.yaml); "
                                   "it is not editable: add your own corrected row with `add-reported`")
        changes = _changes(conn, eid, meta, EDITABLE + (("method",) if rename else ()))
        if not changes:
            return Outcome(eid, False, f"entry #{eid} ({method}): nothing to change")
        _apply(conn, eid, changes)
        bump(conn)
    return Outcome(eid, False, f"entry #{eid} ({method}, {kind}): updated {describe_changes(changes)}")


def insert_reported(conn: sqlite3.Connection, r: ReportedEntry, *, seeded: bool) -> tuple[int, bool]:
    fp = r.fingerprint()
    row = conn.execute("SELECT id FROM entries WHERE fingerprint = ?", (fp,)).fetchone()
    if row is not None:
        if seeded:
            conn.execute("UPDATE entries SET seeded = 1 WHERE id = ?", (row[0],))
        return int(row[0]), False
    spec = get_spec(r.dataset)
    meta = MethodMeta(**{k: getattr(r, k) for k in MethodMeta.model_fields})
    fields = _meta_fields(meta) | {
        "fingerprint": fp, "kind": "reported", "dataset": spec.id, "dataset_name": spec.name,
        "split": r.split, "protocol": r.protocol, "citation": r.citation, "source_url": r.source_url,
        "source_type": r.source_type, "note": r.note, "seeded": int(seeded), "submitted_at": now(),
    }
    eid = _insert_entry(conn, fields)
    _insert_metrics(conn, eid, {k: m.model_dump() for k, m in r.metrics.items()})
    return eid, True


def add_reported(conn: sqlite3.Connection, rows: Sequence[ReportedEntry]) -> list[Outcome]:
    """Add reported (claimed) rows from a user file, all in one transaction. Idempotent per row."""
    out = []
    with immediate(conn):
        for r in rows:
            eid, added = insert_reported(conn, r, seeded=False)
            what = "added" if added else "already present as"
            out.append(Outcome(eid, added, f"{what} reported entry #{eid}: {r.method} on {r.dataset}/{r.split}"))
        if any(o.added for o in out):
            bump(conn)
    return out


def remove_entry(conn: sqlite3.Connection, entry_id: int) -> dict:
    with immediate(conn):
        row = conn.execute("SELECT id, method, kind FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise LeaderboardError(f"expected an entry #{entry_id}, found none; the ids are in the `id` column of "
                                   "`a2fbench leaderboard show`; nothing was removed")
        conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        bump(conn)
    return {"id": row[0], "method": row[1], "kind": row[2]}


_ENTRY_COLS = ("id", "kind", "method", "version", "params", "inference_s", "inference_device", "training_data",
               "code_url", "trained_on_test_ids", "dataset", "dataset_name", "dataset_version", "split", "protocol",
               "protocol_version", "length_policy", "dataset_fingerprint", "region_set", "regions_digest", "predictions_fingerprint",
               "n_sequences", "n_frames", "synthetic", "a2fbench_version", "verified", "verified_at", "citation",
               "source_url", "source_type",
               "note", "seeded", "created", "submitted_at", "fingerprint", "verified_by", "source", "disputed_by",
               "latency_ms")


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
    """``{entry_id: (seqset, (S, 1 + len(scores.SEQ_COLUMNS)) float64)}`` for evaluated entries."""
    q = "SELECT entry_id, seqset, n, data FROM scores"
    rows = conn.execute(q).fetchall()
    want = None if ids is None else set(ids)
    out = {}
    for eid, seqset, n, data in rows:
        if want is not None and eid not in want:
            continue
        out[eid] = (seqset, decode(n, data))
    return out


def fetch_document(conn: sqlite3.Connection, entry_id: int) -> Optional[dict]:
    row = conn.execute("SELECT doc FROM documents WHERE entry_id = ?", (entry_id,)).fetchone()
    return None if row is None else json.loads(row[0])


def check_consistency(conn: sqlite3.Connection) -> list[str]:
    """Everything that should hold after any sequence of (possibly killed) writers. Empty list = consistent."""
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
        docm = stored_metrics(doc["metrics"])
        if set(stored) != set(docm):
            problems.append(f"entry #{eid}: metrics rows {sorted(stored)} differ from its document")
            continue
        for name, v in stored.items():
            if v != docm[name].get("value"):
                problems.append(f"entry #{eid}: stored {name} {v!r} differs from its document")
        try:
            doc_consistency(doc, f"entry #{eid}")  # aggregates follow from per-sequence scores (results' tolerance)
        except ResultSchemaError as e:
            problems.append(str(e))
        if n != len(doc["per_sequence"]):
            problems.append(f"entry #{eid}: scores blob has {n} rows, document {len(doc['per_sequence'])}")
    return problems
