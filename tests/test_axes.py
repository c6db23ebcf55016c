"""The evaluation axes (``evaluate --metrics``): known answers of MTM, lip lag, silence opening, SLCC and diversity,
the vectorised DTW against the cell-by-cell oracle, bad input, and LVE parity with torchmetrics."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest

import a2fbench
from a2fbench.errors import A2FBenchError, ResultSchemaError
from a2fbench.scoring.evaluate import _check_audio, evaluate, score_arrays
from a2fbench.scoring.metrics import reference as R
from a2fbench.scoring.metrics import signals as S
from a2fbench.scoring.metrics.axes import parse_metrics
from a2fbench.scoring.metrics.stats import ratio_ci
from a2fbench.scoring.results import finalize, validate

from _cli_helpers import run_a2fbench

FPS = 30.0


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x[clip(t - k)]``: x delayed by k frames (advanced for k < 0), ends held."""
    return x[np.clip(np.arange(len(x)) - k, 0, len(x) - 1)]


def _curve(T: int = 150, seed: int = 0) -> np.ndarray:
    """A smooth mouth-opening-like curve: a few sines of syllable rates (2-6 Hz at 30 fps) plus an offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / FPS
    return 1.0 + sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in zip(rng.uniform(0.2, 1, 3),
                                                                          rng.uniform(2, 6, 3), rng.uniform(0, 6, 3)))


# ------------------------------------------------------------------------------------------ arithmetic


@pytest.mark.parametrize("seed", range(6))
def test_ddtw_path_equals_cell_by_cell_oracle(seed: int) -> None:
    """Anti-diagonal filling does the same additions and minima as the recursion: the same path, exactly."""
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    x, y = rng.standard_normal(n).cumsum(), rng.standard_normal(m).cumsum()
    if seed == 0:  # ties everywhere: constant signals
        x, y = np.zeros(n), np.zeros(m)
    assert S.ddtw_path(x, y).tolist() == [list(p) for p in R.ddtw_path(x, y)]


def test_mtm_of_a_delayed_copy_is_its_delay() -> None:
    g = _curve()
    assert S.mtm_frames(g, g) == 0.0
    for k in (1, 2, 3):
        assert S.mtm_frames(g, _shift(g, k)) == pytest.approx(k, abs=0.5)
    # unsigned: an early prediction gives its advance too
    assert S.mtm_frames(g, _shift(g, -2)) == pytest.approx(2, abs=0.5)
    # the spec's multi-sine shifted by 6 frames: 6 up to the matches near the ends
    assert S.mtm_frames(g, _shift(g, 6)) == pytest.approx(6, abs=0.5)
    assert S.mtm_frames(np.ones(50), np.ones(50)) is None  # no extremum: undefined


def test_lip_lag_of_a_delayed_copy_is_exact_and_signed() -> None:
    g = _curve(seed=3)
    assert S.lip_lag_frames(g, g, FPS) == 0
    assert S.lip_lag_frames(g, _shift(g, 3), FPS) == 3
    assert S.lip_lag_frames(g, _shift(g, -2), FPS) == -2
    assert S.lip_lag_frames(np.ones(40), g[:40], FPS) is None  # constant ground truth: no correlation
    assert max(S.lag_correlations(g[:20], g[:20], 100)) == 17  # the window never leaves fewer than 3 frames


def test_lip_lag_tie_rule() -> None:
    assert S.best_lag({-1: 0.5, 1: 0.5, 0: 0.2}) == -1  # same |lag|: the negative one
    assert S.best_lag({2: 0.9, -3: 0.9, 5: 0.1}) == 2  # the smaller |lag|
    assert S.best_lag({}) is None


def test_silence_rule_on_a_tone_gap_tone() -> None:
    """1 s tone, 0.5 s of zeros, 1 s tone at 16 kHz, 30 fps: frames 30..44 are silent (15), 11 after the
    2-frame guards; a span at the start of the sequence keeps its first frame."""
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)
    a = np.concatenate([tone, np.zeros(sr // 2), tone])
    T = 75
    lv = S.frame_levels(a, sr, FPS, T)
    assert np.flatnonzero(lv < -40).tolist() == list(range(30, 45))
    assert np.flatnonzero(S.silent_frames(lv, FPS)).tolist() == list(range(32, 43))
    b = np.concatenate([np.zeros(sr // 2), tone])  # silent start: no guard at frame 0
    assert np.flatnonzero(S.silent_frames(S.frame_levels(b, sr, FPS, 45), FPS)).tolist() == list(range(0, 13))
    short = np.concatenate([tone, np.zeros(sr // 10), tone])  # 0.1 s < 0.2 s: no span
    assert not S.silent_frames(S.frame_levels(short, sr, FPS, 63), FPS).any()
    assert not S.silent_frames(S.frame_levels(a * 1e-6, sr, FPS, T), FPS).any()  # below -80 dBFS: no silence
    lv = S.frame_levels(a[:sr], sr, FPS, T)  # audio shorter than the motion: frames without audio have no level
    assert np.isnan(lv[30:]).all() and not S.silent_frames(lv, FPS)[30:].any()


@pytest.mark.parametrize("sr,fps,n", [(16000, 30.0, 75), (22050, 25.0, 40), (16000, 29.97, 10)])
def test_frame_levels_equal_a_window_by_window_loop(sr: int, fps: float, n: int) -> None:
    """One reduceat over consecutive windows = each window's mean square, frame by frame (float64 sums of a few
    hundred terms in another order: 1e-12 relative), the audio ending mid-way."""
    a = np.random.default_rng(0).standard_normal(int(sr * (n - 2.5) / fps))
    a[len(a) // 2:] *= 1e-3  # a quiet second half (-60 dB)
    got = S.frame_levels(a, sr, fps, n)
    rms = []
    for t in range(n):
        lo, hi = math.floor(t * sr / fps + 1e-9), min(math.floor((t + 1) * sr / fps + 1e-9), len(a))
        rms.append(math.sqrt(float(np.mean(a[lo:hi] ** 2))) if hi > lo else math.nan)
    want = 20 * np.log10(np.array(rms) / np.nanmax(rms))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-10)


def test_lip_intensity_and_slcc_closed_forms() -> None:
    x = np.zeros((9, 4, 3))
    x[1::2, :, 0] = 0.25  # every vertex moves by 0.25 between consecutive frames
    steps = np.concatenate([S.lip_speed(x[:4], None), S.lip_speed(x[4:], x[3])])  # chunked = whole
    assert steps.tolist() == [0.25] * 8 and S.lip_intensity(steps) == 0.25
    rms = [1.0, 2.0, 4.0, 0.5, 0.7, 0.9]
    who = ["a", "a", "a", "b", "b", "b"]
    li = [r * 3 + (0 if w == "a" else 10) for r, w in zip(rms, who)]  # per speaker linear: r = 1
    assert S.slcc(rms, li, who)[0] == pytest.approx(1.0, abs=1e-12)
    scaled = [v * (7.0 if w == "b" else 1.0) for v, w in zip(li, who)]  # per-speaker z-scores: scale-free
    assert S.slcc(rms, scaled, who)[0] == pytest.approx(S.slcc(rms, li, who)[0], abs=1e-12)
    assert S.slcc(rms, [-v for v in li], who)[0] == pytest.approx(-1.0, abs=1e-12)
    assert S.slcc(rms[:3] + [1.0], li[:3] + [1.0], who[:3] + ["c"]) == (pytest.approx(1.0), 3)  # c dropped
    assert S.slcc(rms[:2] + [1.0], li[:2] + [1.0], ["a", "a", "c"])[0] is None  # < 3 usable clips


def test_pair_distance_and_ratio_ci() -> None:
    g = np.random.default_rng(0).standard_normal((5, 7, 3))
    h = g.copy()
    h[..., 1] += 0.3
    assert np.allclose(S.mean_pair_distance(g, h), 0.3, rtol=1e-15, atol=1e-15)
    assert ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], n_resamples=200) == (2.0, 2.0)
    lo, hi = ratio_ci([1.0, 3.0, 2.0, 8.0], [1.0, 1.0, 1.0, 1.0], n_resamples=500)
    assert 1.0 <= lo <= 3.5 <= hi <= 8.0


def test_parse_metrics_names_and_errors() -> None:
    core = ("LVE", "MVE", "UFVE", "FDD", "FDD_abs")
    assert parse_metrics(None, core, "a2f") is None
    assert parse_metrics("LVE, Lip_Lag,fdd-abs,mtm", core, "a2f") == (("LVE", "FDD_abs"), ("MTM", "LipLag"))
    with pytest.raises(A2FBenchError, match=r"unknown metric 'lip-lagg' \(did you mean 'lip-lag'\?\); valid: lve"):
        parse_metrics("lve,lip-lagg", core, "a2f")
    with pytest.raises(A2FBenchError, match="expected a comma list"):
        parse_metrics(" , ", core, "a2f")
    with pytest.raises(A2FBenchError, match="protocol a2f does not compute LVD"):
        parse_metrics("lvd", core, "a2f")


def test_check_audio_refuses_a_sequence_without_recording() -> None:
    class Seq:
        n_samples = 0

    class DS:
        id = "D1"

        def __getitem__(self, sid: str) -> Seq:
            return Seq()

    with pytest.raises(A2FBenchError, match="expected its audio recording for --metrics silence-opening"):
        _check_audio(DS(), ["s1"], ("MTM", "SilenceOpening"))
    _check_audio(DS(), ["s1"], ("MTM",))  # no audio axis: no audio needed


# ------------------------------------------------------------------------------------------ end to end


def _write(d: Path, ds, fn, split: str = "test") -> Path:
    d.mkdir()
    for sid in ds.split(split):
        np.save(d / f"{sid}.npy", np.ascontiguousarray(fn(np.asarray(ds[sid].motion), sid), np.float32))
    return d


AXES_ALL = "lve,fdd,mtm,lip-lag,silence-opening,slcc,diversity"


def test_exact_and_delayed_predictions(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    ms = 1000.0 / float(ds.card["fps"])
    doc = evaluate("D1", _write(tmp_path / "same", ds, lambda m, s: m), data_tiny, metrics=AXES_ALL, progress=False)
    m = doc["metrics"]
    assert m["LVE"]["value"] == 0.0 and m["MTM"]["value"] == 0.0 and m["LipLag"]["value"] == 0.0
    assert m["MTM"]["unit"] == m["LipLag"]["unit"] == "ms" and m["MTM"]["version"] == 1
    assert m["LipLag"]["constants"]["max_lag_frames"] == 15 and m["MTM"]["constants"]["sigma_frames"] == 2.0
    assert m["MTM"]["mouth_pair"]["upper"] == 3531 and doc["dataset"]["regions"]["mouth_pair"]["lower"] == 3504
    assert m["SLCC"]["value"] == pytest.approx(m["SLCC"]["gt"], abs=1e-12) or m["SLCC"]["value"] is None
    # one sample per sequence: diversity is undefined, with its reason, and the command still succeeds
    assert m["Diversity"]["value"] is None and "two or more samples" in m["Diversity"]["reason"]
    assert "MVE" not in m and doc["protocol"]["metrics_selected"][:2] == ["LVE", "FDD"]
    assert all({"MTM", "LipLag", "speech_rms", "lip_intensity"} <= set(r) for r in doc["per_sequence"])
    late = evaluate("D1", _write(tmp_path / "late", ds, lambda m, s: _shift(m, 3)), data_tiny, metrics="mtm,lip-lag",
                    progress=False)
    validate(late)  # the axes follow from their per-sequence scores; an edited value does not
    bad = finalize({**late, "metrics": {**late["metrics"], "MTM": {**late["metrics"]["MTM"], "value": 1.0}}})
    with pytest.raises(ResultSchemaError, match="MTM is 1.0 but its per-sequence scores give"):
        validate(bad)
    assert late["metrics"]["LipLag"]["value"] == pytest.approx(3 * ms, abs=1e-9)
    assert late["metrics"]["MTM"]["value"] == pytest.approx(3 * ms, abs=0.5 * ms)
    early = evaluate("D1", _write(tmp_path / "early", ds, lambda m, s: _shift(m, -2)), data_tiny,
                     metrics="mtm,lip-lag", progress=False)
    assert early["metrics"]["LipLag"]["value"] == pytest.approx(-2 * ms, abs=1e-9)
    assert early["metrics"]["MTM"]["value"] == pytest.approx(2 * ms, abs=0.5 * ms)


def test_silence_opening_ratio_of_a_mouth_held_open(data_tiny: Path, tmp_path: Path) -> None:
    """Every frame of the prediction x3 (the ground truth scaled about the origin): every mouth opening is x3,
    so the ratio is 3 whatever frames are silent; GT itself gives 1. A stand-in without silence gives null."""
    ds = a2fbench.open_dataset(data_tiny, "D1")
    doc = evaluate("D1", _write(tmp_path / "x3", ds, lambda m, s: m.astype(np.float64) * 3), data_tiny,
                   metrics="silence-opening", progress=False)
    e = doc["metrics"]["SilenceOpening"]
    if e["silence_frames"] == 0:
        assert e["value"] is None and "no silent span" in e["reason"]
    else:
        assert e["value"] == pytest.approx(3.0, rel=1e-6)  # float32 coordinates, float64 sums
        rows = [r for r in doc["per_sequence"] if r["silence_frames"]]
        assert sum(r["silence_open_pred"] * r["silence_frames"] for r in rows) / sum(
            r["silence_open_gt"] * r["silence_frames"] for r in rows) == pytest.approx(e["value"], rel=1e-12)
    assert e["constants"]["threshold_db"] == -40.0 and e["constants"]["min_span_frames"] == 6


def test_silence_opening_on_a_synthetic_silent_second() -> None:
    """A mouth held open 2x through a silent second gives exactly 2 over that second."""
    sr, T = 16000, 90
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)
    a = np.concatenate([tone, np.zeros(sr), tone])[: T * sr // 30]
    s = S.silent_frames(S.frame_levels(a, sr, FPS, T), FPS)
    assert s.sum() == 30 - 4
    o_gt = 1.0 + 0.1 * np.sin(np.arange(T))
    o_pr = np.where(s, 2 * o_gt, o_gt)
    assert o_pr[s].sum() / o_gt[s].sum() == 2.0


def test_diversity_of_samples(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    for name, offsets, want in (("equal", (0.0, 0.0, 0.0), 0.0), ("spread", (0.0, 1e-3, 3e-3), 2e-3)):
        d = tmp_path / name
        d.mkdir()
        for sid in ds.split("train"):
            g = np.asarray(ds[sid].motion, np.float64).reshape(ds[sid].n_frames, -1, 3)
            for k, c in enumerate(offsets, 1):
                p = g.copy()
                p[..., 0] += c
                np.save(d / f"{sid}_condition_{ds[sid].subject}_{k}.npy", p.reshape(len(g), -1).astype(np.float32))
        doc = evaluate("D1", d, data_tiny, split="train", metrics="lve,diversity", progress=False)
        # float32 coordinates of ~0.1 m offset by mm: each difference rounds to 2^-27 relative of 0.1
        assert doc["metrics"]["Diversity"]["value"] == pytest.approx(want, abs=1e-8)
        assert doc["samples"]["n"] == 3 and doc["metrics"]["Diversity"]["unit"] == "m"


def test_arkit_heads_have_no_mouth_pair(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D3")
    doc = evaluate("D3", _write(tmp_path / "p", ds, lambda m, s: m), data_tiny, metrics="lve,mtm,silence-opening",
                   progress=False)
    for name in ("MTM", "SilenceOpening"):
        assert doc["metrics"][name]["value"] is None and "no mouth pair for D3" in doc["metrics"][name]["reason"]
    assert doc["metrics"]["LVE"]["value"] == 0.0


def test_cli_bad_input_one_line_no_file(data_tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = _write(tmp_path / "p", ds, lambda m, s: m)
    out = tmp_path / "r.json"
    for extra, msg in ((("--metrics", "lve,mtmm"), "(did you mean 'mtm'?)"), (("--metrics", ""), "comma list"),
                       (("--metrics", "mtm", "--mouth-pair", "3531,99999"), "expected lower vertex index in [0, 5023)"),
                       (("--metrics", "mtm", "--mouth-pair", "3531"), "UPPER,LOWER")):
        code, so, err = run_a2fbench(monkeypatch, capsys, "evaluate", str(pred), "--dataset", "D1", "--data",
                                     str(data_tiny), "--out", str(out), *extra)
        assert code in (1, 2) and msg in err and "Traceback" not in err and not out.exists(), (extra, err)
    code, so, err = run_a2fbench(monkeypatch, capsys, "evaluate", str(pred), "--dataset", "D1", "--data",
                                 str(data_tiny), "--out", str(out), "--metrics", "mtm,lip-lag", "--bootstrap", "100")
    assert code == 0 and "MTM" in so and json.loads(out.read_text())["metrics"]["MTM"]["value"] == 0.0


# ------------------------------------------------------------------------------------------ torchmetrics


def test_lve_equals_torchmetrics_lip_vertex_error() -> None:
    """Our LVE (per sequence and pooled, float64) equals torchmetrics' functional LipVertexError, and its class's
    pooled aggregation over updates equals our codetalker (pooled over frames) aggregation."""
    tmm = pytest.importorskip("torchmetrics.functional.multimodal", reason="torchmetrics absent (the test extra has it)")
    torch = pytest.importorskip("torch")
    from torchmetrics.multimodal import LipVertexError

    rng = np.random.default_rng(1)
    V, lips = 60, sorted(rng.choice(60, 12, replace=False).tolist())
    gts = [rng.standard_normal((T, V, 3)) for T in (7, 13, 20)]
    preds = [g + 0.1 * rng.standard_normal(g.shape) for g in gts]
    tms = [np.zeros((V, 3))] * 3
    ours = score_arrays(gts, preds, tms, np.array(lips), np.arange(V), "codetalker")
    cls = LipVertexError(mouth_map=lips)
    for g, p, row in zip(gts, preds, ours["per_sequence"]):
        want = float(tmm.lip_vertex_error(torch.from_numpy(p), torch.from_numpy(g), lips))
        # same formula, same float64 terms; the frame means may sum in another order: a few ulps
        assert row["LVE"] == pytest.approx(want, rel=1e-13)
        cls.update(torch.from_numpy(p), torch.from_numpy(g))
    assert ours["metrics"]["LVE"] == pytest.approx(float(cls.compute()), rel=1e-13)
    mean_of_means = np.mean([r["LVE"] for r in ours["per_sequence"]])
    assert not math.isclose(float(cls.compute()), mean_of_means, rel_tol=1e-6)  # pooled, not a mean of means


def test_fdd_equals_torchmetrics_when_it_ships() -> None:
    tmm = pytest.importorskip("torchmetrics.functional.multimodal", reason="torchmetrics absent (the test extra has it)")
    fn = getattr(tmm, "upper_face_dynamics_deviation", None)
    if fn is None or "template" not in inspect.signature(fn).parameters:
        pytest.skip("torchmetrics has no upper_face_dynamics_deviation(template=...) in this release "
                    "(Lightning-AI/torchmetrics#3238 is unmerged)")
    import torch

    rng = np.random.default_rng(2)
    V, upper = 40, list(range(10, 30))
    g, tm = rng.standard_normal((15, V, 3)), rng.standard_normal((V, 3))
    p = g + 0.2 * rng.standard_normal(g.shape)
    ours = score_arrays([g], [p], [tm], np.arange(5), np.array(upper), "codetalker")
    want = float(fn(torch.from_numpy(p)[None], torch.from_numpy(g)[None], torch.from_numpy(tm), upper).reshape(-1)[0])
    assert ours["per_sequence"][0]["FDD"] == pytest.approx(want, rel=1e-9)


# ------------------------------------------------------------------------------------------ leaderboard


def test_leaderboard_shows_axes_by_version_and_never_mixes_them(tmp_path: Path) -> None:
    from leaderboard import axes as lb_axes
    from leaderboard import db, render
    from leaderboard.model import method_meta
    from leaderboard.synthetic import make_results

    def with_mtm(seed: int, version: int, value: float) -> dict:
        doc = make_results(seed=seed)
        doc["metrics"]["MTM"] = {"value": value, "unit": "ms", "ci95": None, "aggregation": "mean_sequences_defined",
                                 "version": version}
        doc["metrics"]["SLCC"] = {"value": None, "unit": "1", "reason": "fewer than 3 usable clips", "version": 1}
        return finalize(doc)

    conn = db.connect(tmp_path / "lb.sqlite")
    try:
        db.submit_doc(conn, with_mtm(1, 1, 40.0), method_meta(method="A"))
        db.submit_doc(conn, with_mtm(2, 2, 55.0), method_meta(method="B"))
        db.submit_doc(conn, make_results(seed=3), method_meta(method="C"))  # no axes
        assert db.check_consistency(conn) == []
        ents = db.fetch_entries(conn, kind="evaluated")
        by = {e["method"]: e for e in ents}
        assert by["A"]["metrics"]["MTM v1"]["value"] == 40.0 and "MTM v2" not in by["A"]["metrics"]
        assert by["B"]["metrics"]["MTM v2"]["value"] == 55.0 and "MTM" not in by["B"]["metrics"]
        assert lb_axes.columns(ents) == ["MTM v1", "MTM v2", "SLCC v1"]
        entries, overall = render.load_ranked(conn)
        text = render.terminal_table(entries, overall)
        header = next(line for line in text.splitlines() if line.startswith("id"))
        assert "MTM v1" in header and "MTM v2" in header and "MTM v1 ms" in text
        row_a = next(line for line in text.splitlines() if " A " in f" {line} " and "40" in line)
        assert "55" not in row_a
        page = render.page_data(entries, overall, mode="export")
        assert page["metrics"][-3:] == ["MTM v1", "MTM v2", "SLCC v1"] and page["display"]["D1"]["MTM v1"] == "ms"
    finally:
        conn.close()


def test_report_plots_mouth_opening_with_lag(data_tiny: Path, tmp_path: Path) -> None:
    from a2fbench.outputs.report import write_report
    from a2fbench.util.fsutil import write_json

    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = _write(tmp_path / "late", ds, lambda m, s: _shift(m, 3))
    doc = evaluate("D1", pred, data_tiny, metrics="lve,mtm,lip-lag,silence-opening", n_bootstrap=100, progress=False)
    write_json(tmp_path / "r.json", doc)
    page = write_report(tmp_path / "r.json", tmp_path / "r.html", pred=pred, data=data_tiny, progress=False)
    text = page.read_text()
    assert "Mouth opening over time" in text and "3531 (upper lip)" in text and "Lip lag &gt; 0" in text
    bare = write_report(tmp_path / "r.json", tmp_path / "bare.html").read_text()
    assert "Mouth opening over time" not in bare and "MTM" in bare
