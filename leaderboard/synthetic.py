"""Synthetic but valid results documents, for tests, demos and the 10,000-entry benchmark.

A document built here passes :func:`a2fbench.scoring.results.validate`: its aggregates are recomputed from its
per-sequence scores with :func:`a2fbench.scoring.results.aggregate`, its 95% intervals come from a percentile bootstrap
over sequences, and :func:`a2fbench.scoring.results.finalize` sets its content hash. Per-sequence scores follow a
simple model so that tests can know the answer: a per-sequence difficulty shared by every method on the same
dataset (``dataset_seed``), times a method factor ``scale``, times independent noise of relative size
``noise``. Two methods with the same ``scale`` are tied in truth; a large ``scale`` gap is a real difference.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Optional, Sequence

import numpy as np

from a2fbench.registry import get_spec
from a2fbench.scoring.metrics import stats
from a2fbench.scoring.metrics.table import METRICS
from a2fbench.scoring.protocols import aggregation
from a2fbench.scoring.results import aggregate, finalize

UNITS = {"LVE": "m^2", "MVE": "m", "UFVE": "m", "FDD": "m^2", "FDD_abs": "m^2"}
BASE = {"LVE": 1.0e-5, "MVE": 2.0e-3, "UFVE": 1.0e-3, "FDD": 2.0e-6}


def make_results(*, dataset: str = "D1", split: str = "test", protocol: str = "a2f", n_seq: int = 12,
                 scale: float = 1.0, noise: float = 0.05, seed: int = 0, dataset_seed: int = 0,
                 seq_ids: Optional[Sequence[str]] = None, n_boot: int = 200, regions: str = "default",
                 created: str = "2026-01-01T00:00:00+00:00", length_policy: str = "truncate_pred_only",
                 synthetic: bool = True) -> dict:
    """A finalized, self-consistent results document (see the module docstring for the score model).
    ``synthetic=False`` makes it claim the real dataset (its data fingerprint differs from the stand-in's), for
    tests of the board's real-data track; no real data is involved."""

    spec = get_spec(dataset)
    drng = np.random.default_rng(dataset_seed)
    ids = list(seq_ids) if seq_ids is not None else [f"S{k:03d}_sentence{k % 40 + 1:02d}" for k in range(n_seq)]
    n = len(ids)
    frames = drng.integers(60, 180, size=n)
    difficulty = {m: BASE[m] * drng.lognormal(0.0, 0.4, size=n) for m in BASE}
    fdd_sign = np.where(drng.random(n) < 0.8, 1.0, -1.0)
    rng = np.random.default_rng(seed)
    per_sequence = []
    for i, sid in enumerate(ids):
        row = {"id": sid, "frames": int(frames[i])}
        for m in ("LVE", "MVE", "UFVE"):
            row[m] = float(difficulty[m][i] * scale * (1.0 + noise * rng.standard_normal()) ** 2)
        row["FDD"] = float(fdd_sign[i] * difficulty["FDD"][i] * scale * (1.0 + noise * rng.standard_normal()))
        per_sequence.append(row)
    metrics = {}
    for m in METRICS:
        key = METRICS[m].per_sequence_key
        if key not in per_sequence[0]:  # metrics of other protocols (LVD)
            continue
        how = aggregation(protocol, m)
        ci = stats.bootstrap_ci(m, [r[key] for r in per_sequence], [r["frames"] for r in per_sequence],
                                n_resamples=n_boot, seed=seed, how=how)
        metrics[m] = {"value": aggregate(m, per_sequence, how), "unit": UNITS[m], "ci95": list(ci),
                      "aggregation": how, "higher_is_better": False, "version": 1}
    fp_ds = "sha256:" + hashlib.sha256(f"{'synthetic' if synthetic else 'real'} {spec.id} {dataset_seed}".encode()).hexdigest()
    fp_pred = "sha256:" + hashlib.sha256(f"predictions {spec.id} {seed} {scale} {noise}".encode()).hexdigest()
    doc = {
        "schema_version": 1, "a2fbench_version": "synthetic",
        "dataset": {"id": spec.id, "name": spec.name, "version": spec.version, "split": split,
                    "fingerprint": fp_ds, "n_sequences": n, "n_frames": int(frames.sum()), "synthetic": synthetic,
                    "regions": {"set": regions, "digest": "sha256:" + hashlib.sha256(regions.encode()).hexdigest()}},
        "protocol": {"name": protocol, "version": 1, "length_policy": length_policy,
                     "bootstrap": {"n": n_boot, "seed": seed, "method": "percentile"}},
        "metrics": metrics,
        "per_sequence": per_sequence,
        "predictions": {"fingerprint": fp_pred, "n_files": n},
        "created": created,
    }
    return finalize(doc)


def streamed(doc: dict, latency_ms: float) -> dict:
    """The same scores as predictions made in streaming mode with ``latency_ms`` of algorithmic latency (what
    `unitalker predict --chunk-ms` records: chunk, no look-ahead), under other predictions' fingerprint."""
    d = copy.deepcopy(doc)
    d["predictions"]["fingerprint"] += f"-streamed-{latency_ms:g}"
    d["predictions"]["streaming"] = {"chunk_ms": latency_ms, "lookahead_ms": 0, "algorithmic_latency_ms": latency_ms}
    d.pop("content_hash")
    return finalize(d)
