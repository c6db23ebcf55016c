"""`prepare`: all eight datasets at the benchmark fps, exact decimation, time-based resampling, the length
rule, splits, templates, regions, the card, resumability and parallel workers."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from _raw_helpers import clone, rewrite

import a2fbench
from a2fbench.errors import RawDataError, StoreError
from a2fbench.prepare import prepare_dataset, prepare_many
from a2fbench.prepare.motion import av_mismatch, n_frames_out, resample_motion
from a2fbench.registry import all_specs, get_space, get_spec, manifests_dir
from a2fbench.sources.audio import read_audio, resample, to_mono_float
from a2fbench.store import common_length
from a2fbench.util import safepickle
from a2fbench.util.fsutil import sha256_file


# ------------------------------------------------------------------------------------------ all eight
def test_all_eight_prepared_with_fps_splits_templates_regions(data_tiny: Path) -> None:
    for spec in all_specs():
        ds = a2fbench.open_dataset(data_tiny, spec.id)
        card = ds.card
        assert card["fps"] == spec.fps and card["id"] == spec.id and card["dim"] == get_space(spec.space).dim
        derived = spec.splits.derived  # subsets of a parent split (D2's test_facediffuser): they overlap it
        names = set(ds.split_names) - set(derived)
        assert names == ({"train", "val", "test", "test_b"} if spec.id == "D0" else {"train", "val", "test"})
        assert set(ds.split_names) & set(derived) == set(derived)
        for name, d in derived.items():
            assert ds.split(name) and set(ds.split(name)) <= set(ds.split(d.of))
        seen: list[str] = []
        for n in names:
            seen += ds.split(n)
        assert sorted(seen) == sorted(ds.ids)  # every sequence in exactly one (non-derived) split
        st = card["stats"]
        assert st["n_sequences"] == len(ds) == sum(v["n_sequences"] for k, v in st["splits"].items() if k not in derived)
        n_frames = 0
        for sid in ds.ids:
            s = ds[sid]
            m, a = s.motion, s.audio
            assert m.shape == (s.n_frames, get_space(spec.space).dim) and np.isfinite(m).all()
            assert a.dtype == np.float32 and s.sample_rate == 16000
            assert len(a) == s.n_samples and s.audio_seconds == len(a) / 16000  # the whole recording
            assert s.motion_seconds == s.n_frames / spec.fps == s.duration
            t = ds.template(s.subject)
            assert t.shape == (get_space(spec.space).dim,)
            n_frames += s.n_frames
        assert n_frames == st["n_frames"]
        assert abs(st["hours"] - n_frames / spec.fps / 3600) < 1e-4
        nv = card["n_vertices"]
        for which in ("lips", "upper"):
            r = ds.regions[which]
            assert r.dtype == np.int64 and 0 < r.size < nv and r.min() >= 0 and r.max() < nv
            assert np.unique(r).size == r.size


def test_vocaset_is_decimated_exactly(raw_tiny: Path, data_tiny: Path) -> None:
    """D1 at 30 fps: ceil(T60 / 2) frames, the rows [::2] of data_verts.npy bit for bit."""
    root = raw_tiny / "D1"
    verts = np.load(root / "data_verts.npy")
    idx = safepickle.load(root / "subj_seq_to_idx.pkl")
    tm = safepickle.load(root / "templates.pkl")
    ds = a2fbench.open_dataset(data_tiny, "D1")
    assert ds.card["fps"] == 30 and ds.card["fps_native"] == 60
    for subj, seqs in idx.items():
        for seq, frames in seqs.items():
            rows = [frames[k] for k in sorted(frames)]
            s = ds[f"{subj}_{seq}"]
            assert s.n_frames == math.ceil(len(rows) / 2)
            want = verts[rows][::2].reshape(s.n_frames, -1)
            assert s.motion.dtype == want.dtype and np.array_equal(s.motion, want)
        assert np.array_equal(ds.template(subj), tm[subj].reshape(-1)) and ds.template(subj).dtype == tm[subj].dtype
    # the audio: the int16 22 kHz pickle, to float, resampled to 16 kHz, whole
    a = safepickle.load(root / "raw_audio_fixed.pkl")
    sid = ds.split("test")[0]
    subj, seq = sid.rsplit("_", 1)
    assert np.array_equal(ds[sid].audio, resample(to_mono_float(a[subj][seq]["audio"]), 22000))


def test_biwi_keeps_float64_bit_for_bit(raw_tiny: Path, data_tiny: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    tm = safepickle.load(raw_tiny / "D0" / "templates.pkl")
    assert ds.card["dtype"] == "float64"
    for sid in ds.split("test")[:2] + ds.split("test_b")[:1]:
        raw = np.load(raw_tiny / "D0" / "vertices_npy" / f"{sid}.npy")
        s = ds[sid]
        assert s.motion.dtype == np.float64 and np.array_equal(s.motion, raw)
        assert ds.template(s.subject).dtype == np.float64
        assert np.array_equal(ds.template(s.subject), tm[s.subject].reshape(-1))
        assert np.array_equal(s.audio, read_audio(raw_tiny / "D0" / "wav" / f"{sid}.wav"))


@pytest.mark.parametrize("sid", ["D6", "D7"])
def test_release_60_fps_is_decimated(raw_tiny: Path, data_tiny: Path, sid: str) -> None:
    ds = a2fbench.open_dataset(data_tiny, sid)
    doc = json.loads((raw_tiny / sid / "test.json").read_text())
    assert ds.split("test") == [Path(e["annot_path"]).stem for e in doc["data"]]  # release order kept
    for e in doc["data"]:
        raw = np.load(raw_tiny / sid / e["annot_path"])
        s = ds[Path(e["annot_path"]).stem]
        assert s.n_frames == math.ceil(len(raw) / 2) and np.array_equal(s.motion, raw[::2])


def test_splits_follow_the_manifest(data_tiny: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D0")
    spec = get_spec("D0")
    for name, rule in spec.splits.sets.items():
        for sid in ds.split(name):
            subj, sent = sid.split("_e")
            assert subj in rule.subjects and rule.sentences[0] <= int(sent) <= rule.sentences[1]
    assert set(ds.split("test_b")).isdisjoint(ds.split("test"))
    d1 = a2fbench.open_dataset(data_tiny, "D1")
    sets = get_spec("D1").splits.sets
    for name in ("train", "val", "test"):
        assert {d1[s].subject for s in d1.split(name)} <= set(sets[name].subjects)
    assert d1.card["splits_defined_by_a2fbench"] is False
    assert a2fbench.open_dataset(data_tiny, "D3").card["splits_defined_by_a2fbench"] is True
    assert a2fbench.open_dataset(data_tiny, "D5").card["split_source"] == "release_json"


def test_regions_come_from_the_raw_files(raw_tiny: Path, data_tiny: Path) -> None:
    d0 = a2fbench.open_dataset(data_tiny, "D0")
    lve = [int(x) for x in (raw_tiny / "D0" / "regions" / "lve.txt").read_text().split(",")]
    assert d0.regions["lips"].tolist() == lve
    d2 = a2fbench.open_dataset(data_tiny, "D2")
    w = np.loadtxt(raw_tiny / "D2" / "forehead_mask.txt")
    assert d2.regions["upper"].tolist() == np.flatnonzero(w > 0.4).tolist()
    d1 = a2fbench.open_dataset(data_tiny, "D1")
    assert set(d1.region_sets) == {"facediffuser", "flame", "unitalker"}  # unitalker: the stand-in's mouth list
    masks = safepickle.load(raw_tiny / "D1" / "FLAME_masks.pkl")
    assert d1.regions_for("flame")["upper"].tolist() == sorted(set(masks["forehead"]) | set(masks["eye_region"]))


def test_card_fingerprints_the_inputs(raw_tiny: Path, data_tiny: Path, tmp_path: Path) -> None:
    card = a2fbench.open_dataset(data_tiny, "D3").card
    files = {f["path"]: f for f in card["inputs"]["files"]}
    for rel, f in files.items():
        assert f["sha256"] == sha256_file(raw_tiny / "D3" / rel) and f["size"] == (raw_tiny / "D3" / rel).stat().st_size
    assert card["fingerprint"].startswith("sha256:") and card["a2fbench_version"] == a2fbench.__version__
    # same inputs -> same fingerprint; one changed value -> another fingerprint
    raw = clone(raw_tiny, tmp_path / "raw")
    again = prepare_dataset(get_spec("D3"), raw, tmp_path / "data", progress=False)
    assert again["fingerprint"] == card["fingerprint"]
    clip = sorted((raw / "D3").glob("*.npy"))[0]
    m = np.load(clip)
    rewrite(clip)
    m[0, 0] += 0.01
    np.save(clip, m)
    changed = prepare_dataset(get_spec("D3"), raw, tmp_path / "data", progress=False)
    assert changed["fingerprint"] != card["fingerprint"]
    assert a2fbench.open_dataset(tmp_path / "data", "D3")[clip.stem].motion[0, 0] == m[0, 0]


# ------------------------------------------------------------------------------------ resampling
def _interp_reference(m: np.ndarray, fin: float, fout: float) -> np.ndarray:
    T = len(m)
    n = int(math.floor((T - 1) * fout / fin + 1e-9)) + 1
    t = np.arange(n) / fout
    src = np.arange(T) / fin
    return np.stack([np.interp(t, src, m[:, j].astype(np.float64)) for j in range(m.shape[1])], 1)


@pytest.mark.parametrize("fin,fout", [(60, 25), (30, 25), (25, 30), (50, 30)])
@pytest.mark.parametrize("T", [1, 2, 7, 61, 300])
def test_time_based_resampling_matches_a_plain_interpolation(fin: int, fout: int, T: int) -> None:
    rng = np.random.default_rng(T)
    m = rng.normal(size=(T, 5)).astype(np.float64)
    got = resample_motion(m, fin, fout, chunk=16)
    want = _interp_reference(m, fin, fout)
    assert got.shape == want.shape == (n_frames_out(T, fin, fout), 5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert resample_motion(m.astype(np.float32), fin, fout).dtype == np.float32
    # a linear ramp in time stays exactly that ramp
    ramp = (np.arange(T) / fin)[:, None] * np.ones((1, 2))
    np.testing.assert_allclose(resample_motion(ramp, fin, fout)[:, 0], np.arange(len(want)) / fout, atol=1e-12)


@pytest.mark.parametrize("fin,fout,k", [(60, 30, 2), (100, 25, 4), (30, 30, 1), (50, 25, 2)])
def test_whole_ratios_decimate_from_frame_zero(fin: int, fout: int, k: int) -> None:
    m = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    got = resample_motion(m, fin, fout)
    assert np.array_equal(got, m[::k]) and len(got) == math.ceil(23 / k) == n_frames_out(23, fin, fout)


def test_av_mismatch_and_common_length() -> None:
    assert av_mismatch(16000 * 5, 100, 25) == 1.0 and av_mismatch(16000 * 3, 100, 25) == -1.0
    # UniTalker's DataItem.truncate: dur = min(audio s, motion s, max), frames and samples by Python round
    assert common_length(100, 16000 * 5, 25.0) == (100, 64000)  # the recording runs past the motion
    assert common_length(100, 16000 * 3, 25.0) == (75, 48000)  # the motion runs past the recording
    assert common_length(1000, 16000 * 60, 25.0, 20.0) == (500, 320000)
    assert common_length(90, 16010, 30.0) == (30, 16010)  # 1.000625 s * 30 = 30.02 frames -> 30
    assert common_length(10, 8000, 25.0) == (10, 6400)  # 0.4 s of motion: 6400 samples


def _manifests_with(tmp_path: Path, changes: dict[str, dict]) -> Path:
    d = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), d)
    for p in d.glob("D*.yaml"):
        doc = yaml.safe_load(p.read_text())
        if doc["id"] in changes:
            doc.update(changes[doc["id"]])
            p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


@pytest.mark.parametrize("sid,fin", [("D2", 30), ("D6", 60)])
def test_prepare_resamples_to_25_fps_by_time(raw_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             sid: str, fin: int) -> None:
    """A manifest asking for 25 fps from 30 or 60 fps data: time-based interpolation, no code change."""
    monkeypatch.setenv("A2FBENCH_MANIFESTS", str(_manifests_with(tmp_path, {sid: {"fps": 25}})))
    spec = get_spec(sid)
    assert spec.decimation is None
    card = prepare_dataset(spec, raw_tiny, tmp_path / "data", progress=False)
    assert card["fps"] == 25 and card["fps_native"] == fin
    ds = a2fbench.open_dataset(tmp_path / "data", sid)
    for seq in ds.ids[:3]:
        raw_file = next((raw_tiny / sid).rglob(f"{seq}.npy"))
        raw = np.load(raw_file)
        s = ds[seq]
        want = _interp_reference(raw, fin, 25)
        assert s.n_frames == len(want) == n_frames_out(len(raw), fin, 25)
        np.testing.assert_allclose(s.motion, want, rtol=1e-6, atol=1e-6)
        assert s.motion.dtype == raw.dtype and len(s.audio) == s.n_samples


# ------------------------------------------------------------------------- the length rule, drops
def test_whole_recordings_are_kept_and_mismatches_recorded(raw_tiny: Path, tmp_path: Path) -> None:
    """A recording longer or shorter than its motion is stored whole; the card and the API say both lengths."""
    raw = clone(raw_tiny, tmp_path / "raw")
    clips = sorted((raw / "D3").glob("*.wav"))
    long_, short = clips[0], clips[1]
    want = {}
    for wav, extra in ((long_, 0.3), (short, -0.3)):
        x, sr = sf.read(str(wav), dtype="float32")
        rewrite(wav)
        n = len(x) + int(extra * sr)
        sf.write(str(wav), np.resize(x, n) if extra > 0 else x[:n], sr, subtype="PCM_16")
        want[wav.stem] = read_audio(wav)
    card = prepare_dataset(get_spec("D3"), raw, tmp_path / "data", progress=False)
    lengths = card["audio_motion_lengths"]
    assert lengths["audio_longer_over_one_frame"] == 1 and lengths["audio_shorter_over_one_frame"] == 1
    assert lengths["max_abs_s"] == pytest.approx(0.3, abs=0.01)
    ds = a2fbench.open_dataset(tmp_path / "data", "D3")
    for stem, sign in ((long_.stem, 1), (short.stem, -1)):
        s = ds[stem]
        assert np.array_equal(s.audio, want[stem]) and s.n_samples == len(want[stem])
        assert s.audio_seconds - s.motion_seconds == pytest.approx(sign * 0.3, abs=1 / 30)
    total = sum(ds[i].n_samples for i in ds.ids) / 16000 / 3600
    assert card["stats"]["audio_hours"] == pytest.approx(total, abs=1e-4)


def test_only_training_clips_are_dropped_when_short(raw_tiny: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Under filters.min_duration_s a training clip is dropped (listed); a test clip never is."""
    raw = clone(raw_tiny, tmp_path / "raw")
    d = raw / "D0"
    for sid in ("F2_e01", "F2_e37"):  # train, test (Test-A)
        m = np.load(d / "vertices_npy" / f"{sid}.npy")
        rewrite(d / "vertices_npy" / f"{sid}.npy")
        np.save(d / "vertices_npy" / f"{sid}.npy", m[:8])  # 0.32 s at 25 fps
        x, sr = sf.read(str(d / "wav" / f"{sid}.wav"))
        rewrite(d / "wav" / f"{sid}.wav")
        sf.write(str(d / "wav" / f"{sid}.wav"), x[: int(0.32 * sr)], sr)
    with caplog.at_level(logging.INFO, logger="a2fbench.prepare"):
        card = prepare_dataset(get_spec("D0"), raw, tmp_path / "data", progress=False)
    reasons = {x["id"]: x["reason"] for x in card["dropped"]}
    assert "training clip shorter than 0.5 s" in reasons["F2_e01"] and "F2_e37" not in reasons
    ds = a2fbench.open_dataset(tmp_path / "data", "D0")
    assert "F2_e01" not in ds and "F2_e37" in ds.split("test") and ds["F2_e37"].n_frames == 8
    assert "F2_e01" in caplog.text


