"""Scoring third-party outputs as their own scripts do: length policies, conditions, FaceDiffuser samples and
model prefixes, UniTalker's in-loop protocol, FaceDiffuser's Multiface coordinates, raw template dtypes.
Every expected value is a closed form or the slow reference formulation (a2fbench.scoring.metrics.reference)."""

from __future__ import annotations

import pickle
import re
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _raw_helpers import clone

import a2fbench
from a2fbench.errors import A2FBenchError, PredictionError
from a2fbench.prepare import prepare_dataset
from a2fbench.registry import get_spec
from a2fbench.scoring.evaluate import evaluate
from a2fbench.scoring.metrics import functional as F
from a2fbench.scoring.metrics import reference as R
from a2fbench.scoring.options import cap_frames
from a2fbench.scoring.protocols import PROTOCOLS
from a2fbench.scoring.results import validate
from a2fbench.store import Sequence
from a2fbench.util import safepickle

SPEC = Path("/work/shared/spec/multiface-sentences.md")


def _save(d: Path, name: str, a: np.ndarray) -> None:
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / name, a)


def _gt(ds, split: str = "test") -> dict[str, np.ndarray]:
    return {sid: np.asarray(ds[sid].motion) for sid in ds.split(split)}


def _noise(m: np.ndarray, scale: float, seed: int) -> np.ndarray:
    return (m + np.random.default_rng(seed).standard_normal(m.shape) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------ length policy
def test_length_policy_is_chosen_recorded_and_matches_the_reference(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    gt = _gt(ds)
    pred = {sid: _noise(g[:-1], 1e-3, i) for i, (sid, g) in enumerate(gt.items())}  # one frame short
    for sid, p in pred.items():
        _save(tmp_path / "p", f"{sid}_condition_{ds[sid].subject}.npy", p)
    with pytest.raises(PredictionError, match="expected at least"):
        evaluate("D0", tmp_path / "p", data_tiny, protocol="codetalker", progress=False)
    doc = evaluate("D0", tmp_path / "p", data_tiny, protocol="codetalker", length_policy="truncate_both",
                   progress=False)
    ids, regs = list(gt), ds.regions
    tms = [np.asarray(ds.template(ds[s].subject)) for s in ids]
    ref = R.facediffuser([gt[s] for s in ids], [pred[s] for s in ids], tms, regs["lips"], regs["upper"], 23370)
    assert doc["protocol"]["length_policy"] == "truncate_both"
    assert doc["metrics"]["LVE"]["value"] == float(ref["LVE"]) and doc["metrics"]["FDD"]["value"] == float(ref["FDD"])
    assert [r["frames"] for r in doc["per_sequence"]] == [len(g) - 1 for g in gt.values()]
    validate(doc)
    # each protocol keeps its reference default
    defaults = {p: evaluate("D0", tmp_path / "p", data_tiny, protocol=p, length_policy="truncate_both",
                            progress=False)["protocol"]["length_policy"] for p in ("a2f", "facediffuser")}
    assert defaults == {"a2f": "truncate_both", "facediffuser": "truncate_both"}
    assert {p: PROTOCOLS[p].length_policy for p in PROTOCOLS} == {
        "a2f": "truncate_pred_only", "codetalker": "truncate_pred_only", "facediffuser": "truncate_both",
        "facediffuser_multiface": "truncate_both", "unitalker": "truncate_both"}
    # a policy the protocol cannot honour
    with pytest.raises(A2FBenchError, match="protocol unitalker: expected length policy truncate_both"):
        evaluate("D0", tmp_path / "p", data_tiny, protocol="unitalker", length_policy="truncate_pred_only",
                 progress=False)


# ------------------------------------------------------------------------------------------ conditions
def test_conditions_must_be_training_subjects_and_seen_subjects_their_own(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    gt = _gt(ds)
    first = next(iter(gt))
    for sid, g in gt.items():
        _save(tmp_path / "banana", f"{sid}_condition_{'banana' if sid == first else ds[sid].subject}.npy", g)
        _save(tmp_path / "other", f"{sid}_condition_{'M3' if sid == 'F2_e37' else ds[sid].subject}.npy", g)
    with pytest.raises(PredictionError, match=r"expected a condition that is a training subject \(F2, F3, F4, M3, "
                                              r"M4, M5\).* found 'banana'"):
        evaluate("D0", tmp_path / "banana", data_tiny, progress=False)
    with pytest.raises(PredictionError, match=r"expected F2_e37_condition_F2.npy \(F2_e37 is of training subject F2"):
        evaluate("D0", tmp_path / "other", data_tiny, protocol="codetalker", progress=False)


# ------------------------------------------------------------------------------------------ samples, prefix
def test_facediffuser_samples_are_runs_and_the_headline_is_their_mean(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    gt = _gt(ds)
    runs = []
    for k in (1, 2, 3):
        for i, (sid, g) in enumerate(gt.items()):
            p = _noise(g, 1e-3 * k, 10 * k + i)
            _save(tmp_path / "all", f"{sid}_condition_{ds[sid].subject}_{k}.npy", p)
            _save(tmp_path / f"run{k}", f"{sid}_condition_{ds[sid].subject}.npy", p)
        runs.append(evaluate("D0", tmp_path / f"run{k}", data_tiny, protocol="facediffuser", progress=False))
    doc = evaluate("D0", tmp_path / "all", data_tiny, protocol="facediffuser", progress=False)
    validate(doc)
    s = doc["samples"]
    assert s["n"] == 3 and s["indices"] == [1, 2, 3] and doc["predictions"]["n_files"] == 3 * len(gt)
    for m in ("LVE", "MVE", "FDD", "FDD_abs"):
        one = [r["metrics"][m]["value"] for r in runs]
        assert s["metrics"][m]["values"] == one, m  # each sample scored exactly as a run of its own
        assert doc["metrics"][m]["value"] == sum(one) / 3, m  # the headline: the mean over samples
        assert s["metrics"][m]["std"] == statistics.stdev(one) and s["metrics"][m]["max"] == max(one)
    assert s["metrics"]["LVE"]["std"] > 0  # three noise levels: the samples differ
    for i, row in enumerate(doc["per_sequence"]):
        assert row["per_sample"]["LVE"] == [r["per_sequence"][i]["LVE"] for r in runs]
    # FaceDiffuser's --model prefix: the same files behind "<model>_" score the same
    for f in (tmp_path / "run1").iterdir():
        _save(tmp_path / "pre", f"face_diffuser_{f.name}", np.load(f))
    pre = evaluate("D0", tmp_path / "pre", data_tiny, protocol="facediffuser", prefix="face_diffuser", progress=False)
    assert pre["metrics"] == runs[0]["metrics"] and pre["predictions"]["prefix"] == "face_diffuser"
    with pytest.raises(PredictionError, match="missing predictions for 6 of 6"):
        evaluate("D0", tmp_path / "pre", data_tiny, protocol="facediffuser", progress=False)
    # samples mixed with plain files; incomplete runs
    sid = next(iter(gt))
    _save(tmp_path / "all", f"{sid}_condition_{ds[sid].subject}.npy", gt[sid])
    with pytest.raises(PredictionError, match=f"expected either samples .* or one file per condition for {sid}"):
        evaluate("D0", tmp_path / "all", data_tiny, protocol="facediffuser", progress=False)
    (tmp_path / "all" / f"{sid}_condition_{ds[sid].subject}.npy").unlink()
    (tmp_path / "all" / f"{sid}_condition_{ds[sid].subject}_3.npy").unlink()
    with pytest.raises(PredictionError, match="expected the same samples for every sequence"):
        evaluate("D0", tmp_path / "all", data_tiny, protocol="facediffuser", progress=False)


# ------------------------------------------------------------------------------------------ unitalker
def test_unitalker_protocol_closed_form_and_reference(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    gt = _gt(ds)
    c = np.array([0.003, -0.004, 0.0])  # |c| = 0.005 on every vertex
    for sid, g in gt.items():
        _save(tmp_path / "off", f"{sid}.npy", (g.reshape(len(g), -1, 3) + c).reshape(len(g), -1))
        _save(tmp_path / "noise", f"{sid}.npy", _noise(g, 1e-3, len(sid)))
    doc = evaluate("D0", tmp_path / "off", data_tiny, protocol="unitalker", progress=False)
    validate(doc)
    # UniTalker's scaled space: BIWI scale 0.2, so LVE = 0.2² |c|², LVD = 0.2 |c| (float64 rounding of |c|²)
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(0.04 * 0.005 ** 2, rel=1e-9)
    assert doc["metrics"]["LVD"]["value"] == pytest.approx(0.2 * 0.005, rel=1e-9)
    assert doc["metrics"]["LVE"]["aggregation"] == "mean_sequences" and doc["protocol"]["scale"] == 0.2
    assert doc["metrics"]["LVE"]["unit"] == "(0.2 codetalker_area_normalised)^2"
    doc = evaluate("D0", tmp_path / "noise", data_tiny, protocol="unitalker", progress=False)
    ids = list(gt)
    ref = R.unitalker([gt[s] for s in ids], [np.load(tmp_path / "noise" / f"{s}.npy") for s in ids],
                      ds.regions_for("unitalker")["lips"], 23370, scale=0.2)  # UniTalker's mouth list (synth's)
    assert doc["dataset"]["regions"]["set"] == "unitalker" and doc["protocol"]["version"] == 2
    # float64: scaling before or after the squared distance differs by a few ulps per term
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(ref["LVE"], rel=1e-12)
    assert doc["metrics"]["LVD"]["value"] == pytest.approx(ref["LVD"], rel=1e-12)
    assert [r["LVE"] for r in doc["per_sequence"]] == pytest.approx(ref["per_sequence_LVE"], rel=1e-12)
    a2f = evaluate("D0", tmp_path / "noise", data_tiny, progress=False)  # ours: pooled, native units
    pooled = sum(r["LVE"] * r["frames"] for r in a2f["per_sequence"]) / sum(r["frames"] for r in a2f["per_sequence"])
    assert a2f["metrics"]["LVE"]["value"] == pytest.approx(pooled, rel=1e-12)
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(0.04 * np.mean([r["LVE"] for r in a2f["per_sequence"]]),
                                                            rel=1e-12)
    # the official mouth index file (--region lips=FILE): recorded by digest
    lips = np.asarray(ds.regions["lips"])[:50]
    np.save(tmp_path / "mouth.npy", lips)
    sub = evaluate("D0", tmp_path / "noise", data_tiny, protocol="unitalker", progress=False,
                   region_files={"lips": tmp_path / "mouth.npy"})
    ref = R.unitalker([gt[s] for s in ids], [np.load(tmp_path / "noise" / f"{s}.npy") for s in ids], lips, 23370, 0.2)
    assert sub["metrics"]["LVE"]["value"] == pytest.approx(ref["LVE"], rel=1e-12)
    reg = sub["dataset"]["regions"]
    assert reg["n_lips"] == 50 and reg["files"]["lips"]["file"] == "mouth.npy" and reg["digest"] != doc["dataset"][
        "regions"]["digest"]
    np.save(tmp_path / "bad.npy", np.array([0, 23370]))
    with pytest.raises(A2FBenchError, match=r"expected vertex indices in \[0, 23370\) for D0 .* found 2 indices in "
                                            r"\[0, 23370\]"):
        evaluate("D0", tmp_path / "noise", data_tiny, protocol="unitalker", progress=False,
                 region_files={"lips": tmp_path / "bad.npy"})


def test_unitalker_cuts_as_dataitem_truncate(raw_tiny: Path, tmp_path: Path) -> None:
    """A recording shorter than its motion: the ground truth is cut to round(audio s * fps); 20 s at most."""
    import soundfile as sf
    from _raw_helpers import rewrite

    def seq(n_frames: int, n_samples: int, fps: float) -> Sequence:  # a stored sequence's lengths alone
        return Sequence("s", "F1", n_frames, SimpleNamespace(card={"fps": fps}), n_samples=n_samples)

    proto = PROTOCOLS["unitalker"]
    assert cap_frames(proto, seq(1000, 16000 * 60, 25.0)) == 500 and cap_frames(proto, seq(90, 16000 * 2, 30.0)) == 60
    assert cap_frames(PROTOCOLS["a2f"], seq(1000, 16000 * 60, 25.0)) is None
    raw = clone(raw_tiny, tmp_path / "raw")
    wav = raw / "D0" / "wav" / "F2_e37.wav"
    x, sr = sf.read(str(wav), dtype="float32")
    rewrite(wav)
    sf.write(str(wav), x[: len(x) - int(0.2 * sr)], sr, subtype="PCM_16")
    prepare_dataset(get_spec("D0"), raw, tmp_path / "data", progress=False)
    ds = a2fbench.open_dataset(tmp_path / "data", "D0")
    for sid, g in _gt(ds).items():
        _save(tmp_path / "p", f"{sid}.npy", g)
    doc = evaluate("D0", tmp_path / "p", tmp_path / "data", protocol="unitalker", progress=False)
    frames = {r["id"]: r["frames"] for r in doc["per_sequence"]}
    s = ds["F2_e37"]
    assert frames["F2_e37"] == round(min(s.audio_seconds, s.motion_seconds) * 25) < s.n_frames
    assert all(frames[i] == ds[i].n_frames for i in frames if i != "F2_e37")
    assert doc["metrics"]["LVE"]["value"] == 0.0


def test_unitalker_protocol_falls_back_loudly_and_leaves_out_clips_under_half_a_second(raw_tiny: Path,
                                                                                       tmp_path: Path) -> None:
    """Without UniTalker's mouth list the protocol scores the dataset's lips as version 3 (said in the results);
    a clip under 0.5 s after the cut is left out and listed, its prediction neither needed nor read; the mean is
    over the other clips' per-sequence values."""
    import shutil

    import soundfile as sf
    from _raw_helpers import rewrite

    raw = clone(raw_tiny, tmp_path / "raw")
    shutil.rmtree(raw / "D0" / "resources")
    wav, npy = raw / "D0" / "wav" / "F2_e37.wav", raw / "D0" / "vertices_npy" / "F2_e37.npy"
    x, sr = sf.read(str(wav), dtype="float32")
    m = np.load(npy)
    for p in (wav, npy):
        rewrite(p)
    sf.write(str(wav), x[: int(0.4 * sr)], sr, subtype="PCM_16")  # 0.4 s of recording and of motion: under 0.5 s
    np.save(npy, m[:10])
    prepare_dataset(get_spec("D0"), raw, tmp_path / "data", progress=False)
    ds = a2fbench.open_dataset(tmp_path / "data", "D0")
    assert "unitalker" not in ds.region_sets and "unitalker" in ds.card["regions_unavailable"]
    gt = _gt(ds)
    for sid, g in gt.items():
        if sid != "F2_e37":
            _save(tmp_path / "p", f"{sid}.npy", _noise(g, 1e-3, len(sid)))
    doc = evaluate("D0", tmp_path / "p", tmp_path / "data", protocol="unitalker", progress=False)
    assert doc["protocol"]["version"] == 3 and "not the paper's" in doc["protocol"]["fallback"]
    assert doc["dataset"]["regions"]["set"] == "codetalker"
    assert [x["id"] for x in doc["protocol"]["skipped"]] == ["F2_e37"]
    assert doc["protocol"]["skipped"][0]["seconds"] == pytest.approx(0.4, abs=1 / sr)
    ids = [s for s in gt if s != "F2_e37"]
    assert [r["id"] for r in doc["per_sequence"]] == ids
    ref = R.unitalker([gt[s] for s in ids], [np.load(tmp_path / "p" / f"{s}.npy") for s in ids],
                      ds.regions["lips"], 23370, scale=0.2)
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(ref["LVE"], rel=1e-12)


def test_unitalker_protocol_on_a_parameter_dataset_scores_vertices(data_tiny: Path, tmp_path: Path) -> None:
    from a2fbench.spaces import converter

    ds = a2fbench.open_dataset(data_tiny, "D3")
    conv = converter(ds.card["space"], ds.space_arrays())
    gt = _gt(ds)
    for sid, g in gt.items():
        _save(tmp_path / "p", f"{sid}.npy", _noise(g, 0.05, len(sid)))
    doc = evaluate("D3", tmp_path / "p", data_tiny, protocol="unitalker", progress=False)
    ids = list(gt)
    ref = R.unitalker([conv.to_vertices(gt[s]) for s in ids],
                      [conv.to_vertices(np.load(tmp_path / "p" / f"{s}.npy")) for s in ids],
                      ds.regions_for("unitalker")["lips"], conv.n_vertices, 1.0)
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(ref["LVE"], rel=1e-12) and ref["LVE"] > 0
    assert doc["metrics"]["LVD"]["value"] == pytest.approx(ref["LVD"], rel=1e-12)


# ------------------------------------------------------------------------------------------ D2, FaceDiffuser
def test_d2_sentence_table_is_facediffusers_and_splits_by_it(data_tiny: Path) -> None:
    spec = get_spec("D2")
    table = spec.naming.sentences
    assert len(table) == 50 and sorted(table.values()) == list(range(1, 51))
    if SPEC.is_file():  # the shared copy of FaceDiffuser's mapping
        rows = re.findall(r"^\| (\d\d) \| (SEN_\S+) \|$", SPEC.read_text(), re.M)
        assert {name: int(n) for n, name in rows} == table
    ds = a2fbench.open_dataset(data_tiny, "D2")
    for split, (lo, hi) in {"train": (1, 40), "val": (41, 45), "test": (46, 50)}.items():
        nums = [spec.sentence_number(s) for s in ds.split(split)]
        assert nums and all(lo <= n <= hi for n in nums), (split, nums)


def test_facediffuser_multiface_normalises_ground_truth_as_facediffuser(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D2")
    fd = ds.spec.facediffuser
    lo, hi = np.array(fd.normalise.min), np.array(fd.normalise.max)
    gt = _gt(ds)
    norm = {sid: (((g.reshape(len(g), -1, 3).astype(np.float64) - lo) / (hi - lo)) * 2 - 1).reshape(len(g), -1)
            for sid, g in gt.items()}
    pred = {sid: _noise(n[:-2], 1e-3, i) for i, (sid, n) in enumerate(norm.items())}  # normalised, shorter
    for sid, p in pred.items():
        _save(tmp_path / "p", f"{sid}.npy", p)
    doc = evaluate("D2", tmp_path / "p", data_tiny, protocol="facediffuser_multiface", progress=False)
    validate(doc)
    regs = ds.regions_for(fd.regions)
    ids = list(gt)
    tms = [F.normalise_coordinates(np.asarray(ds.template(ds[s].subject)).reshape(-1, 3), lo, hi) for s in ids]
    ref = R.facediffuser([norm[s] for s in ids], [pred[s] for s in ids], tms, regs["lips"], regs["upper"], 6172)
    assert doc["metrics"]["LVE"]["value"] == float(ref["LVE"])
    assert doc["metrics"]["FDD"]["value"] == float(ref["FDD"])
    assert doc["metrics"]["MVE"]["value"] == pytest.approx(float(ref["MVE"]), rel=1e-9)  # one np.mean vs streamed
    assert doc["protocol"]["normalise"] == {"min": list(lo), "max": list(hi)}
    assert doc["metrics"]["LVE"]["unit"] == "(facediffuser_normalised)^2"
    with pytest.raises(A2FBenchError, match="protocol facediffuser_multiface: expected a dataset whose manifest"):
        evaluate("D0", tmp_path / "p", data_tiny, protocol="facediffuser_multiface", progress=False)


# ------------------------------------------------------------------------------------------ raw dtypes
def test_float64_template_pickle_with_float32_vertices_stays_bit_exact(raw_tiny: Path, tmp_path: Path) -> None:
    """The store keeps the raw pickle's float64 templates beside float32 motion; codetalker FDD subtracts them
    exactly as the reference does (float32 - float64 in float64), to the bit."""
    raw = clone(raw_tiny, tmp_path / "raw")
    tpl = raw / "D1" / "templates.pkl"
    t32 = safepickle.load(tpl)
    rng = np.random.default_rng(3)
    t64 = {k: np.asarray(v, np.float64) + rng.standard_normal(np.shape(v)) * 1e-9 for k, v in t32.items()}
    tpl.unlink()
    with open(tpl, "wb") as fh:
        pickle.dump(t64, fh, protocol=2)
    prepare_dataset(get_spec("D1"), raw, tmp_path / "data", progress=False)
    ds = a2fbench.open_dataset(tmp_path / "data", "D1")
    gt = _gt(ds)
    for sid, g in gt.items():
        assert g.dtype == np.float32 and ds.template(ds[sid].subject).dtype == np.float64
        assert np.array_equal(ds.template(ds[sid].subject), t64[ds[sid].subject].reshape(-1))
        _save(tmp_path / "p", f"{sid}.npy", _noise(np.concatenate([g, g[-2:]]), 3e-4, len(sid)))
    ids = list(gt)
    regs = ds.regions
    ref = R.codetalker([gt[s] for s in ids], [np.load(tmp_path / "p" / f"{s}.npy") for s in ids],
                       [t64[ds[s].subject] for s in ids], regs["lips"], regs["upper"], 5023)
    doc = evaluate("D1", tmp_path / "p", tmp_path / "data", protocol="codetalker", chunk_mb=1e-6, progress=False)
    assert doc["metrics"]["FDD"]["value"] == float(ref["FDD"]) and doc["metrics"]["LVE"]["value"] == float(ref["LVE"])


# ------------------------------------------------------------------------------------------ command line
def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from a2fbench.cli import main

    monkeypatch.setattr(sys, "argv", ["a2fbench", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0), capsys.readouterr().err


def _bad_cases():
    def unknown_condition(d, ds):
        (d / "F2_e37_condition_F2.npy").rename(d / "F2_e37_condition_nobody.npy")
        return [], r"expected a condition that is a training subject .* found 'nobody'"

    def missing_own(d, ds):
        (d / "F2_e37_condition_F2.npy").rename(d / "F2_e37_condition_M3.npy")
        return [], r"expected F2_e37_condition_F2.npy \(F2_e37 is of training subject F2"

    def sample_mixed(d, ds):
        np.save(d / "F2_e37_condition_F2_1.npy", np.load(d / "F2_e37_condition_F2.npy"))
        return [], "expected either samples .* found both"

    def region_beyond_v(d, ds):
        np.save(d.parent / "lips.npy", np.array([1, 2, 99999]))
        return ["--region", f"lips={d.parent / 'lips.npy'}"], r"expected vertex indices in \[0, 23370\)"

    def policy(d, ds):
        return ["--protocol", "unitalker", "--length-policy", "truncate_pred_only"], \
            "protocol unitalker: expected length policy truncate_both"

    return [unknown_condition, missing_own, sample_mixed, region_beyond_v, policy]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_input_one_line_exit_1_no_results(data_tiny: Path, tmp_path: Path, monkeypatch, capsys, case) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    d = tmp_path / "pred"
    for sid, g in _gt(ds).items():
        _save(d, f"{sid}_condition_{ds[sid].subject}.npy", g)
    extra, pattern = case(d, ds)
    out = tmp_path / "r.json"
    code, err = _cli(monkeypatch, capsys, "evaluate", str(d), "--dataset", "D0", "--data", str(data_tiny), "--out",
                     str(out), *extra)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines
    assert not out.exists() and not list(tmp_path.glob("*.results.json"))


def test_cli_length_policy_prefix_and_unknown_policy(data_tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    for sid, g in _gt(ds).items():
        _save(tmp_path / "pred", f"fd_{sid}_condition_{ds[sid].subject}.npy", g[:-1])
    code, err = _cli(monkeypatch, capsys, "evaluate", str(tmp_path / "pred"), "--dataset", "D0", "--data",
                     str(data_tiny), "--protocol", "codetalker", "--length-policy", "truncate_both", "--prefix", "fd")
    assert code == 0, err
    doc = validate(__import__("json").loads((tmp_path / "pred.codetalker.truncate_both.results.json").read_text()))
    assert doc["protocol"]["length_policy"] == "truncate_both" and doc["metrics"]["LVE"]["value"] == 0.0
    code, err = _cli(monkeypatch, capsys, "evaluate", str(tmp_path / "pred"), "--dataset", "D0", "--data",
                     str(data_tiny), "--length-policy", "truncate_nothing")
    assert code == 2 and "truncate_nothing" in err
