"""--identity gt on an imported release: each subject's own row, found by template in the release's
id_template.npy within float32 rounding; none or several is one line naming the subject."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from a2fbench.errors import ConfigError
from a2fbench.registry import get_spec
from unitalker.infer.rows import BY_NAME, BY_TEMPLATE, PIVOT_UNSEEN, subject_rows, template_tolerance
from unitalker.model.identity import IdentityTable

EPS = float(np.finfo(np.float32).eps)


def _loaded(keys: list[str], templates: dict[str, np.ndarray], imported: bool = True) -> SimpleNamespace:
    aux = {f"template.{k}": torch.from_numpy(t.astype(np.float32)) for k, t in templates.items()}
    return SimpleNamespace(identities=IdentityTable(keys), aux=aux, meta={"official": {"release": "r"}} if imported
                           else {})


def _store(templates: dict[str, np.ndarray], dataset: str = "D0") -> SimpleNamespace:
    return SimpleNamespace(spec=get_spec(dataset), template=lambda s: templates[s])


def test_rows_found_by_template_in_permuted_order() -> None:
    rng = np.random.default_rng(0)
    faces = {s: rng.normal(0, 0.1, 30) for s in ("F2", "F3", "M3")}  # native BIWI units (float64, as the store)
    order = ["M3", "F2", "F3"]  # the release's rows, in another order than the subjects
    keys = [f"D0/#{i}" for i in range(3)] + ["D1/FaceTalk_a"]
    # the release keeps float32 templates, scaled by 0.2 in float32 (as the importer does)
    rel = {f"D0/#{i}": (faces[s].astype(np.float32) * np.float32(0.2)) for i, s in enumerate(order)}
    rows = subject_rows(_loaded(keys, rel), _store(faces), ["F2", "F3", "M3"])
    assert {s: r.row for s, r in rows.items()} == {"F2": 1, "F3": 2, "M3": 0}
    assert all(r.how == BY_TEMPLATE for r in rows.values()) and rows["F2"].key == "D0/#1"
    assert rows["F2"].record() == {"identity_row": 1, "identity_from": BY_TEMPLATE, "identity_key": "D0/#1"}


def test_tolerance_is_float32_rounding_not_a_nearby_face() -> None:
    t = np.array([0.5, -0.25, 0.125])
    assert template_tolerance(t) == pytest.approx(4 * EPS * 0.5)
    faces = {"F2": t}
    keys = ["D0/#0"]
    close = {"D0/#0": t * 0.2 + 2 * EPS * 0.1}  # two float32 roundings away: the same face
    assert subject_rows(_loaded(keys, close), _store(faces), ["F2"])["F2"].row == 0
    far = {"D0/#0": t * 0.2 + 1e-5}  # 1e-5 in scaled units: another face
    with pytest.raises(ConfigError, match=r"D0 subject 'F2' has no row of the release's id_template.npy"):
        subject_rows(_loaded(keys, far), _store(faces), ["F2"])


def test_two_matching_rows_are_one_line_and_names_win() -> None:
    t = np.ones(6) * 0.1
    keys = ["D0/#0", "D0/#1"]
    same = {k: t * 0.2 for k in keys}
    with pytest.raises(ConfigError, match=r"has 2 rows \(0, 1\)"):
        subject_rows(_loaded(keys, same), _store({"F2": t}), ["F2"])
    named = subject_rows(_loaded(["D0/F2", "D0/#1"], same), _store({"F2": t}), ["F2"])
    assert named["F2"].row == 0 and named["F2"].how == BY_NAME


def test_a_trained_run_uses_the_pivot_for_unseen_subjects_and_says_so() -> None:
    rows = subject_rows(_loaded(["D0/F2"], {}, imported=False), _store({"F2": np.zeros(3), "F1": np.zeros(3)}),
                        ["F2", "F1"])
    assert rows["F2"].row == 0 and rows["F1"].row == 1 and rows["F1"].how == PIVOT_UNSEEN
    assert subject_rows(_loaded(["D0/F2"], {}), _store({}), ["F2"], identity="pivot")["F2"].row == 1
