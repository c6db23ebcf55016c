"""`evaluate` end to end on the tiny stand-ins: closed forms, reference parity, streaming, bad input, CLI."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import a2fbench
from a2fbench.errors import PredictionError
from a2fbench.scoring.evaluate import evaluate
from a2fbench.scoring.metrics import reference as R
from a2fbench.scoring.predictions import write_prediction
from a2fbench.scoring.results import load, validate


def _write(pred: Path, ds, split: str = "test", fn=None, *, cond: str | None = "", dtype=None) -> list[str]:
    """One prediction per sequence: fn(motion, seq_id, rng) (default: the ground truth)."""
    pred.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = ds.split(split)
    for sid in ids:
        m = np.asarray(ds[sid].motion)
        p = m if fn is None else fn(m, sid, rng)
        name = f"{sid}.npy" if cond == "" else f"{sid}_condition_{cond or ds[sid].subject}.npy"
        np.save(pred / name, p if dtype is None else p.astype(dtype))
    return ids


def _noisy(scale: float, extra: int = 0):
    def fn(m, sid, rng):
        p = np.concatenate([m, m[-1:].repeat(extra, 0)]) if extra else m
        return (p + rng.standard_normal(p.shape) * scale).astype(np.float32)
    return fn


def _strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("created", "content_hash", "signature")}  # the signature covers `created`


def test_closed_forms_vocaset(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    _write(tmp_path / "zero", ds)
    doc = evaluate("D1", tmp_path / "zero", data_tiny, progress=False)
    assert all(doc["metrics"][m]["value"] == 0.0 for m in ("LVE", "MVE", "UFVE", "FDD", "FDD_abs"))
    c = np.array([0.001, 0.002, -0.002])
    _write(tmp_path / "off", ds, fn=lambda m, s, r: (m.astype(np.float64).reshape(len(m), -1, 3) + c).reshape(len(m), -1))
    doc = evaluate("D1", tmp_path / "off", data_tiny, progress=False)
    want = float((c ** 2).sum())
    # the float32 ground truth rounds its own coordinates; the offset is exact in float64
    assert doc["metrics"]["LVE"]["value"] == pytest.approx(want, rel=1e-6)
    assert doc["metrics"]["MVE"]["value"] == pytest.approx(want ** 0.5, rel=1e-6)
    assert doc["metrics"]["UFVE"]["value"] == pytest.approx(want ** 0.5, rel=1e-6)
    validate(doc)
    assert doc["dataset"]["synthetic"] is True and doc["dataset"]["regions"]["set"] == "facediffuser"
    assert doc["protocol"]["bootstrap"]["seed"] == 0 and doc["protocol"]["bootstrap"]["n"] == 10000


@pytest.mark.parametrize("dataset", ["D0", "D1"])
def test_codetalker_bitwise_against_reference(data_tiny: Path, tmp_path: Path, dataset: str) -> None:
    """The streamed evaluation (one frame per chunk, and the default chunks) equals the reference script's
    arithmetic on the whole-split arrays, to the bit."""
    ds = a2fbench.open_dataset(data_tiny, dataset)
    scale = 1e-3 if dataset == "D0" else 3e-4
    # BIWI Test-A subjects are training subjects: their own condition; VOCASET test subjects are unseen, and
    # one condition per sequence is a plain file (a condition must name a training subject)
    seen = dataset == "D0"
    ids = _write(tmp_path / "p", ds, fn=_noisy(scale, extra=2), cond=None if seen else "")
    regs = ds.regions
    V = ds.card["n_vertices"]
    gts = [np.asarray(ds[s].motion) for s in ids]
    preds = [np.load(tmp_path / "p" / (f"{s}_condition_{ds[s].subject}.npy" if seen else f"{s}.npy")) for s in ids]
    tms = [np.asarray(ds.template(ds[s].subject)) for s in ids]
    ref = R.codetalker(gts, preds, tms, regs["lips"], regs["upper"], V)
    one = evaluate(dataset, tmp_path / "p", data_tiny, protocol="codetalker", chunk_mb=1e-6, workers=1,
                   progress=False)
    big = evaluate(dataset, tmp_path / "p", data_tiny, protocol="codetalker", workers=2, progress=False)
    assert _strip(one) == _strip(big)  # chunking and worker processes change nothing, to the bit
    assert one["metrics"]["LVE"]["value"] == float(ref["LVE"])
    assert one["metrics"]["FDD"]["value"] == float(ref["FDD"])
    assert set(one["metrics"]) == {"LVE", "FDD"}
    assert one["protocol"]["compute_dtype"] == ("float64" if dataset == "D0" else "float32")
    validate(one)


def test_facediffuser_truncates_both_and_others_refuse_short(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    ids = _write(tmp_path / "p", ds, fn=lambda m, s, r: (m[:-3] + 1e-3).astype(np.float32))
    regs = ds.regions
    gts = [np.asarray(ds[s].motion) for s in ids]
    preds = [np.load(tmp_path / "p" / f"{s}.npy") for s in ids]
    tms = [np.asarray(ds.template(ds[s].subject)) for s in ids]
    ref = R.facediffuser(gts, preds, tms, regs["lips"], regs["upper"], 23370)
    doc = evaluate("D0", tmp_path / "p", data_tiny, protocol="facediffuser", progress=False)
    assert doc["metrics"]["LVE"]["value"] == float(ref["LVE"])
    assert doc["metrics"]["FDD"]["value"] == float(ref["FDD"])
    assert doc["metrics"]["MVE"]["value"] == pytest.approx(float(ref["MVE"]), rel=1e-9)
    assert doc["dataset"]["n_frames"] == sum(len(g) - 3 for g in gts)
    for proto in ("a2f", "codetalker"):
        with pytest.raises(PredictionError, match=r"expected at least \d+ frames"):
            evaluate("D0", tmp_path / "p", data_tiny, protocol=proto, progress=False)


def test_a2f_matches_literal_reference(data_tiny: Path, tmp_path: Path) -> None:
    """a2f per-sequence scores vs the literal oracle (D3: 1220 vertices through the blendshape basis)."""
    ds = a2fbench.open_dataset(data_tiny, "D3")
    ids = _write(tmp_path / "p", ds, fn=lambda m, s, r: m + r.standard_normal(m.shape).astype(np.float32) * 0.05)
    from a2fbench.spaces import converter

    conv = converter(ds.card["space"], ds.space_arrays())
    doc = evaluate("D3", tmp_path / "p", data_tiny, progress=False)
    validate(doc)
    regs = ds.regions
    for s, row in zip(ids, doc["per_sequence"]):
        g = conv.to_vertices(np.asarray(ds[s].motion))
        p = conv.to_vertices(np.load(tmp_path / "p" / f"{s}.npy"))
        tm = conv.to_vertices(np.asarray(ds.template(ds[s].subject))[None])[0]
        ref = R.a2f([g], [p], [tm], regs["lips"], regs["upper"], conv.n_vertices)
        assert row["id"] == s and row["frames"] == ds[s].n_frames
        for m in ("LVE", "MVE", "UFVE"):
            assert row[m] == pytest.approx(ref[m], rel=1e-9), m
        assert row["FDD"] == pytest.approx(ref["FDD"], rel=1e-6, abs=1e-12)


def test_parameter_and_vertex_predictions_agree(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D5")
    from a2fbench.spaces import converter

    conv = converter(ds.card["space"], ds.space_arrays())
    fn = lambda m, s, r: (m + r.standard_normal(m.shape) * 0.01).astype(np.float64)  # noqa: E731
    _write(tmp_path / "par", ds, fn=fn)
    for f in sorted((tmp_path / "par").iterdir()):
        write_prediction(tmp_path / "ver", f.stem, conv.to_vertices(np.load(f)))
    a = evaluate("D5", tmp_path / "par", data_tiny, progress=False)
    b = evaluate("D5", tmp_path / "ver", data_tiny, progress=False)
    assert a["predictions"]["kind"] == ["parameters"] and b["predictions"]["kind"] == ["vertices"]
    for m in a["metrics"]:
        assert a["metrics"][m]["value"] == b["metrics"][m]["value"], m
    assert a["metrics"]["LVE"]["value"] > 0


def test_test_b_conditions_are_averaged(data_tiny: Path, tmp_path: Path) -> None:
    """Unseen subjects: the mean over every training-subject condition (CodeTalker writes all of them)."""
    ds = a2fbench.open_dataset(data_tiny, "D0")
    ids = ds.split("test_b")
    train = list(dict.fromkeys(ds[s].subject for s in ds.split("train")))
    assert train == ["F2", "F3", "F4", "M3", "M4", "M5"]
    for k, cond in enumerate(train):
        _write(tmp_path / "all", ds, "test_b", fn=_noisy(1e-3 * (k + 1)), cond=cond)
        _write(tmp_path / cond, ds, "test_b", fn=_noisy(1e-3 * (k + 1)))
    both = evaluate("D0", tmp_path / "all", data_tiny, split="test_b", progress=False)
    one = [evaluate("D0", tmp_path / c, data_tiny, split="test_b", progress=False) for c in train]
    for i, sid in enumerate(ids):
        row = both["per_sequence"][i]
        assert row["id"] == sid and row["conditions"] == train
        for m in ("LVE", "MVE", "UFVE", "FDD"):
            # the mean of 6 per-sequence means, each over the same frames: float64 rounding of 6-term sums
            assert row[m] == pytest.approx(sum(o["per_sequence"][i][m] for o in one) / 6, rel=1e-12), m
    # one training-subject condition missing: refused, naming it
    (tmp_path / "all" / f"{ids[0]}_condition_M5.npy").unlink()
    with pytest.raises(PredictionError, match=f"unseen subject .* found 5; missing {ids[0]}_condition_M5.npy"):
        evaluate("D0", tmp_path / "all", data_tiny, split="test_b", progress=False)
    # Test-A: the own subject's condition counts; other training-subject conditions are extra files
    _write(tmp_path / "a", ds, cond="M5", fn=_noisy(1.0))
    _write(tmp_path / "a", ds, cond=None)  # own conditions (M5's own replaces its noisy one)
    with pytest.raises(PredictionError, match="do not belong"):
        evaluate("D0", tmp_path / "a", data_tiny, progress=False)
    own = evaluate("D0", tmp_path / "a", data_tiny, ignore_extra=True, progress=False)
    assert own["metrics"]["LVE"]["value"] == 0.0


def test_fingerprint_is_sha256_of_the_files(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    _write(tmp_path / "p", ds, fn=_noisy(1e-4, extra=3))
    doc = evaluate("D1", tmp_path / "p", data_tiny, progress=False)
    lines = "".join(f"{f.name}  {hashlib.sha256(f.read_bytes()).hexdigest()}\n"
                    for f in sorted((tmp_path / "p").iterdir()))
    assert doc["predictions"]["fingerprint"] == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert doc["predictions"]["n_files"] == 2
    assert doc["dataset"]["fingerprint"] == ds.card["fingerprint"]


def test_regions_option(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    _write(tmp_path / "p", ds, fn=_noisy(1e-3))
    a = evaluate("D1", tmp_path / "p", data_tiny, progress=False)
    b = evaluate("D1", tmp_path / "p", data_tiny, regions="flame", progress=False)
    assert b["dataset"]["regions"]["set"] == "flame"
    assert b["dataset"]["regions"]["n_upper"] == len(ds.regions_for("flame")["upper"])
    assert a["metrics"]["MVE"]["value"] == b["metrics"]["MVE"]["value"]  # all vertices: region-free
    assert a["metrics"]["UFVE"]["value"] != b["metrics"]["UFVE"]["value"]
    with pytest.raises(a2fbench.A2FBenchError, match="no region set"):
        evaluate("D1", tmp_path / "p", data_tiny, regions="nope", progress=False)


def test_write_prediction(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    p = write_prediction(tmp_path / "pred", "F2_e37", x)
    assert p.name == "F2_e37.npy" and np.array_equal(np.load(p), x)
    assert write_prediction(tmp_path / "pred", "F2_e37", x, condition="F2").name == "F2_e37_condition_F2.npy"
    assert sorted(f.name for f in (tmp_path / "pred").iterdir()) == ["F2_e37.npy", "F2_e37_condition_F2.npy"]
    for bad in (np.full((2, 6), np.nan), np.zeros((0, 6)), np.zeros((2, 6), np.int32)):
        with pytest.raises(PredictionError):
            write_prediction(tmp_path / "pred", "x", bad)
    with pytest.raises(PredictionError):
        write_prediction(tmp_path / "pred", "../escape", x)


# ---------------------------------------------------------------------------------------- bad input
def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from a2fbench.cli import main

    monkeypatch.setattr(sys, "argv", ["a2fbench", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def _bad_cases():
    def missing(d, ids):
        (d / f"{ids[0]}.npy").unlink()
        return f"missing predictions for 1 of 2 .*{ids[0]}"

    def extra(d, ids):
        np.save(d / "other_seq.npy", np.zeros((3, 15069), np.float32))
        return "1 files do not belong .*other_seq.npy.*--ignore-extra"

    def nan(d, ids):
        a = np.load(d / f"{ids[1]}.npy")
        a[2, 5] = np.nan
        np.save(d / f"{ids[1]}.npy", a)
        return f"{ids[1]}.npy: expected finite values, found NaN or inf at frame 2"

    def inf(d, ids):
        a = np.load(d / f"{ids[0]}.npy")
        a[-1, 0] = np.inf
        np.save(d / f"{ids[0]}.npy", a)
        return "NaN or inf"

    def wrong_v(d, ids):
        np.save(d / f"{ids[0]}.npy", np.zeros((40, 100, 3), np.float32))
        return r"expected shape \(T, 15069\) or \(T, 5023, 3\), found \(40, 100, 3\) \(100 vertices, expected V=5023\)"

    def empty(d, ids):
        for f in d.iterdir():
            f.unlink()
        return "found an empty folder"

    def non_npy(d, ids):
        (d / "notes.txt").write_text("hi")
        return r"expected only \.npy files, found 1 other entries \(notes\.txt\)"

    def obj(d, ids):
        np.save(d / f"{ids[0]}.npy", np.array([None, {"a": 1}], dtype=object), allow_pickle=True)
        return "object array"

    def short(d, ids):
        np.save(d / f"{ids[0]}.npy", np.zeros((3, 15069), np.float32))
        return "expected at least .* frames"

    def ambiguous(d, ids):
        np.save(d / f"{ids[0]}_condition_FaceTalk_170728_03272_TA.npy", np.zeros((90, 15069), np.float32))
        return "both .* one kind per sequence"

    def ints(d, ids):
        np.save(d / f"{ids[0]}.npy", np.zeros((90, 15069), np.int16))
        return "expected a float array, found dtype int16"

    def truncated(d, ids):
        f = d / f"{ids[0]}.npy"
        f.write_bytes(f.read_bytes()[:-100])
        return "truncated file"

    def not_a_dir(d, ids):
        return None

    return [missing, extra, nan, inf, wrong_v, empty, non_npy, obj, short, ambiguous, ints, truncated, not_a_dir]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_predictions_one_line_exit_1_nothing_written(data_tiny: Path, tmp_path: Path, monkeypatch, capsys,
                                                         case) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = tmp_path / "pred"
    ids = _write(pred, ds, fn=_noisy(1e-4))
    pattern = case(pred, ids)
    if pattern is None:
        pred = tmp_path / "absent"
        pattern = "expected a predictions folder at .*absent, found nothing"
    out = tmp_path / "r.json"
    code, stdout, err = _cli(monkeypatch, capsys, "evaluate", str(pred), "--dataset", "D1", "--data", str(data_tiny),
                             "--out", str(out))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, err
    assert lines[-1].startswith("error: ") and "Traceback" not in err
    import re

    assert re.search(pattern, lines[-1]), lines[-1]
    assert not out.exists() and not (tmp_path / "pred.results.json").exists()
    assert not [p for p in tmp_path.iterdir() if "incomplete" in p.name]


def test_cli_evaluate_default_out_and_table(data_tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    _write(tmp_path / "pred", ds, fn=_noisy(1e-3))
    code, out, err = _cli(monkeypatch, capsys, "evaluate", str(tmp_path / "pred"), "--dataset", "vocaset",
                          "--data", str(data_tiny))
    assert code == 0, err
    doc = load(tmp_path / "pred.results.json")
    lve = doc["metrics"]["LVE"]["value"]
    row = next(ln for ln in out.splitlines() if ln.startswith("LVE"))
    assert f"{lve / 1e-5:.4f}" in row and "x1e-05 m^2" in row  # display units of the VOCASET card
    code, out, err = _cli(monkeypatch, capsys, "evaluate", str(tmp_path / "pred"), "--dataset", "D1",
                          "--data", str(data_tiny), "--protocol", "codetalker", "--json")
    assert code == 0 and json.loads(out)["protocol"]["name"] == "codetalker"
    assert (tmp_path / "pred.codetalker.results.json").exists()
    # the file that was written validates (schema, hash, aggregates from per-sequence scores)
    load(tmp_path / "pred.codetalker.results.json")


def test_workers_split_work_and_errors_surface(data_tiny: Path, tmp_path: Path) -> None:
    from a2fbench.scoring.accumulate import Item as _Item
    from a2fbench.scoring.parallel import split_blocks as _blocks

    plan = [(_Item(f"s{i}", T, [None], [T]), [None]) for i, T in enumerate([10, 10, 10, 70])]
    assert [[it.sid for it, _ in b] for b in _blocks(plan, 2)] == [["s0", "s1", "s2"], ["s3"]]
    assert sum(len(b) for b in _blocks(plan[:1], 2)) == 1
    ds = a2fbench.open_dataset(data_tiny, "D0")
    ids = _write(tmp_path / "p", ds, fn=_noisy(1e-3))
    a = evaluate("D0", tmp_path / "p", data_tiny, workers=1, progress=False)
    b = evaluate("D0", tmp_path / "p", data_tiny, workers=3, progress=True)
    assert _strip(a) == _strip(b)
    bad = np.load(tmp_path / "p" / f"{ids[-1]}.npy")
    bad[1, 1] = np.nan
    np.save(tmp_path / "p" / f"{ids[-1]}.npy", bad)
    with pytest.raises(PredictionError, match=f"{ids[-1]}.npy: expected finite values, found NaN or inf at frame 1"):
        evaluate("D0", tmp_path / "p", data_tiny, workers=2, progress=False)