def test_an_evaluation_clip_that_cannot_be_prepared_is_an_error(raw_tiny: Path, tmp_path: Path) -> None:
    raw = clone(raw_tiny, tmp_path / "raw")
    f = raw / "D0" / "vertices_npy" / "F2_e37.npy"
    rewrite(f)
    np.save(f, np.zeros((0, 70110)))
    with pytest.raises(RawDataError, match=r"F2_e37.npy: expected motion frames for F2_e37 \(an evaluation sequence"):
        prepare_dataset(get_spec("D0"), raw, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "D0").exists()


def test_dropped_items_are_logged_and_recorded(raw_tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = clone(raw_tiny, tmp_path / "raw")
    src = sorted((raw / "D3").glob("*.npy"))[0]
    shutil.copy(src, raw / "D3" / "not-a-clip-name.npy")
    shutil.copy(src.with_suffix(".wav"), raw / "D3" / "not-a-clip-name.wav")
    with caplog.at_level(logging.INFO, logger="a2fbench.prepare"):
        card = prepare_dataset(get_spec("D3"), raw, tmp_path / "data", progress=False)
    reasons = {d["id"]: d["reason"] for d in card["dropped"]}
    assert "does not match" in reasons["not-a-clip-name"]
    assert "not-a-clip-name" in caplog.text
    assert json.loads((tmp_path / "data" / "D3" / "dropped.json").read_text()) == card["dropped"]


# ------------------------------------------------------------------------------ resume, workers
_KILL_SCRIPT = """
import os, signal, sys
from a2fbench.prepare import pipeline as prepare
from a2fbench.registry import get_spec
orig, n = prepare._process, [0]
def process(spec, it, training):
    n[0] += 1
    if n[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard kill: no cleanup, no close
    return orig(spec, it, training)
prepare._process = process
prepare.prepare_dataset(get_spec(sys.argv[1]), sys.argv[2], sys.argv[3], progress=False)
"""


def test_a_killed_prepare_resumes(raw_tiny: Path, data_tiny: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from a2fbench.prepare import pipeline as prepare

    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, "D2", str(raw_tiny), str(data)], capture_output=True)
    assert r.returncode == -9
    assert (data / ".D2.incomplete").is_dir() and not (data / "D2").exists()
    with pytest.raises(StoreError, match="interrupted prepare"):
        a2fbench.open_dataset(data, "D2")
    calls: list[str] = []
    orig = prepare._process
    monkeypatch.setattr(prepare, "_process", lambda spec, it, tr: calls.append(it.id) or orig(spec, it, tr))
    card = prepare_dataset(get_spec("D2"), raw_tiny, data, progress=False)
    ref = a2fbench.open_dataset(data_tiny, "D2")
    assert len(calls) == len(ref) - 3  # three sequences were finished before the kill
    assert card["fingerprint"] == ref.card["fingerprint"] and not (data / ".D2.incomplete").exists()
    ds = a2fbench.open_dataset(data, "D2")
    for sid in ref.ids:
        assert np.array_equal(ds[sid].motion, ref[sid].motion) and np.array_equal(ds[sid].audio, ref[sid].audio)


