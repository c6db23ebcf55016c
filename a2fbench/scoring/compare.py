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

The evaluation axes (``evaluate --metrics``) are compared where both files have them with the same version,
constants and mouth pair (else ``axes_skipped`` says why): MTM, LipLag and Diversity as means over the shared
sequences where both have a value; SilenceOpening as the ratio of sums over the silent frames (paired bootstrap
of the ratio, :func:`a2fbench.scoring.metrics.stats.paired_ratio_difference`); SLCC, one correlation over all
clips, by its two values only (no interval, no p-value).

Results with several samples (runs) are compared on their per-sequence means over runs (for FDD_abs that is
``|mean FDD_s|``, not the file's mean over runs of ``mean |FDD_s|``). Files must share the comparability key (:func:`a2fbench.scoring.metrics.stats.results_key`: dataset, split's
store fingerprint, protocol, length policy, region set); otherwise the numbers are not comparable and
:class:`~a2fbench.errors.ResultSchemaError` says why.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
from scipy import stats as sps

from ..errors import ResultSchemaError
from .metrics import stats
from .metrics.axes import AXES
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
        vals, frames = np.concatenate([va, vb]), np.concatenate([fa, fb])
        p = _p_value(lambda idx, axis: stats.aggregate_indexed(m, vals, frames, idx, axis, how), n,
                     np.array_equal(va, vb), n_resamples, seed)
        out["metrics"][m] = {**_entry(m, pdiff, p, n, level, out["warnings"], np.array_equal(va, vb)),
                             "unit": a["metrics"][m].get("unit"),
                             "display_scale": a["metrics"][m].get("display_scale", 1.0),
                             "higher_is_better": METRICS[m].higher_is_better}
    axes_compare(a, b, rows_a, rows_b, shared, out, n_resamples, seed, level, names)
    if not out["metrics"]:
        raise ResultSchemaError(f"{na} and {nb} have no metric in common with per-sequence scores")
    return out


