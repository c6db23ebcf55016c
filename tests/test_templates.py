"""Which template a mesh sits on (``a2fbench.store.templates``): one place, and the answer names its source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import a2fbench
from a2fbench.errors import RawDataError, StoreError
from a2fbench.sources.meshes import read_template_file
from a2fbench.store.templates import Template, choose_template


def test_subject_and_sequence_give_the_stores_own_template(data_tiny: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    seq = ds[ds.ids[0]]
    by_subject = choose_template(ds, subject=seq.subject)
    by_sequence = choose_template(ds, seq_id=seq.id)
    want = np.asarray(ds.template(seq.subject), np.float64)
    assert np.array_equal(by_subject.values, want) and np.array_equal(by_sequence.values, want)
    assert by_subject.record() == {"source": "subject", "detail": f"D1/{seq.subject}"}


def test_a_given_template_wins_and_an_unknown_sequence_is_never_the_first_subject(data_tiny: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    D = int(ds.card["dim"])
    mine = Template(np.arange(D, dtype=np.float64), "file", "/x/head.obj")
    assert choose_template(ds, seq_id="not-a-sequence", given=mine) is mine
    with pytest.raises(StoreError, match="not a sequence of D1"):
        choose_template(ds, seq_id="not-a-sequence")
    with pytest.raises(StoreError, match=f"expected {D} values"):
        choose_template(ds, given=Template(np.zeros(D + 3), "file", "/x/other.obj"))


def test_a_users_template_file_round_trips_as_npy_and_obj(tmp_path: Path) -> None:
    v = np.random.default_rng(0).normal(size=(5, 3))
    np.save(tmp_path / "t.npy", v)
    (tmp_path / "t.obj").write_text("".join(f"v {float(a)!r} {float(b)!r} {float(c)!r}\n" for a, b, c in v) + "f 1 2 3\nf 3 4 5\n")
    for name in ("t.npy", "t.obj"):
        t = read_template_file(tmp_path / name, 5, "a 5-vertex head")
        assert t.source == "file" and t.detail == str((tmp_path / name).resolve())
        assert np.array_equal(t.values, v.reshape(-1))  # float64 throughout: repr() round-trips exactly
    with pytest.raises(RawDataError, match="expected 6 vertices"):
        read_template_file(tmp_path / "t.npy", 6, "a 6-vertex head")
    np.save(tmp_path / "nan.npy", np.full((5, 3), np.nan))
    with pytest.raises(RawDataError, match="finite"):
        read_template_file(tmp_path / "nan.npy", 5, "a 5-vertex head")