def test_ctrl_c_keeps_work_and_resumes(raw_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from a2fbench.prepare import pipeline as prepare

    orig, n = prepare._process, [0]

    def interrupted(spec, it, training):  # noqa: ANN001, ANN202
        n[0] += 1
        if n[0] == 3:
            raise KeyboardInterrupt
        return orig(spec, it, training)

    monkeypatch.setattr(prepare, "_process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(get_spec("D4"), raw_tiny, tmp_path, progress=False)
    assert (tmp_path / ".D4.incomplete").is_dir()
    monkeypatch.setattr(prepare, "_process", orig)
    card = prepare_dataset(get_spec("D4"), raw_tiny, tmp_path, progress=False)
    assert card["stats"]["n_sequences"] == 6 and not (tmp_path / ".D4.incomplete").exists()


def test_workers_prepare_in_parallel_with_the_same_result(raw_tiny: Path, data_tiny: Path, tmp_path: Path) -> None:
    ids = ["D3", "D4", "D6", "D7"]
    res = prepare_many([get_spec(i) for i in ids], raw_tiny, tmp_path, workers=2)
    for i in ids:
        card, err = res[i]
        assert err is None and card["fingerprint"] == a2fbench.open_dataset(data_tiny, i).card["fingerprint"]
        assert a2fbench.open_dataset(tmp_path, i).card["fingerprint"] == card["fingerprint"]


def test_reprepare_replaces_the_store(raw_tiny: Path, tmp_path: Path) -> None:
    prepare_dataset(get_spec("D7"), raw_tiny, tmp_path, progress=False)
    first = (tmp_path / "D7" / "store.h5").stat().st_ino
    prepare_dataset(get_spec("D7"), raw_tiny, tmp_path, progress=False)
    assert (tmp_path / "D7" / "store.h5").stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D7"]  # no temporary folders left


# ------------------------------------------------------------------------------- other layouts
def test_vocaset_in_the_faceformer_layout_prepares_the_same(data_tiny: Path, tmp_path: Path) -> None:
    """`synth D1 --layout vertices_npy` (FaceFormer's processed files) gives the same store content."""
    from a2fbench.sources.synth import synth_dataset

    synth_dataset(get_spec("D1"), tmp_path / "raw", layout="vertices_npy", progress=False)
    assert (tmp_path / "raw" / "D1" / "vertices_npy").is_dir() and not (tmp_path / "raw" / "D1" / "data_verts.npy").exists()
    card = prepare_dataset(get_spec("D1"), tmp_path / "raw", tmp_path / "data", progress=False)
    assert card["layout"] == "vertices_npy"
    ds, ref = a2fbench.open_dataset(tmp_path / "data", "D1"), a2fbench.open_dataset(data_tiny, "D1")
    assert {n: ds.split(n) for n in ds.split_names} == {n: ref.split(n) for n in ref.split_names}
    for sid in ref.ids:
        assert np.array_equal(ds[sid].motion, ref[sid].motion)
        # 16-bit PCM in a wav vs int16 in the pickle: the same samples up to one quantisation step
        np.testing.assert_allclose(ds[sid].audio, ref[sid].audio, atol=2e-3)
        assert np.array_equal(ds.template(ds[sid].subject), ref.template(ref[sid].subject))


@pytest.mark.parametrize("sid,splits", [("D2", None), ("D0", ["test_b"])])
def test_the_unitalker_release_layout(data_tiny: Path, tmp_path: Path, sid: str, splits: list | None) -> None:
    """Every dataset also reads UniTalker's release layout: JSON splits (any split name), id_template rows."""
    from a2fbench.sources.synth import synth_dataset

    root = synth_dataset(get_spec(sid), tmp_path / "raw", layout="unitalker_release", splits=splits, progress=False)
    card = prepare_dataset(get_spec(sid), tmp_path / "raw", tmp_path / "data", progress=False)
    assert card["layout"] == "unitalker_release" and card["split_source"] == "release_json"
    ds, ref = a2fbench.open_dataset(tmp_path / "data", sid), a2fbench.open_dataset(data_tiny, sid)
    tmpl = np.load(root / "id_template.npy")
    ids = json.loads((root / f"{(splits or ['train'])[0]}.json").read_text())["info"]["id_list"]
    for name in splits or ["train", "val", "test"]:
        assert ds.split(name) == ref.split(name)
        for s in ds.split(name):
            assert np.array_equal(ds[s].motion, ref[s].motion)
            assert np.array_equal(ds.template(ds[s].subject), tmpl[ids.index(ds[s].subject)])
