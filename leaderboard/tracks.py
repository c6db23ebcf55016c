"""Data tracks: scores made on the real datasets and scores made on synthetic stand-ins never meet.

A results file records whether its prepared store was a stand-in (``dataset.synthetic``, copied by ``prepare``
from the ``.a2fbench-synth.json`` marker that ``a2fbench synth`` writes). A stand-in's numbers say nothing about
the real dataset (the quickstart's tiny model scores an LVE 12x below the paper's on them), so the board keeps
two **tracks**:

* ``real``: evaluated entries on the real data, and every reported row (papers measured the real data);
* ``synthetic``: evaluated entries on stand-ins.

Each track has its own tables (one per dataset), its own ranks and its own overall (Borda) table; the terminal,
the JSON and the page all show the synthetic track after the real one, under a heading that says what it is.
Another split of the board (e.g. verified / unverified) is a separate concept and does not live here.
"""

from __future__ import annotations

from typing import Any

REAL = "real"
SYNTHETIC = "synthetic"
#: display order: the real track first
TRACKS = (REAL, SYNTHETIC)
TITLE = {REAL: "Real data", SYNTHETIC: "Synthetic stand-ins"}
NOTE = {
    REAL: "scores on the real datasets and numbers reported in papers",
    SYNTHETIC: "scores on synthetic stand-ins (a2fbench synth): NOT comparable with the real data or any paper; "
               "ranked only among themselves",
}


def track_of(e: dict[str, Any]) -> str:
    """An entry's track: ``synthetic`` when its results were scored on a stand-in, else ``real``."""
    return SYNTHETIC if e.get("kind") != "reported" and e.get("synthetic") else REAL


def order(track: str) -> int:
    return TRACKS.index(track)
