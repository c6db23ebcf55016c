"""LVE, MVE, UFVE, FDD and FDD_abs as pure functions (:mod:`.functional`) and slow reference oracles
(:mod:`.reference`, tests and benchmarks only). Definitions: ``docs/metrics.md``."""

from .functional import METRIC_INFO, MetricInfo

__all__ = ["METRIC_INFO", "MetricInfo"]
