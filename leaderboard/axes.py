"""Leaderboard columns of the evaluation axes (``a2fbench evaluate --metrics mtm,lip-lag,...``;
:mod:`a2fbench.scoring.metrics.axes`): MTM, LipLag, SilenceOpening, SLCC, Diversity.

An axis is stored and shown under ``"<name> v<version>"`` (``MTM v1``), so two versions of an axis never share a
column, a stored row or a comparison. Axes are shown in their own unit (``ms``, ``1``, the vertex unit), never
converted and never ranked (the overall rank stays LVE, MVE, UFVE, FDD_abs). Entries without an axis show ``-``.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from a2fbench.scoring.metrics.axes import AXES


def column(name: str, metric: dict[str, Any]) -> str:
    """The stored name of results metric ``name``: ``"<name> v<version>"`` for an axis, the name otherwise."""
    return f"{name} v{int(metric.get('version') or 1)}" if name in AXES else name


def is_axis(col: str) -> bool:
    name, _, ver = col.rpartition(" v")
    return name in AXES and ver.isdigit()


def stored(doc_metrics: dict[str, dict]) -> dict[str, dict]:
    """A results file's ``metrics`` keyed by their stored names."""
    return {column(n, m): m for n, m in doc_metrics.items()}


def columns(entries: Iterable[dict]) -> list[str]:
    """The axis columns any of ``entries`` has, in the axes' table order, then by version."""
    present = {c for e in entries for c in e["metrics"] if is_axis(c)}
    order = list(AXES)
    return sorted(present, key=lambda c: (order.index(c.rpartition(" v")[0]), int(c.rpartition(" v")[2])))


def unit(entries: Iterable[dict], col: str) -> Optional[str]:
    """The unit of an axis column among ``entries`` (one dataset's: the same for all of them)."""
    return next((e["metrics"][col].get("unit") for e in entries if col in e["metrics"]), None)
