"""Ranks, best per column, statistical ties with the best, and the overall (Borda) rank.

Rules (docs/leaderboard.md says the same in prose):

* **Groups.** Evaluated entries are ranked only against entries measured on the same ground truth under the
  same rules: same dataset, split, protocol name and version, dataset fingerprint (the prepared store) and
  lip/upper-face region set (its digest), i.e. exactly what :func:`a2fbench.scoring.compare.compare` requires of
  two comparable files. Reported rows are
  never ranked (their protocol and units are unverified); they are shown beside the evaluated rows.
* **Rank per metric.** Lower is better for every metric; signed FDD is ranked by ``|FDD|`` (distance from the
  ground truth's dynamics). Competition ranking (1, 2, 2, 4) on the aggregate value. ``best`` = rank 1.
* **Ties.** An entry is *tied with the best* when the 95% paired-bootstrap interval of the difference of the
  two aggregates contains zero. Paired: both aggregates are recomputed on the same resampled sequences
  (``n_boot`` replicates, fixed seed), which needs both entries to be scored on the same sequence set; the
  statistic is the metric's aggregate as the group's protocol defines it (by default frame-pooled for
  LVE/MVE/UFVE, sequence means for FDD/FDD_abs; UniTalker's protocol takes LVE as a mean of sequence means).
  When the two entries were scored on different sequence sets (or one has no per-sequence scores), the
  fallback is overlap of the two 95% intervals stored in the results files.
* **Overall.** Borda count over (group, metric) pairs for the rankable metrics of the metric table: in each pair, each
  method (name + version, its best entry) gets one point per method it beats strictly. Ordered by points,
  then mean rank.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Optional

import numpy as np
from threadpoolctl import threadpool_limits

from a2fbench.scoring.metrics import stats
from a2fbench.scoring.metrics.table import METRICS, NAMES, RANKED
from a2fbench.scoring.protocols import aggregation

from .scores import SEQ_COLUMNS

N_BOOT = 1000
SEED = 0
_CHUNK = 2048
_COL = {k: j for j, k in enumerate(SEQ_COLUMNS, 1)}


def group_key(e: dict) -> tuple:
    """Entries ranked together: reported rows by dataset, split and protocol as claimed; evaluated entries by the
    comparability key of :mod:`a2fbench.scoring.metrics.stats` (what ``compare`` requires of two files)."""
    if e["kind"] == "reported":
        return ("reported", e["dataset"], e["split"], e["protocol"])
    if e.get("disputed_by"):  # contradicted by a verified entry of the same evaluation: shown apart, not ranked
        return ("disputed", e["id"])
    return ("evaluated",) + stats.comparability_key(e["dataset"], e["split"], e["protocol"], e.get("protocol_version"),
                                                    e.get("length_policy"), e.get("dataset_fingerprint"),
                                                    e.get("regions_digest")) + (e.get("latency_ms"),)  # streaming track


def score(metric: str, value: Optional[float]) -> Optional[float]:
    """The number that is ranked (lower is better): the value, or ``|FDD|`` for signed FDD."""
    if value is None or not np.isfinite(value):
        return None
    return abs(value) if METRICS[metric].ranked_by_abs else float(value)


def _abs_interval(ci: list[float]) -> tuple[float, float]:
    lo, hi = ci
    if lo <= 0 <= hi:
        return 0.0, max(-lo, hi)
    return min(abs(lo), abs(hi)), max(abs(lo), abs(hi))


def ci_overlap(metric: str, a: Optional[list[float]], b: Optional[list[float]]) -> Optional[bool]:
    if not a or not b:
        return None
    if METRICS[metric].ranked_by_abs:
        a, b = list(_abs_interval(a)), list(_abs_interval(b))
    return bool(a[0] <= b[1] and b[0] <= a[1])


def _single_threaded_blas() -> Any:
    """These products are small: on a loaded 2-core machine multi-threaded BLAS makes them 10-100x slower."""
    return threadpool_limits(1, user_api="blas")


def boot_stat(metric: str, w: np.ndarray, mats: np.ndarray, how: Optional[str] = None) -> np.ndarray:
    """Bootstrap replicates (B, n) of ``metric``'s ranked aggregate for n entries; ``mats`` is (n, S, 1 + cols):
    the metric's aggregate (by ``how``, default the metric table's rule) on each resampled draw
    (:func:`a2fbench.scoring.metrics.stats.replicates`), its absolute value for a metric ranked by distance from 0
    (signed FDD)."""
    x = mats[:, :, _COL[METRICS[metric].per_sequence_key]].T   # (S, n)
    f = mats[:, :, 0].T                                         # (S, n) frame counts, per entry
    if (f == f[:, :1]).all():  # the usual case, every entry scored the same frames: one (B,) denominator, not (B, n)
        f = f[:, 0]
    reps = stats.replicates(metric, w, x, f, how)
    return np.abs(reps) if METRICS[metric].ranked_by_abs else reps


def paired_ties(metric: str, best: np.ndarray, others: np.ndarray, n_boot: int = N_BOOT,
                seed: int = SEED, how: Optional[str] = None) -> np.ndarray:
    """For each of ``others`` (n, S, 1 + cols): does the paired 95% CI of (other - best) contain 0?"""
    w = stats.counts_matrix(best.shape[0], n_boot, seed)
    b = boot_stat(metric, w, best[None], how)[:, 0]      # (B,)
    out = np.empty(others.shape[0], dtype=bool)
    for k in range(0, others.shape[0], _CHUNK):
        out[k:k + _CHUNK] = stats.interval_contains_zero(boot_stat(metric, w, others[k:k + _CHUNK], how) - b[:, None])
    return out


def rank_entries(entries: list[dict], scores: dict[int, tuple[str, np.ndarray]], *, n_boot: int = N_BOOT,
                 seed: int = SEED) -> list[dict]:
    """Annotate each entry's metrics with ``rank``, ``best``, ``tied`` (with the best) and ``tie_test``.

    Also sets ``entry["group"]`` (a display label) and ``entry["group_size"]``. Returns ``entries``.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        groups[group_key(e)].append(e)
        e["group"] = group_label(e)
        for m in e["metrics"].values():
            m.setdefault("rank", None)
            m.setdefault("best", False)
            m.setdefault("tied", None)
            m.setdefault("tie_test", None)
    with _single_threaded_blas():
        for key, members in groups.items():
            for e in members:
                e["group_size"] = len(members)
            if key[0] == "evaluated":
                _rank_group(members, scores, n_boot, seed)
    return entries


