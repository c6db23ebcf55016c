"""Paired comparison of two results files: is B better than A, or is the difference noise?

For each metric both files report, on the sequences both files scored:

* ``diff = agg(B) - agg(A)``, each aggregate recomputed from the per-sequence scores by the metric's own rule
  (pooled metrics: frame-weighted mean of sequence means; FDD: mean; FDD_abs: mean of absolute values);
* a 95% CI of ``diff`` by a **paired percentile bootstrap over sequences**: the same resampled sequences
  are used for A and B (scipy.stats.bootstrap, ``method='percentile'``);
* a two-sided p-value by a **paired permutation test**: under "A and B are exchangeable", swapping A's and
  B's scores of a sequence does not change the distribution of ``diff``; the p-value is the share of random
  swap patterns (all ``2^n`` patterns when that is fewer than ``n_resamples``) giving a ``diff`` at least as far
  from 0 as observed (scipy.stats.permutation_test, ``permutation_type='samples'``).

Files must describe the same dataset (id, fingerprint), region set and protocol; otherwise the numbers are
not comparable and :class:`~a2fbench.errors.ResultSchemaError` says why.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import ResultSchemaError
from .metrics import functional as F
from .results import load

METHOD = ("paired percentile bootstrap over shared sequences (CI of B - A); two-sided paired permutation test "
          "swapping A and B within sequences (p-value)")


def _check_comparable(a: dict, b: dict, na: str, nb: str) -> None:
    da, db = a["dataset"], b["dataset"]
    if da["id"] != db["id"]:
        raise ResultSchemaError(f"{na} scores dataset {da['id']} but {nb} scores {db['id']}; compare results of "
                                "the same dataset")
    if da.get("fingerprint") != db.get("fingerprint"):
        raise ResultSchemaError(f"{na} and {nb} were scored against different prepared copies of {da['id']} "
                                f"(fingerprints {str(da.get('fingerprint'))[:19]}… vs {str(db.get('fingerprint'))[:19]}…); "
                                "re-evaluate both against one store")
    pa, pb = a["protocol"], b["protocol"]
    if (pa["name"], pa["version"]) != (pb["name"], pb["version"]):
        raise ResultSchemaError(f"{na} uses protocol {pa['name']} v{pa['version']} but {nb} uses {pb['name']} "
                                f"v{pb['version']}; re-evaluate one with --protocol {pa['name']}")
    ra, rb = da.get("regions", {}), db.get("regions", {})
    if ra.get("digest") != rb.get("digest"):
        raise ResultSchemaError(f"{na} uses region set {ra.get('set')!r} but {nb} uses {rb.get('set')!r} (different "
                                "lip/upper-face vertices); re-evaluate one with --regions")


def compare(a: dict, b: dict, *, n_resamples: int = 10000, seed: int = 0, names: tuple[str, str] = ("A", "B"),
            level: float = 0.95) -> dict:
    """Per-metric paired difference B - A on the shared sequences (see module doc)."""
    from scipy import stats

    na, nb = names
    _check_comparable(a, b, na, nb)
    rows_a = {r["id"]: r for r in a["per_sequence"]}
    rows_b = {r["id"]: r for r in b["per_sequence"]}
    shared = [r["id"] for r in a["per_sequence"] if r["id"] in rows_b]
    if not shared:
        raise ResultSchemaError(f"{na} and {nb} share no sequence (split {a['dataset'].get('split')!r} vs "
                                f"{b['dataset'].get('split')!r}); compare results of the same split")
    out: dict[str, Any] = {"dataset": a["dataset"]["id"], "split": a["dataset"].get("split"),
                           "protocol": a["protocol"]["name"], "n_shared": len(shared),
                           "only_in_a": len(rows_a) - len(shared), "only_in_b": len(rows_b) - len(shared),
                           "method": METHOD, "n_resamples": n_resamples, "seed": seed, "metrics": {}}
    n = len(shared)
    for m in (k for k in F.METRIC_INFO if k in a["metrics"] and k in b["metrics"]):
        key = "FDD" if m == "FDD_abs" else m
        if any(rows_a[s].get(key) is None or rows_b[s].get(key) is None for s in shared):
            continue
        va = np.array([rows_a[s][key] for s in shared], np.float64)
        vb = np.array([rows_b[s][key] for s in shared], np.float64)
        fa = np.array([rows_a[s]["frames"] for s in shared], np.float64)
        fb = np.array([rows_b[s]["frames"] for s in shared], np.float64)
        # rows 0..n-1: A's sequences, n..2n-1: B's; statistics work on index arrays
        vals, frames = np.concatenate([va, vb]), np.concatenate([fa, fb])
        agg = F._stat(m, vals, frames)

        def diff(ia: np.ndarray, ib: np.ndarray, axis: int = -1) -> np.ndarray:
            return agg(ib, axis=axis) - agg(ia, axis=axis)

        ia, ib = np.arange(n), np.arange(n) + n
        d = float(diff(ia, ib))
        A = F.aggregate_from_sequences(m, va, fa)
        B = F.aggregate_from_sequences(m, vb, fb)
        if n < 2 or np.all(va == vb):
            ci, p = (d, d), 1.0
        else:
            rng = np.random.default_rng(seed)
            bs = stats.bootstrap((ia, ib), diff, paired=True, vectorized=True, n_resamples=n_resamples,
                                 method="percentile", confidence_level=level, rng=rng)
            ci = (float(bs.confidence_interval.low), float(bs.confidence_interval.high))
            pt = stats.permutation_test((ia, ib), diff, permutation_type="samples", vectorized=True,
                                        n_resamples=n_resamples, alternative="two-sided",
                                        rng=np.random.default_rng(seed))
            p = float(pt.pvalue)
        info = F.METRIC_INFO[m]
        out["metrics"][m] = {"a": A, "b": B, "diff": d, "rel_diff": (d / A) if A else None, "ci95": list(ci),
                             "p_value": p, "unit": a["metrics"][m].get("unit"),
                             "display_scale": a["metrics"][m].get("display_scale", 1.0),
                             "higher_is_better": info.higher_is_better}
    if not out["metrics"]:
        raise ResultSchemaError(f"{na} and {nb} have no metric in common with per-sequence scores")
    return out


def compare_files(path_a: str | os.PathLike, path_b: str | os.PathLike, **kw: Any) -> dict:
    """:func:`compare` on two results files (each validated by :func:`a2fbench.results.load`)."""
    return compare(load(path_a), load(path_b), names=(str(path_a), str(path_b)), **kw)
