"""Per-sequence scores stored as one float64 matrix per entry (for paired ties): column 0 the frame counts,
then the metric table's per-sequence columns in table order (append-only, so stored blobs stay readable)."""

from __future__ import annotations

import hashlib

import numpy as np

from a2fbench.scoring.metrics.table import SEQUENCE_COLUMNS

#: Per-sequence columns kept in the ``scores`` blob, after ``frames`` (the metric table's, in its order).
SEQ_COLUMNS = SEQUENCE_COLUMNS


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


def decode(n: int, data: bytes) -> np.ndarray:
    """A stored blob as (n, 1 + len(SEQ_COLUMNS)) float64; columns a blob predates (appended to the metric table
    after it was written) read as NaN."""
    width = len(data) // (8 * max(n, 1)) if n else 1 + len(SEQ_COLUMNS)
    m = np.frombuffer(data, dtype=np.float64).reshape(n, width)
    if width < 1 + len(SEQ_COLUMNS):
        m = np.concatenate([m, np.full((n, 1 + len(SEQ_COLUMNS) - width), np.nan)], axis=1)
    return m
