"""`compare`: paired differences with bootstrap CI and permutation p-value; refusal of incomparable files."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from a2fbench.errors import ResultSchemaError
from a2fbench.scoring.compare import compare, compare_files
from a2fbench.scoring.results import aggregate, finalize
from a2fbench.util.fsutil import write_json


def _doc(values: dict[str, list[float]], frames: list[int], *, ids=None, dataset="D1", fp="sha256:aa",
         protocol="a2f", regions="sha256:r1", split="test") -> dict:
    ids = ids or [f"s{i:02d}" for i in range(len(frames))]
    frames = [int(f) for f in frames]
    values = {m: [float(x) for x in v] for m, v in values.items()}
    rows = [{"id": s, "frames": f, **{m: v[i] for m, v in values.items()}} for i, (s, f) in enumerate(zip(ids, frames))]
    metrics = {}
    for m in (*values, *(["FDD_abs"] if "FDD" in values else [])):
        metrics[m] = {"value": aggregate(m, rows), "unit": "m", "display_scale": 1e-5}
    return finalize({
        "schema_version": 1, "a2fbench_version": "test",
        "dataset": {"id": dataset, "name": "x", "version": 1, "split": split, "fingerprint": fp,
                    "n_sequences": len(rows), "n_frames": sum(frames), "regions": {"set": "r", "digest": regions}},
        "protocol": {"name": protocol, "version": 1, "length_policy": "truncate_pred_only"},
        "metrics": metrics, "per_sequence": rows, "predictions": {"fingerprint": "sha256:p"}, "created": "now"})


def test_identical_results_differ_by_nothing() -> None:
    rng = np.random.default_rng(0)
    v = {"LVE": list(rng.uniform(1, 2, 10)), "FDD": list(rng.normal(0, 1, 10))}
    a = _doc(v, list(rng.integers(50, 200, 10)))
    r = compare(a, a)
    for m in ("LVE", "FDD", "FDD_abs"):
        assert r["metrics"][m]["diff"] == 0.0 and r["metrics"][m]["ci95"] == [0.0, 0.0]
        assert r["metrics"][m]["p_value"] == 1.0
    assert r["n_shared"] == 10


def test_known_difference_and_exact_permutation_p() -> None:
    # three sequences, B better by 1, 2, 3 on equal frames: diff = -2; of the 2^3 swap patterns only "none"
    # and "all" reach |diff| >= 2, so the exact two-sided p-value is 2/8
    a = _doc({"LVE": [10.0, 10.0, 10.0]}, [100, 100, 100])
    b = _doc({"LVE": [9.0, 8.0, 7.0]}, [100, 100, 100])
    r = compare(a, b)["metrics"]["LVE"]
    assert r["a"] == 10.0 and r["b"] == 8.0 and r["diff"] == -2.0 and r["rel_diff"] == -0.2
    assert r["p_value"] == pytest.approx(0.25)
    # brute force of the same test statistic
    d = np.array([-1.0, -2.0, -3.0])
    stats = [np.mean(d * np.array(s)) for s in itertools.product([1, -1], repeat=3)]
    assert np.mean(np.abs(stats) >= 2.0 - 1e-12) == pytest.approx(r["p_value"])
    assert r["ci95"] is None  # 3 sequences: the smallest possible p is 2/8, so no interval is reported


def test_small_samples_never_contradict_the_p_value() -> None:
    """n = 2, B better on both: every bootstrap resample of the difference is negative (the interval would
    exclude 0) while the exact permutation p-value is 2/4 = 0.5. No interval, a warning saying why."""
    from a2fbench.scoring.compare import smallest_n

    a = _doc({"LVE": [10.0, 10.0]}, [100, 100])
    b = _doc({"LVE": [9.0, 8.0]}, [100, 100])
    res = compare(a, b)
    r = res["metrics"]["LVE"]
    assert r["p_value"] == pytest.approx(0.5) and r["ci95"] is None
    assert len(res["warnings"]) == 1 and "smallest possible p-value is 0.5" in res["warnings"][0]
    # the threshold follows from 2 / 2^n: 2/32 = 0.0625 >= 0.05 at n = 5, 2/64 = 0.03125 < 0.05 at n = 6
    assert smallest_n(0.95) == 6 and smallest_n(0.99) == 8
    a6 = _doc({"LVE": [10.0] * 6}, [100] * 6)
    b6 = _doc({"LVE": [9.0, 8.0, 7.0, 9.5, 8.5, 7.5]}, [100] * 6)
    r6 = compare(a6, b6)
    assert r6["warnings"] == [] and r6["metrics"]["LVE"]["ci95"][1] < 0
    assert r6["metrics"]["LVE"]["p_value"] == pytest.approx(2 / 64)  # exact: only "none" and "all" swapped


def test_pooled_difference_is_frame_weighted() -> None:
    a = _doc({"LVE": [1.0, 1.0]}, [300, 100])
    b = _doc({"LVE": [0.0, 4.0]}, [300, 100])
    r = compare(a, b)["metrics"]["LVE"]
    assert r["b"] == pytest.approx(1.0) and r["diff"] == pytest.approx(0.0, abs=1e-15)


def test_consistent_small_gain_is_significant_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    n = 40
    base = rng.uniform(4, 6, n)
    frames = list(rng.integers(80, 200, n))
    a = _doc({"LVE": list(base)}, frames)
    gain = _doc({"LVE": list(base * 0.98 + rng.normal(0, 0.005, n))}, frames)  # 2% better on every sequence
    noise = _doc({"LVE": list(base + rng.normal(0, 0.5, n))}, frames)
    g = compare(a, gain, n_resamples=4000)["metrics"]["LVE"]
    z = compare(a, noise, n_resamples=4000)["metrics"]["LVE"]
    assert g["p_value"] < 0.001 and g["ci95"][1] < 0
    assert g["rel_diff"] == pytest.approx(-0.02, abs=0.003)
    assert z["p_value"] > 0.05 and z["ci95"][0] < 0 < z["ci95"][1]


def test_shared_sequences_only() -> None:
    a = _doc({"LVE": [1.0, 2.0, 3.0]}, [10, 10, 10], ids=["x", "y", "z"])
    b = _doc({"LVE": [2.0, 3.0]}, [10, 10], ids=["y", "w"])
    r = compare(a, b)
    assert r["n_shared"] == 1 and r["only_in_a"] == 2 and r["only_in_b"] == 1
    assert r["metrics"]["LVE"]["a"] == 2.0 and r["metrics"]["LVE"]["b"] == 2.0


@pytest.mark.parametrize("kw,msg", [
    ({"dataset": "D0"}, "scores dataset D1 but .* scores D0"),
    ({"fp": "sha256:bb"}, "different prepared copies"),
    ({"protocol": "codetalker"}, "uses protocol a2f v1 but .* codetalker"),
    ({"regions": "sha256:r2"}, "different lip/upper-face vertices"),
    ({"ids": ["q1", "q2"]}, "share no sequence"),
])
def test_incomparable(kw, msg) -> None:
    a = _doc({"LVE": [1.0, 2.0]}, [10, 10])
    b = _doc({"LVE": [1.0, 2.0]}, [10, 10], **kw)
    with pytest.raises(ResultSchemaError, match=msg):
        compare(a, b)


def test_cli_compare(tmp_path: Path, monkeypatch, capsys) -> None:
    from a2fbench.cli import main

    a = _doc({"LVE": [10.0, 10.0, 10.0]}, [100, 100, 100])
    b = _doc({"LVE": [9.0, 8.0, 7.0]}, [100, 100, 100])
    write_json(tmp_path / "a.json", a)
    write_json(tmp_path / "b.json", b)
    assert compare_files(tmp_path / "a.json", tmp_path / "b.json")["metrics"]["LVE"]["diff"] == -2.0
    monkeypatch.setattr(sys, "argv", ["a2fbench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr().out
    assert e.value.code == 0
    row = next(ln for ln in out.splitlines() if ln.startswith("LVE"))
    assert "-200000.0000" in row and "-20.0%" in row and "0.2500" in row  # display scale 1e-5 from the file
    # an edited file is refused (hash), one line, exit 1
    doc = json.loads((tmp_path / "b.json").read_text())
    doc["metrics"]["LVE"]["value"] = 1.0
    (tmp_path / "b.json").write_text(json.dumps(doc))
    monkeypatch.setattr(sys, "argv", ["a2fbench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and err[-1].startswith("error: ") and "content_hash" in err[-1]


def _with_axes(doc: dict, rows: dict[str, list], entries: dict[str, dict]) -> dict:
    """``doc`` with axis values in its per-sequence rows and axis entries (as ``evaluate --metrics`` writes)."""
    d = json.loads(json.dumps(doc))
    for key, vals in rows.items():
        for r, v in zip(d["per_sequence"], vals):
            r[key] = v
    base = {"unit": "1", "version": 1, "constants": {"c": 1}, "better": "lower", "higher_is_better": False}
    for name, e in entries.items():
        d["metrics"][name] = {**base, **e}
    return finalize(d)


def test_axes_are_compared_by_their_own_aggregation() -> None:
    """MTM: mean over the sequences where both files have a value (a null one left out); SilenceOpening: ratio of
    sums over silent frames (B holds the mouth 2x as open as the ground truth, A as open: 1 -> 2); SLCC: the two
    values, no interval or p-value; LipLag shifted by 3 frames everywhere: diff 3, exact permutation p 2/2^n."""
    n = 10
    frames = [100] * n
    a = _doc({"LVE": [1.0] * n}, frames)
    b = _doc({"LVE": [1.0] * n}, frames)
    mtm_a = [100.0] * n
    mtm_b = [50.0] * (n - 1) + [None]
    sil = {"silence_frames": [10] * n, "silence_open_gt": [0.5] * n}
    a = _with_axes(a, {"MTM": mtm_a, "LipLag": [float(i) for i in range(n)], **sil,
                       "silence_open_pred": [0.5] * n},
                   {"MTM": {"value": 100.0, "unit": "ms"}, "LipLag": {"value": 4.5, "unit": "ms"},
                    "SilenceOpening": {"value": 1.0}, "SLCC": {"value": 0.3, "gt": 0.4, "delta": 0.1}})
    b = _with_axes(b, {"MTM": mtm_b, "LipLag": [i + 3.0 for i in range(n)], **sil, "silence_open_pred": [1.0] * n},
                   {"MTM": {"value": 50.0, "unit": "ms"}, "LipLag": {"value": 7.5, "unit": "ms"},
                    "SilenceOpening": {"value": 2.0}, "SLCC": {"value": 0.5, "gt": 0.4, "delta": 0.1}})
    r = compare(a, b)
    m = r["metrics"]
    assert m["MTM"]["a"] == 100.0 and m["MTM"]["b"] == 50.0 and m["MTM"]["diff"] == -50.0
    assert m["MTM"]["n_used"] == n - 1 and m["MTM"]["p_value"] == pytest.approx(2 / 2 ** (n - 1))
    assert m["LipLag"]["diff"] == pytest.approx(3.0, abs=1e-12) and m["LipLag"]["p_value"] == pytest.approx(2 / 2**n)
    assert m["LipLag"]["ci95"] == pytest.approx([3.0, 3.0], abs=1e-12)
    assert m["SilenceOpening"]["a"] == 1.0 and m["SilenceOpening"]["b"] == 2.0 and m["SilenceOpening"]["diff"] == 1.0
    assert m["SilenceOpening"]["ci95"] == pytest.approx([1.0, 1.0]) and m["SilenceOpening"]["p_value"] < 0.01
    assert m["SLCC"]["diff"] == pytest.approx(0.2) and m["SLCC"]["ci95"] is None and m["SLCC"]["p_value"] is None
    assert m["LVE"]["diff"] == 0.0 and "axes_skipped" not in r
    # the same file against itself: no difference anywhere
    same = compare(a, a)["metrics"]
    assert all(same[k]["diff"] == 0.0 for k in ("MTM", "LipLag", "SilenceOpening", "SLCC"))
    assert same["MTM"]["p_value"] == 1.0 and same["SilenceOpening"]["ci95"] == [0.0, 0.0]


def test_axes_not_compared_say_why() -> None:
    n = 8
    a = _doc({"LVE": [1.0] * n}, [50] * n)
    rows = {"MTM": [10.0] * n, "Diversity": [None] * n}
    a1 = _with_axes(a, rows, {"MTM": {"value": 10.0}, "Diversity": {"value": None, "reason": "one sample"}})
    a2 = _with_axes(a, rows, {"MTM": {"value": 10.0, "version": 2}, "Diversity": {"value": None, "reason": "x"}})
    a3 = _with_axes(a, rows, {"MTM": {"value": 10.0, "constants": {"c": 2}}})
    r = compare(a1, a2, names=("a.json", "b.json"))
    assert "MTM" not in r["metrics"] and "different versions of MTM" in r["axes_skipped"]["MTM"]
    assert r["axes_skipped"]["Diversity"] == "a.json has no value for Diversity (one sample)"
    assert "different constantss" not in compare(a1, a3)["axes_skipped"]["MTM"]
    assert "different constants of MTM" in compare(a1, a3)["axes_skipped"]["MTM"]
    assert "MTM" not in compare(a1, a)["metrics"]  # only one file has it: not compared, nothing to say
