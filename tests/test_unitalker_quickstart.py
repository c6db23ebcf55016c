"""The key learning test, through the main job: `unitalker quickstart` on the tiny stand-ins, on the CPU.

quickstart synthesizes the tiny D0..D7 (the same stand-ins as the `raw_tiny` fixture), prepares them, fits
the PCA of D0..D2 (16 components), trains the `tiny` config, predicts every test split, scores it with
`a2fbench.scoring.evaluate` beside a static-template baseline, and submits both to a leaderboard through the
`a2fbench` command line. D1's test subjects are unseen in training (they use the pivot identity).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")


@pytest.mark.slow
def test_quickstart_tiny_learns_d1_at_least_30_percent_below_static(tmp_path, capsys):
    from unitalker.quickstart import METHOD, STATIC, quickstart

    out = tmp_path / "qs"
    summary = quickstart(out, size="tiny", device="cpu", overrides=["train.threads=2"], progress=False)
    printed = capsys.readouterr().out
    d1 = summary["D1"]
    assert d1["model"] <= 0.7 * d1["static"], d1
    # the same numbers as the results JSON files a2fbench evaluate wrote, and both rows on the board
    doc = json.loads((out / "results" / "D1.model.json").read_text())
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(d1["model"]) and doc["dataset"]["split"] == "test"
    assert METHOD in printed and STATIC in printed and "D1  VOCASET" in printed
    assert sorted(p.name for p in (out / "pred").iterdir()) == [f"D{i}" for i in range(8)]
    # a second call finds every step done and only rebuilds the board
    again = quickstart(out, size="tiny", device="cpu", overrides=["train.threads=2"], progress=False)
    assert again == summary
