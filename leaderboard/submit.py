"""Submitting a results file: validate, optionally re-run the evaluation, store in one transaction."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from a2fbench.errors import A2FBenchError, ResultSchemaError
from a2fbench.registry import get_spec
from a2fbench.scoring.results import load, signature_status
from a2fbench.util.paths import default_data

from . import db
from .model import LeaderboardError, MethodMeta

#: Relative tolerance when comparing a submitted number with the re-run evaluation. The same code on the
#: same arrays gives the same bits; the slack only absorbs a different BLAS or thread count on another machine.
VERIFY_REL_TOL = 1e-6


def load_results(path: str | os.PathLike) -> dict:
    """:func:`a2fbench.scoring.results.load` plus what the leaderboard needs on top: a content hash, a known dataset."""

    doc = load(path)  # schema, content hash, aggregates vs per-sequence scores
    if not doc.get("content_hash"):
        raise ResultSchemaError(f"{path}: expected a content_hash (written by `a2fbench evaluate`), found none; "
                                "re-run `a2fbench evaluate`")
    try:
        get_spec(doc["dataset"]["id"])
    except A2FBenchError as e:
        raise ResultSchemaError(f"{path}: {e}") from None
    return doc


def recorded_method(doc: dict, results_path: str | os.PathLike) -> str:
    """The method results ``doc`` (loaded from ``results_path``) records (``predictions.method``), for a submit
    without ``--method``."""
    name = (doc.get("predictions") or {}).get("method")
    if not name:
        raise LeaderboardError(f"{results_path}: expected a method name, found none in the file (predictions.method) "
                               "or on the command line; pass --method NAME (or evaluate with --method NAME)")
    return str(name)


def _close(a: Optional[float], b: Optional[float]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=VERIFY_REL_TOL, abs_tol=1e-300)


def compare_docs(submitted: dict, fresh: dict) -> list[str]:
    """Where a submitted results document and a fresh evaluation disagree (empty: they agree)."""
    out = []
    for key in ("id", "split", "fingerprint", "n_sequences", "n_frames"):
        a, b = submitted["dataset"].get(key), fresh["dataset"].get(key)
        if a != b:
            out.append(f"dataset.{key} is {a!r} in the file but {b!r} now")
    for key in ("name", "version", "length_policy"):
        a, b = submitted["protocol"].get(key), fresh["protocol"].get(key)
        if a != b:
            out.append(f"protocol.{key} is {a!r} in the file but {b!r} now")
    a, b = submitted["predictions"].get("fingerprint"), fresh["predictions"].get("fingerprint")
    if a != b:
        out.append("the predictions folder differs from the one that was evaluated (predictions.fingerprint)")
    for name, m in submitted["metrics"].items():
        f = fresh["metrics"].get(name)
        if f is None:
            out.append(f"{name} is in the file but the evaluation does not produce it")
        elif not _close(m.get("value"), f.get("value")):
            out.append(f"{name} is {m.get('value')!r} in the file but {f.get('value')!r} when re-evaluated")
    fresh_seq = {r["id"]: r for r in fresh["per_sequence"]}
    for r in submitted["per_sequence"]:
        g = fresh_seq.get(r["id"])
        if g is None:
            out.append(f"sequence {r['id']!r} is in the file but not in the re-evaluation")
            continue
        for k, v in r.items():
            if k != "id" and isinstance(v, (int, float)) and not _close(v, g.get(k)):
                out.append(f"sequence {r['id']!r} {k} is {v!r} in the file but {g.get(k)!r} when re-evaluated")
                break
    return out


def verify(doc: dict, pred: Path, data: Path) -> None:
    """Re-run the evaluation on the local store; raise :class:`LeaderboardError` unless the numbers agree."""
    # imported here: it takes 0.35 s (measured) and only `submit --verify` re-runs an evaluation
    from a2fbench.scoring.evaluate import evaluate

    selected = doc["protocol"].get("metrics_selected")  # `evaluate --metrics` (axes included)
    mouth = (doc["dataset"].get("regions") or {}).get("mouth_pair") or {}
    fresh = evaluate(doc["dataset"]["id"], pred, data, split=doc["dataset"]["split"],
                     protocol=doc["protocol"]["name"], length_policy=doc["protocol"].get("length_policy"),
                     prefix=doc["predictions"].get("prefix"), metrics=",".join(selected) if selected else None,
                     mouth_pair=(mouth["upper"], mouth["lower"]) if mouth.get("source") == "--mouth-pair" else None)
    problems = compare_docs(doc, fresh)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LeaderboardError(f"verification failed: {problems[0]}{more}; nothing was stored; submit the results "
                               "that `a2fbench evaluate` writes for these predictions, or drop --verify")


def submit_file(db_path: str | os.PathLike, results_path: str | os.PathLike, meta: MethodMeta, *,
                verify_pred: Optional[Path] = None, data: Optional[Path] = None,
                doc: Optional[dict] = None) -> db.Outcome:
    """Validate ``results_path`` (and re-run it with ``verify_pred``), then store it as one transaction. ``doc``:
    the file as :func:`load_results` returned it, when the caller has loaded it already."""
    if doc is None:
        doc = load_results(results_path)
    status = signature_status(doc)
    verified_by = "signature" if status == "valid" else None
    if verify_pred is not None:
        if data is None:
            data = default_data()
        verify(doc, Path(verify_pred), Path(data))
        verified_by = "rescored"
    conn = db.connect(db_path)
    try:
        return db.submit_doc(conn, doc, meta, verified=verified_by is not None, verified_by=verified_by,
                             source=str(Path(results_path).resolve()),
                             tampered=status == "invalid" and verified_by is None)
    finally:
        conn.close()
