"""The metric table: the one place that says what each metric is.

Everything that lists metrics reads this table: evaluate (which per-frame terms to keep), the results JSON
(units, aggregation rules, per-sequence keys, the consistency check), ``compare``, and the leaderboard
(columns, database columns, ranking, ties). Adding a metric is one entry here plus its per-frame or
per-sequence function in :mod:`.functional`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

Aggregation = Literal["pooled_frames", "mean_sequences", "mean_abs_sequences"]


@dataclass(frozen=True)
class Metric:
    """What a metric is: name, unit rule, aggregation, per-sequence key, direction, rank use, version.

    * ``power``: 2 for squared distances (unit²), 1 for distances (unit);
    * ``aggregation``: ``pooled_frames`` (one mean over every frame of the split; per sequence the frame mean),
      ``mean_sequences`` (mean of the per-sequence values), ``mean_abs_sequences`` (mean of their absolute
      values);
    * ``per_sequence_key``: the per-sequence column it is computed from (FDD_abs from the signed FDD);
    * ``rankable``: counts towards the overall (Borda) rank (one per thing measured: FDD_abs, not FDD);
    * ``ranked_by_abs``: a signed metric whose distance from 0 is what is ranked (FDD);
    * ``framewise``: its per-sequence value is the mean over frames of a per-frame term (LVE, MVE, UFVE, LVD);
      otherwise it is computed from the whole sequence (FDD).

    A protocol may aggregate a metric otherwise (``Protocol.aggregation``: UniTalker's LVE is a mean of
    per-sequence means); the results file records the aggregation used with every metric.
    """

    name: str
    power: int
    aggregation: Aggregation
    per_sequence_key: str
    description: str
    higher_is_better: bool = False
    rankable: bool = True
    ranked_by_abs: bool = False
    version: int = 1
    framewise: bool = True

    def unit(self, vertex_units: str) -> str:
        """Unit string for a dataset whose vertex coordinates are in ``vertex_units`` (e.g. ``m`` -> ``m^2``)."""
        if self.power == 1:
            return vertex_units
        u = vertex_units if vertex_units.isalnum() else f"({vertex_units})"
        return f"{u}^{self.power}"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("LVE", 2, "pooled_frames", "LVE",
           "lip vertex error: per frame the max over lip vertices of the squared distance, mean over all frames "
           "of the split"),
    Metric("MVE", 1, "pooled_frames", "MVE",
           "mean vertex error: Euclidean distance averaged over all vertices and all frames"),
    Metric("UFVE", 1, "pooled_frames", "UFVE",
           "upper-face vertex error (A2F-Bench definition): MVE over the upper-face vertices"),
    Metric("FDD", 2, "mean_sequences", "FDD",
           "upper-face dynamics deviation: per sequence mean_u std_t |x - template|^2 of GT minus that of the "
           "prediction (signed), mean over sequences", rankable=False, ranked_by_abs=True, framewise=False),
    Metric("FDD_abs", 2, "mean_abs_sequences", "FDD", "mean over sequences of |FDD_s|", framewise=False),
    # appended (the stored per-sequence columns are append-only)
    Metric("LVD", 1, "mean_sequences", "LVD",
           "lip vertex distance (UniTalker's in-loop LVD): per frame the max over lip vertices of the Euclidean "
           "distance, the mean over frames per sequence, the mean over sequences", rankable=False),
)}

#: metric names in table order (the columns everywhere)
NAMES: tuple[str, ...] = tuple(METRICS)
#: metrics whose rank counts towards the overall rank
RANKED: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.rankable)
#: the per-sequence columns (results ``per_sequence`` rows, leaderboard storage), in table order
SEQUENCE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(m.per_sequence_key for m in METRICS.values()))


def display_scale(display: Mapping[str, float], metric: str) -> float:
    """The factor ``metric`` is shown in, from a dataset's ``display`` table (its manifest, or its store card):
    the metric's own entry, else MVE's for a distance and LVE's for a squared distance (LVD is shown like
    MVE), else 1. Results files (``display_scale``) and the leaderboard's display units both use this rule."""
    power = METRICS[metric].power
    return float(display.get(metric) or display.get("MVE" if power == 1 else "LVE") or 1.0)
