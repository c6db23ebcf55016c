"""Units and display scales: every number on the board is shown in its dataset's display unit.

A unit string is ``[FACTOR] BASE[^POWER]``: ``m^2``, ``1e-5 m^2`` (a paper's "x1e-5 m²"), ``mm``,
``(codetalker_area_normalised)^2``. Evaluated entries carry the unit ``evaluate`` wrote (``m^2``); a reported row
carries the unit its source printed, factor included, so ``{value: 0.9626, unit: "1e-5 m^2"}`` is 9.626e-6 m².

Each dataset's display unit is its manifest's vertex unit at the power of the metric, times the manifest's
``display`` scale (VOCASET LVE: ``1e-5 m^2``; a metric the manifest does not list, such as LVD, takes MVE's for a
distance and LVE's for a squared distance: :func:`a2fbench.scoring.metrics.table.display_scale`, the rule the
results files follow). A value converts when its base is the same name, or both are
lengths (m, cm, mm) at the same power; a value that does not convert (a source that did not state its scale,
a unit of another kind) is shown as printed, marked, and never compared.
"""

from __future__ import annotations

import functools
import re
from typing import Optional

from a2fbench.errors import A2FBenchError
from a2fbench.registry import get_spec
from a2fbench.scoring.metrics.table import METRICS, display_scale

LENGTHS = {"m": 1.0, "cm": 1e-2, "mm": 1e-3}
_UNIT = re.compile(r"^\s*(?:(?P<f>[0-9.]+(?:e[+-]?\d+)?)\s*(?:x|\*|×)?\s*)?(?P<b>\([^()]+\)|[A-Za-z_][\w]*)"
                   r"(?:\^(?P<p>\d+))?\s*$")


@functools.lru_cache(maxsize=512)
def parse(unit: Optional[str]) -> Optional[tuple[float, str, int]]:
    """``"1e-5 m^2"`` -> (1e-5, "m", 2); None when the string is not a unit (e.g. "as printed")."""
    if not unit:
        return None
    m = _UNIT.match(unit)
    if not m:
        return None
    base = m.group("b")
    base = base[1:-1] if base.startswith("(") else base
    return float(m.group("f") or 1.0), base, int(m.group("p") or 1)


def factor(src: Optional[str], dst: Optional[str]) -> Optional[float]:
    """The number to multiply a value in ``src`` by to express it in ``dst``; None when they do not convert."""
    a, b = parse(src), parse(dst)
    if a is None or b is None or a[2] != b[2]:
        return None
    if a[1] == b[1]:
        base = 1.0
    elif a[1] in LENGTHS and b[1] in LENGTHS:
        base = (LENGTHS[a[1]] / LENGTHS[b[1]]) ** a[2]
    else:
        return None
    return a[0] * base / b[0]


def _fmt_scale(s: float) -> str:
    return "" if s == 1.0 else f"{s:.0e} ".replace("e-0", "e-").replace("e+0", "e")


@functools.lru_cache(maxsize=64)
def display_units(dataset: str) -> dict[str, str]:
    """{metric: display unit} of a dataset, e.g. D1: {"LVE": "1e-5 m^2", "MVE": "1e-3 m", ...}."""
    try:
        spec = get_spec(dataset)
    except A2FBenchError:
        return {}
    vertex_units = spec.vertex_units or spec.units
    return {m: _fmt_scale(display_scale(spec.display, m)) + info.unit(vertex_units) for m, info in METRICS.items()}


def to_display(value: Optional[float], unit: Optional[str], dataset: str, metric: str) -> Optional[float]:
    """``value`` (in ``unit``) in the dataset's display unit, or None when it does not convert."""
    if value is None:
        return None
    f = factor(unit, display_units(dataset).get(metric))
    return None if f is None else value * f


def scaled_note(dataset: str) -> Optional[str]:
    """The unit header's note for a dataset whose UniTalker scale is not 1: the ``unitalker`` protocol scores in
    UniTalker's scaled space, so its LVE is scale² times the dataset's unit (BIWI: x0.2, LVE x0.04)."""
    try:
        scale = float(get_spec(dataset).unitalker.scale)
    except A2FBenchError:  # an unknown dataset id has no note
        return None
    if scale == 1.0:
        return None
    return (f"protocol unitalker rows are in UniTalker's scaled space: coordinates x{scale:g}, so LVE x{scale ** 2:g} "
            "of the unit above")
