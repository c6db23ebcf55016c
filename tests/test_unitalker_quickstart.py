"""The key learning test, through the main job: `unitalker quickstart` on the tiny stand-ins, on the CPU.

quickstart synthesizes the tiny D0..D7 (the same stand-ins as the `raw_tiny` fixture), prepares them, fits
the PCA of D0..D2 (16 components), trains the `tiny` config, predicts every test split, scores it with
`a2fbench.scoring.evaluate` beside a static-template baseline, submits both to a leaderboard through the
`a2fbench` command line and exports its page. D1's test subjects are unseen in training (they use the pivot
identity). The run is the session's one quickstart (conftest ``quickstart_tiny``), shared with tests/test_readme.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"), pytest.mark.slow]


def test_quickstart_tiny_learns_d1_at_least_30_percent_below_static(quickstart_tiny):
    from unitalker.quickstart import DATASETS, METHOD, PAGE, PRED, STATIC, quickstart

    out = quickstart_tiny.out
    summary = json.loads((out / "summary.json").read_text())["lve"]
    d1 = summary["D1"]
    assert d1["model"] <= 0.7 * d1["static"], d1
    # the same numbers as the results JSON files a2fbench evaluate wrote
    doc = json.loads((out / "results" / "D1.model.json").read_text())
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(d1["model"]) and doc["dataset"]["split"] == "test"
    assert sorted(p.name for p in (out / PRED).iterdir()) == DATASETS
    # both methods on the board, in the synthetic track only, and on the exported page
    r = subprocess.run([sys.executable, "-m", "a2fbench.cli", "leaderboard", "show", "--json", "--track", "synthetic"],
                       capture_output=True, text=True, env=quickstart_tiny.env, timeout=300)
    entries = json.loads(r.stdout)["entries"]
    assert {e["method"] for e in entries} == {METHOD, STATIC} and len(entries) == 2 * len(DATASETS)
    assert METHOD in (out / PAGE).read_text()
    # issue 22 item 2: the printed summary says what the run showed, one line per dataset, where the page is and
    # what to run next: a screenful, not the whole board
    printed = quickstart_tiny.stdout
    assert len(printed.strip().splitlines()) <= 30, printed
    for d in DATASETS:
        (line,) = [ln for ln in printed.splitlines() if ln.startswith(f"  {d} ")]
        ratio = float(re.search(r"(\d+\.\d+)x", line).group(1))
        assert ratio == pytest.approx(summary[d]["model"] / summary[d]["static"], abs=0.006)
    assert str(out / PAGE) in printed and "UniTalker-B" not in printed  # no paper rows in the summary
    # a second call finds every step done and only resubmits (idempotent) and re-exports the page
    again = quickstart(out, size="tiny", device="cpu", progress=False, db=quickstart_tiny.home / "leaderboard.sqlite")
    assert again == summary


def test_every_command_the_quickstart_prints_runs_as_printed(quickstart_tiny):
    """Its next steps, copy-pasted (issue 22 item 3): each runs, from any folder, with the quickstart's home."""
    lines = [ln.split("#")[0].strip() for ln in quickstart_tiny.stdout.splitlines() if ln.startswith("  ")]
    cmds = [c for c in lines if c.split(" ")[0] in ("a2fbench", "unitalker", "cd")]
    assert len(cmds) >= 4
    for c in cmds:
        r = subprocess.run(["bash", "-c", c], capture_output=True, text=True, env=quickstart_tiny.env, timeout=600,
                           cwd="/", stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (c, r.stderr[-800:])
