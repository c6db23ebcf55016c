"""Paired comparison of two results files: is B better than A, or is the difference noise?

For each metric both files report, on the sequences both files scored:

* ``diff = agg(B) - agg(A)``, each aggregate recomputed from the per-sequence scores by the metric's own rule
  (pooled metrics: frame-weighted mean of sequence means; FDD: mean; FDD_abs: mean of absolute values);
* a 95% CI of ``diff`` by a **paired percentile bootstrap over sequences**: the same resampled sequences
  are used for A and B (:func:`a2fbench.scoring.metrics.stats.paired_difference`);
* a two-sided p-value by a **paired permutation test**: under "A and B are exchangeable", swapping A's and
  B's scores of a sequence does not change the distribution of ``diff``; the p-value is the share of random
  swap patterns (all ``2^n`` patterns when that is fewer than ``n_resamples``) giving a ``diff`` at least as far
  from 0 as observed (scipy.stats.permutation_test, ``permutation_type='samples'``).

Results with several samples (runs) are compared on their per-sequence means over runs (for FDD_abs that is
``|mean FDD_s|``, not the file's mean over runs of ``mean |FDD_s|``). Files must share the comparability key (:func:`a2fbench.scoring.metrics.stats.results_key`: dataset, split's
store fingerprint, protocol, length policy, region set); otherwise the numbers are not comparable and
:class:`~a2fbench.errors.ResultSchemaError` says why.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy import stats as sps

from ..errors import ResultSchemaError
from .metrics import stats
from .metrics.table import METRICS
from .results import load, recorded_aggregation

METHOD = ("paired percentile bootstrap over shared sequences (CI of B - A); two-sided paired permutation test "
          "swapping A and B within sequences (p-value)")


def check_comparable(a: dict, b: dict, na: str = "A", nb: str = "B") -> None:
    """One line saying why two results files cannot be compared (the first field of the comparability key
    that differs); nothing when they can."""
    da, db = a["dataset"], b["dataset"]
    pa, pb = a["protocol"], b["protocol"]
    ra, rb = da.get("regions", {}), db.get("regions", {})
    field = stats.first_difference(stats.results_key(a), stats.results_key(b))
    if field is None or field == "split":  # a different split shows as no shared sequence, said below
        return
    protocol = (f"{na} uses protocol {pa['name']} v{pa['version']} but {nb} uses {pb['name']} v{pb['version']}; "
                f"re-evaluate one with --protocol {pa['name']}")
    why = {
        "dataset": f"{na} scores dataset {da['id']} but {nb} scores {db['id']}; compare results of the same dataset",
        "protocol": protocol,
        "protocol_version": protocol,
        "length_policy": f"{na} uses length policy {pa.get('length_policy')} but {nb} uses "
                         f"{pb.get('length_policy')}; re-evaluate one with --length-policy {pa.get('length_policy')}",
        "fingerprint": f"{na} and {nb} were scored against different prepared copies of {da['id']} (fingerprints "
                       f"{str(da.get('fingerprint'))[:19]}… vs {str(db.get('fingerprint'))[:19]}…); re-evaluate both "
                       "against one store",
        "regions_digest": f"{na} uses region set {ra.get('set')!r} but {nb} uses {rb.get('set')!r} (different "
                          "lip/upper-face vertices); re-evaluate one with --regions",
    }[field]
    raise ResultSchemaError(why)


def compare(a: dict, b: dict, *, n_resamples: int = 10000, seed: int = 0, names: tuple[str, str] = ("A", "B"),
            level: float = 0.95) -> dict:
    """Per-metric paired difference B - A on the shared sequences (see module doc)."""
    na, nb = names
    check_comparable(a, b, na, nb)
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
    min_n = smallest_n(level)
    out["warnings"] = [small_sample_warning(n, level)] if n < min_n else []
    for m in (k for k in METRICS if k in a["metrics"] and k in b["metrics"]):
        key = METRICS[m].per_sequence_key
        if any(rows_a[s].get(key) is None or rows_b[s].get(key) is None for s in shared):
            continue
        va = np.array([rows_a[s][key] for s in shared], np.float64)
        vb = np.array([rows_b[s][key] for s in shared], np.float64)
        fa = np.array([rows_a[s]["frames"] for s in shared], np.float64)
        fb = np.array([rows_b[s]["frames"] for s in shared], np.float64)
        how = recorded_aggregation(a["metrics"][m])  # the protocol's (both files share it); None: the table's
        pdiff = stats.paired_difference(m, va, vb, fa, fb, n_resamples=n_resamples, seed=seed, level=level, how=how)
        d, A = pdiff["diff"], pdiff["a"]
        if n < 2 or np.array_equal(va, vb):
            p = 1.0
        else:
            # rows 0..n-1: A's sequences, n..2n-1: B's; the statistic works on index arrays
            vals, frames = np.concatenate([va, vb]), np.concatenate([fa, fb])

            def diff(ia: np.ndarray, ib: np.ndarray, axis: int = -1) -> np.ndarray:
                return (stats.aggregate_indexed(m, vals, frames, ib, axis, how)
                        - stats.aggregate_indexed(m, vals, frames, ia, axis, how))

            pt = sps.permutation_test((np.arange(n), np.arange(n) + n), diff, permutation_type="samples",
                                      vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                                      rng=np.random.default_rng(seed))
            p = float(pt.pvalue)
        ci = list(pdiff["ci95"])
        if n < min_n:
            ci = None  # see small_sample_warning: no interval is reported at this size
        elif (ci[0] > 0 or ci[1] < 0) != (p < 1 - level) and not np.array_equal(va, vb):
            out["warnings"].append(f"{m}: the bootstrap interval and the permutation p-value disagree at n = {n} "
                                   f"(interval {'excludes' if ci[0] > 0 or ci[1] < 0 else 'contains'} 0, p = {p:.3g}); "
                                   "trust the p-value, which is exact or Monte Carlo over the permutations")
        out["metrics"][m] = {"a": A, "b": pdiff["b"], "diff": d, "rel_diff": (d / A) if A else None,
                             "ci95": ci, "p_value": p, "unit": a["metrics"][m].get("unit"),
                             "display_scale": a["metrics"][m].get("display_scale", 1.0),
                             "higher_is_better": METRICS[m].higher_is_better}
    if not out["metrics"]:
        raise ResultSchemaError(f"{na} and {nb} have no metric in common with per-sequence scores")
    return out


def smallest_n(level: float = 0.95) -> int:
    """The fewest shared sequences at which any difference can be significant: the exact two-sided paired
    permutation test over n sequences has 2^n equally likely swap patterns, so its smallest p-value is
    2 / 2^n; below this n it can never reach ``1 - level``, and a percentile bootstrap over so few sequences
    (at most C(2n-1, n) distinct resamples) gives no usable interval either."""
    n = 1
    while 2.0 / 2**n >= 1 - level:
        n += 1
    return n


def small_sample_warning(n: int, level: float = 0.95) -> str:
    return (f"only {n} shared sequence{'s' if n != 1 else ''}: no difference can be significant at "
            f"{100 * level:.0f}% (the smallest possible p-value is {min(1.0, 2.0 / 2**n):.3g}, at least "
            f"{smallest_n(level)} sequences are needed), so no interval is reported")


def compare_files(path_a: str | os.PathLike, path_b: str | os.PathLike, **kw: Any) -> dict:
    """:func:`compare` on two results files (each validated by :func:`a2fbench.scoring.results.load`)."""
    return compare(load(path_a), load(path_b), names=(str(path_a), str(path_b)), **kw)