def _p_value(agg: Any, n: int, same: bool, n_resamples: int, seed: int) -> float:
    """The paired permutation p-value of ``agg(B) - agg(A)``; ``agg(idx, axis)`` aggregates the rows picked by
    index arrays from the stacked scores (rows 0..n-1: A's sequences, n..2n-1: B's)."""
    if n < 2 or same:
        return 1.0

    def diff(ia: np.ndarray, ib: np.ndarray, axis: int = -1) -> np.ndarray:
        return agg(ib, axis) - agg(ia, axis)

    pt = sps.permutation_test((np.arange(n), np.arange(n) + n), diff, permutation_type="samples", vectorized=True,
                              n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return float(pt.pvalue)


def _entry(m: str, pdiff: dict, p: float, n: int, level: float, warnings: list, same: bool) -> dict:
    """One compared metric: values, difference, interval (none below :func:`smallest_n`), p-value; a warning when
    the interval and the p-value disagree."""
    d, A = pdiff["diff"], pdiff["a"]
    ci = list(pdiff["ci95"])
    if n < smallest_n(level):
        ci = None  # see small_sample_warning: no interval is reported at this size
    elif (ci[0] > 0 or ci[1] < 0) != (p < 1 - level) and not same:
        warnings.append(f"{m}: the bootstrap interval and the permutation p-value disagree at n = {n} "
                        f"(interval {'excludes' if ci[0] > 0 or ci[1] < 0 else 'contains'} 0, p = {p:.3g}); "
                        "trust the p-value, which is exact or Monte Carlo over the permutations")
    return {"a": A, "b": pdiff["b"], "diff": d, "rel_diff": (d / A) if A else None, "ci95": ci, "p_value": p}


def axes_compare(a: dict, b: dict, rows_a: dict, rows_b: dict, shared: list[str], out: dict, n_resamples: int,
                 seed: int, level: float, names: tuple[str, str]) -> None:
    """The evaluation axes both files report (docs/metrics.md, "compare"): into ``out["metrics"]`` when their
    version, constants and mouth pair agree and both have values; otherwise into ``out["axes_skipped"]`` with why.

    MTM, LipLag, Diversity: mean over the shared sequences where both files have a value (paired bootstrap and
    permutation test as for FDD). SilenceOpening: ratio of the sums over the silent frames of the shared
    sequences (:func:`~.metrics.stats.paired_ratio_difference`). SLCC: one correlation over the clips of the
    split, so the files' own values and no interval or p-value; only when both scored the same sequences."""
    na, nb = names
    skipped: dict[str, str] = {}
    for m in (k for k in AXES if k in a["metrics"] and k in b["metrics"]):
        ea, eb = a["metrics"][m], b["metrics"][m]
        why = None
        for field in ("version", "constants", "mouth_pair"):
            if ea.get(field) != eb.get(field):
                label = {"version": "versions", "constants": "constants", "mouth_pair": "mouth pairs"}[field]
                why = (f"{na} and {nb} record different {label} of {m} ({ea.get(field)!r} vs "
                       f"{eb.get(field)!r}); re-evaluate both with one a2fbench and the same --mouth-pair")
                break
        for who, e in ((na, ea), (nb, eb)):
            if why is None and e.get("value") is None:
                why = f"{who} has no value for {m} ({e.get('reason') or 'null'})"
        if why is None:
            why = _axis(m, ea, eb, rows_a, rows_b, shared, out, n_resamples, seed, level)
        if why is not None:
            skipped[m] = why
    if skipped:
        out["axes_skipped"] = skipped


def _axis(m: str, ea: dict, eb: dict, rows_a: dict, rows_b: dict, shared: list[str], out: dict, n_resamples: int,
          seed: int, level: float) -> Optional[str]:
    """One axis compared into ``out["metrics"]``; the reason when it cannot be."""
    base = {"unit": ea.get("unit"), "display_scale": 1.0, "higher_is_better": ea.get("higher_is_better"),
            "better": ea.get("better"), "version": ea.get("version")}
    if m == "SLCC":
        if len(shared) != len(rows_a) or len(shared) != len(rows_b):
            return "SLCC is one correlation over all clips of the split; the files scored different sequences"
        d = eb["value"] - ea["value"]
        out["metrics"][m] = {**base, "a": ea["value"], "b": eb["value"], "diff": d,
                             "rel_diff": d / ea["value"] if ea["value"] else None, "ci95": None, "p_value": None,
                             "gt": ea.get("gt"), "delta_a": ea.get("delta"), "delta_b": eb.get("delta"),
                             "note": "one correlation over the clips of the split: no per-sequence pairing"}
        return None
    n_warn = out["warnings"]
    if m == "SilenceOpening":
        use = [s for s in shared if rows_a[s].get("silence_frames") and rows_b[s].get("silence_frames")]
        if not use:
            return "no shared sequence has silent frames in both files"

        def sums(rows: dict, key: str) -> np.ndarray:
            return np.array([float(rows[s][key]) * int(rows[s]["silence_frames"]) for s in use])

        num_a, den_a = sums(rows_a, "silence_open_pred"), sums(rows_a, "silence_open_gt")
        num_b, den_b = sums(rows_b, "silence_open_pred"), sums(rows_b, "silence_open_gt")
        if den_a.sum() <= 0 or den_b.sum() <= 0:
            return "the ground truth's mouth opening is 0 over the shared silent frames"
        pdiff = stats.paired_ratio_difference(num_a, den_a, num_b, den_b, n_resamples=n_resamples, seed=seed,
                                              level=level)
        num, den = np.concatenate([num_a, num_b]), np.concatenate([den_a, den_b])
        same = bool(np.array_equal(num_a, num_b) and np.array_equal(den_a, den_b))
        p = _p_value(lambda idx, axis: stats.ratio_indexed(num, den, idx, axis), len(use), same, n_resamples, seed)
    else:  # MTM, LipLag, Diversity: mean over the sequences with a value in both
        use = [s for s in shared if rows_a[s].get(m) is not None and rows_b[s].get(m) is not None]
        if not use:
            return f"no shared sequence has a {m} value in both files"
        va = np.array([rows_a[s][m] for s in use], np.float64)
        vb = np.array([rows_b[s][m] for s in use], np.float64)
        f = np.array([rows_a[s]["frames"] for s in use], np.float64)
        pdiff = stats.paired_difference(m, va, vb, f, f, n_resamples=n_resamples, seed=seed, level=level,
                                        how="mean_sequences")
        vals, frames = np.concatenate([va, vb]), np.concatenate([f, f])
        same = bool(np.array_equal(va, vb))
        p = _p_value(lambda idx, axis: stats.aggregate_indexed(m, vals, frames, idx, axis, "mean_sequences"),
                     len(use), same, n_resamples, seed)
    n = len(use)
    if n < smallest_n(level) and n != len(shared):
        n_warn.append(f"{m}: only {n} shared sequences have it in both files: no interval is reported")
    out["metrics"][m] = {**_entry(m, pdiff, p, n, level, n_warn, same), **base, "n_used": n}
    return None


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