def _rank_group(members: list[dict], scores: dict, n_boot: int, seed: int) -> None:
    """Ranks, best and ties for one group, vectorised over its members (thousands on a big board)."""
    n = len(members)
    ids = np.array([e["id"] for e in members])
    seqsets = [scores[e["id"]][0] if e["id"] in scores else None for e in members]
    stacks: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # sequence set -> (member positions, (k, S, C) scores)
    for metric in NAMES:
        vals = np.full(n, np.nan)
        for i, e in enumerate(members):
            m = e["metrics"].get(metric)
            if m is not None and m.get("value") is not None:
                vals[i] = m["value"]
        if METRICS[metric].ranked_by_abs:
            vals = np.abs(vals)
        have = np.flatnonzero(np.isfinite(vals))
        if not have.size:
            continue
        v = vals[have]
        ranks = np.searchsorted(np.sort(v), v, side="left") + 1   # competition ranking
        for i, r in zip(have.tolist(), ranks.tolist()):
            m = members[i]["metrics"][metric]
            m["rank"], m["best"] = r, r == 1
        b = int(have[np.lexsort((ids[have], v))[0]])             # the best; lowest id among equals
        best_m = members[b]["metrics"][metric]
        best_m["tied"] = None
        paired = np.zeros(n, dtype=bool)
        ss = seqsets[b]
        if ss is not None:
            if ss not in stacks:
                sel = np.array([i for i in range(n) if seqsets[i] == ss])
                stacks[ss] = (sel, np.stack([scores[members[i]["id"]][1] for i in sel]))
            sel, mats = stacks[ss]
            col = _COL[METRICS[metric].per_sequence_key]
            usable = ~np.isnan(mats[:, :, col]).any(axis=1) & np.isfinite(vals[sel])
            pos_b = int(np.flatnonzero(sel == b)[0])
            if usable[pos_b] and mats.shape[1] >= 2:
                usable[pos_b] = False
                if usable.any():
                    tied = paired_ties(metric, mats[pos_b], mats[usable], n_boot=n_boot, seed=seed,
                                       how=aggregation(members[b]["protocol"], metric))
                    for i, t in zip(sel[usable].tolist(), tied.tolist()):
                        m = members[i]["metrics"][metric]
                        m["tied"], m["tie_test"] = t, "paired_bootstrap"
                    paired[sel[usable]] = True
        for i in have.tolist():
            if i != b and not paired[i]:
                m = members[i]["metrics"][metric]
                m["tied"] = ci_overlap(metric, m.get("ci95"), best_m.get("ci95"))
                m["tie_test"] = "ci_overlap" if m["tied"] is not None else None


