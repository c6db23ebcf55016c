"""Which identity row (and which template) drives each clip that ``predict --identity gt`` animates.

A trained run names its rows ``D1/<subject>``; a subject it never saw takes the pivot row, and the record says
so. An imported official release names a dataset's rows by the release's ``id_list`` when it ships one and
``#k`` otherwise (D0-D2 ship no split JSONs). Then a subject's row is found from its template: the release's
``id_template.npy`` holds every subject's neutral face in the identity table's order, seen in training or not,
and the official test loop uses that row; the prepared store's template of the subject must equal exactly one
of the dataset's release templates (tolerance from float32 rounding, :func:`template_tolerance`). A subject of an
imported release with no row is an error naming it: the pivot would move the output by a large part of the
motion's range (the official authors measured +30% LVE on VOCASET, UniTalker issue #19).

Takes: a loaded checkpoint and a prepared dataset. Gives: ``{subject: Row}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from a2fbench.errors import ConfigError

#: how a row was chosen, as the predictions record spells it
BY_NAME, BY_TEMPLATE, PIVOT_UNSEEN, PIVOT_ASKED = "name", "release_template", "pivot_unseen", "pivot"
EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Row:
    """One subject's identity row: the row, how it was chosen, and the identity key it names."""

    row: int
    how: str
    key: Optional[str]

    def record(self) -> dict:
        return {"identity_row": self.row, "identity_from": self.how, "identity_key": self.key}


def template_tolerance(reference: np.ndarray) -> float:
    """Largest per-value difference for two copies of one template in UniTalker's scaled float32 units.

    The release stores each template in float32 (one rounding, at most eps32/2 relative) and the importer scales
    it in float32 (a second one); the store keeps the source's dtype, rounded once more when compared in float32.
    Three roundings of eps32/2 relative each, with a factor 2 to spare, bounded by the template's largest
    magnitude: ``4 * eps32 * max|t|``. Distinct faces differ by many orders more (millimetres, not 1e-7).
    """
    return 4.0 * EPS32 * max(float(np.max(np.abs(reference))) if reference.size else 0.0, EPS32)


def is_imported(loaded: Any) -> bool:
    """A run made by ``import-official`` (its rows are the release's)."""
    return bool((getattr(loaded, "meta", None) or {}).get("official"))


def release_templates(loaded: Any, dataset: str) -> list[tuple[int, str, np.ndarray]]:
    """(row, key, scaled template as float64) of every identity row of ``dataset`` whose template the run keeps."""
    out = []
    for r, key in enumerate(loaded.identities.keys):
        if key.startswith(f"{dataset}/") and f"template.{key}" in loaded.aux:
            out.append((r, key, loaded.aux[f"template.{key}"].double().numpy().reshape(-1)))
    return out


def match_template(template_scaled: np.ndarray, candidates: list[tuple[int, str, np.ndarray]]
                   ) -> list[tuple[int, str]]:
    """The candidates whose template equals ``template_scaled`` within :func:`template_tolerance`."""
    t = np.asarray(template_scaled, np.float64).reshape(-1)
    tol = template_tolerance(t)
    return [(r, k) for r, k, c in candidates if c.shape == t.shape and float(np.max(np.abs(c - t))) <= tol]


def subject_rows(loaded: Any, ds: Any, subjects: list[str], identity: str = "gt") -> dict[str, Row]:
    """``{subject: Row}`` for the subjects of a prepared dataset (see the module doc); one-line errors."""
    idt, spec = loaded.identities, ds.spec
    if identity == "pivot":
        return {s: Row(idt.pivot, PIVOT_ASKED, None) for s in subjects}
    imported = is_imported(loaded)
    cands = release_templates(loaded, spec.id) if imported else []
    scale = float(spec.unitalker.scale)
    out: dict[str, Row] = {}
    for s in subjects:
        r = idt.row(spec.id, s)
        if r is not None:
            out[s] = Row(r, BY_NAME, idt.keys[r])
            continue
        if not imported:
            out[s] = Row(idt.pivot, PIVOT_UNSEEN, None)
            continue
        hits = match_template(np.asarray(ds.template(s), np.float64) * scale, cands)
        if len(hits) != 1:
            found = ("no row" if not hits else f"{len(hits)} rows ({', '.join(str(r) for r, _ in hits[:4])})")
            raise ConfigError(f"--identity gt: {spec.id} subject {s!r} has {found} of the release's id_template.npy "
                              f"with its template ({len(cands)} {spec.id} rows compared); expected exactly one. Pass "
                              "the release folder this store's templates came from to import-official, or predict "
                              "with --identity pivot")
        out[s] = Row(hits[0][0], BY_TEMPLATE, hits[0][1])
    return out
