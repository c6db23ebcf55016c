"""The metrics: one table of what each metric is (:mod:`.table`), the arithmetic as pure functions per frame,
per sequence and over sequences (:mod:`.functional`), the statistics over sequences (:mod:`.stats`), and
slow reference oracles for tests and benchmarks (:mod:`.reference`). Definitions: ``docs/metrics.md``."""

from .table import METRICS, NAMES, RANKED, SEQUENCE_COLUMNS, Metric

__all__ = ["METRICS", "NAMES", "RANKED", "SEQUENCE_COLUMNS", "Metric"]