def group_label(e: dict) -> str:
    if e["kind"] == "reported":
        return f"{e['dataset']} / {e['split']} / {e['protocol']}"
    label = f"{e['dataset']} / {e['split']} / {e['protocol']} v{e.get('protocol_version') or 1}"
    label += f" ({e['length_policy']})" if e.get("length_policy") else ""
    label += f" / {e['region_set']} regions" if e.get("region_set") else ""
    return label + (f" / streaming {e['latency_ms']:g} ms" if e.get("latency_ms") is not None else "")


def method_key(e: dict) -> tuple[str, str]:
    return (e["method"], e.get("version") or "")


def overall(entries: Iterable[dict], metrics: tuple[str, ...] = RANKED) -> list[dict[str, Any]]:
    """Borda count across (group, metric) pairs of evaluated entries; see the module docstring."""
    points: dict[tuple, int] = defaultdict(int)
    ranks: dict[tuple, list[int]] = defaultdict(list)
    groups_of: dict[tuple, set] = defaultdict(set)
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        if e["kind"] == "evaluated" and not e.get("disputed_by"):
            by_group[group_key(e)].append(e)
    for gkey, members in by_group.items():
        for metric in metrics:
            best: dict[tuple, float] = {}
            for e in members:
                s = score(metric, e["metrics"].get(metric, {}).get("value"))
                if s is None:
                    continue
                k = method_key(e)
                if k not in best or s < best[k]:
                    best[k] = s
            if not best:
                continue
            keys = list(best)
            v = np.fromiter(best.values(), dtype=np.float64, count=len(keys))
            srt = np.sort(v)
            worse = (len(v) - np.searchsorted(srt, v, side="right")).tolist()   # methods beaten strictly
            rank = (np.searchsorted(srt, v, side="left") + 1).tolist()
            for k, w, r in zip(keys, worse, rank):
                points[k] += w
                ranks[k].append(r)
                groups_of[k].add(gkey)
    rows = [{"method": k[0], "version": k[1] or None, "borda": points[k],
             "mean_rank": sum(ranks[k]) / len(ranks[k]), "n_groups": len(groups_of[k]),
             "groups": sorted(f"{g[1]}/{g[2]}/{g[3]}" for g in groups_of[k])} for k in ranks]
    rows.sort(key=lambda r: (-r["borda"], r["mean_rank"], r["method"], r["version"] or ""))
    for i, r in enumerate(rows):
        prev = rows[i - 1] if i else None
        r["rank"] = prev["rank"] if prev and (prev["borda"], prev["mean_rank"]) == (r["borda"], r["mean_rank"]) else i + 1
    return rows
