"""Synthetic stand-ins: the real structure of every dataset, and motion that the audio drives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

import a2fbench
from a2fbench.errors import A2FBenchError
from a2fbench.registry import all_specs, assign_splits, get_spec
from a2fbench.sources.layouts import detect_layout, read
from a2fbench.sources.raw import SYNTH_MARKER as MARKER
from a2fbench.sources.synth import estimate_bytes, plan, synth_dataset
from a2fbench.util import safepickle


def _frames(spec, seconds: float) -> int:  # noqa: ANN001
    return int(round(seconds * spec.fps_native))


def _plans(spec) -> dict:  # noqa: ANN001
    return {p.id: p for p in plan(spec, "tiny")}


def test_biwi_native_layout(raw_tiny: Path) -> None:
    spec, root = get_spec("D0"), raw_tiny / "D0"
    plans = _plans(spec)
    files = sorted((root / "vertices_npy").glob("*.npy"))
    assert {f.stem for f in files} == set(plans)
    for f in files:
        assert re.fullmatch(r"[FM]\d_e\d\d", f.stem) and f.stem[:2] in spec.subjects
        a = np.load(f, mmap_mode="r")
        assert a.dtype == np.float64 and a.shape == (_frames(spec, plans[f.stem].seconds), 70110)
        info = sf.info(str(root / "wav" / f"{f.stem}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
        assert abs(info.frames / 44100 - a.shape[0] / 25) < 1 / 25
    tm = safepickle.load(root / "templates.pkl")
    assert set(tm) == {p.subject for p in plans.values()}
    assert all(v.shape == (23370, 3) and v.dtype == np.float64 for v in tm.values())
    lve = (root / "regions" / "lve.txt").read_text()
    assert ", " in lve and "\n" not in lve  # CodeTalker's format: one line, ", "-separated
    assert "element vertex 23370" in (root / "BIWI.ply").read_text()[:200]


def test_vocaset_release_layout(raw_tiny: Path) -> None:
    spec, root = get_spec("D1"), raw_tiny / "D1"
    plans = _plans(spec)
    verts = np.load(root / "data_verts.npy", mmap_mode="r")
    assert verts.dtype == np.float32 and verts.shape[1:] == (5023, 3)
    idx = safepickle.load(root / "subj_seq_to_idx.pkl")
    audio = safepickle.load(root / "raw_audio_fixed.pkl")
    n = 0
    for subj, seqs in idx.items():
        assert subj in spec.subjects
        for seq, frames in seqs.items():
            sid = f"{subj}_{seq}"
            assert re.fullmatch(r"sentence\d\d", seq) and sid in plans
            assert sorted(frames) == list(range(1, len(frames) + 1))  # 1-based frame numbers
            assert len(frames) == _frames(spec, plans[sid].seconds)
            a = audio[subj][seq]
            assert a["sample_rate"] == 22000 and a["audio"].dtype == np.int16 and a["audio"].ndim == 1
            assert abs(len(a["audio"]) / 22000 - len(frames) / 60) < 1 / 60
            n += len(frames)
    assert n == verts.shape[0]
    masks = safepickle.load(root / "FLAME_masks.pkl")
    assert {"lips", "forehead", "eye_region", "face"} <= set(masks)
    assert "," in (root / "regions" / "lve.txt").read_text() and ", " not in (root / "regions" / "lve.txt").read_text()


def test_multiface_layout(raw_tiny: Path) -> None:
    spec, root = get_spec("D2"), raw_tiny / "D2"
    files = sorted((root / "vertices_npy").glob("*.npy"))
    assert files
    for f in files:  # Multiface's own sentence names, numbered (and split) by FaceDiffuser's table
        m = re.fullmatch(r"(m--\d{8}--0000--\d{7}--GHS)_(SEN_[a-z_A-Z-]+)", f.stem)
        assert m and m.group(2) in spec.naming.sentences, f.stem
        assert spec.sentence_number(f.stem) == spec.naming.sentences[m.group(2)]
        assert np.load(f, mmap_mode="r").shape[1] == 18516
        assert sf.info(str(root / "wav" / f"{f.stem}.wav")).samplerate == 48000
    for name in ("weighted_mouth_mask.txt", "forehead_mask.txt"):
        assert np.loadtxt(root / name).shape == (6172,)
    assert sum(ln.startswith("v ") for ln in (root / "face_template.obj").read_text().splitlines()) == 6172
    tm = safepickle.load(root / "templates.pkl")
    assert all(v.shape == (6172, 3) and 20 < np.abs(v).max() < 500 for v in tm.values())  # millimetres


@pytest.mark.parametrize("sid,rate,width,pattern", [
    ("D3", 16000, 52, r"RD_Radio\d+_\d{3}"),
    ("D4", 48000, 52, r"03-01-\d\d-\d\d-\d\d-\d\d-\d\d"),
])
def test_clip_pair_layouts(raw_tiny: Path, sid: str, rate: int, width: int, pattern: str) -> None:
    spec, root = get_spec(sid), raw_tiny / sid
    plans = _plans(spec)
    clips = sorted(p for p in root.glob("*.npy"))
    assert {c.stem for c in clips} == set(plans)
    for c in clips:
        assert re.fullmatch(pattern, c.stem)
        m = np.load(c)
        assert m.shape == (_frames(spec, plans[c.stem].seconds), width) and m.dtype == np.float32
        assert 0 <= m.min() and m.max() <= 1  # ARKit weights
        assert sf.info(str(c.with_suffix(".wav"))).samplerate == rate
    z = np.load(root / "EmoTalk.npz")
    assert z["blendshape"].shape == (52, z["meanshape"].size)


@pytest.mark.parametrize("sid,width,fps", [("D5", 413, 30), ("D6", 51, 60), ("D7", 51, 60)])
def test_unitalker_release_layouts(raw_tiny: Path, sid: str, width: int, fps: int) -> None:
    spec, root = get_spec(sid), raw_tiny / sid
    plans = _plans(spec)
    ids = None
    for split in ("train", "val", "test"):
        doc = json.loads((root / f"{split}.json").read_text())
        ids = ids or doc["info"]["id_list"]
        assert doc["info"]["id_list"] == ids  # the same id list in every split, as UniTalker requires
        for e in doc["data"]:
            assert set(e) == {"annot_type", "annot_path", "audio_path", "id", "fps", "dataset"}
            assert e["annot_path"].startswith(f"{split}/") and e["fps"] == fps and e["dataset"] == sid
            m = np.load(root / e["annot_path"])
            stem = Path(e["annot_path"]).stem
            assert m.shape == (_frames(spec, plans[stem].seconds), width) and plans[stem].split == split
            assert ids[e["id"]] == plans[stem].subject
    tmpl = np.load(root / "id_template.npy")
    assert tmpl.shape == (len(ids), width)
    if sid == "D5":
        model = safepickle.load(root / "generic_model.pkl")
        assert model["v_template"].shape == (5023, 3) and model["shapedirs"].shape == (5023, 3, 400)
        assert model["J_regressor"].shape == (5, 5023)
        assert np.load(root / plans[stem].split / f"{stem}_audio.npy").dtype == np.float32
    else:
        assert np.load(root / "inhouse_arkit.npz")["blendshape"].shape[0] == 51


def test_every_stand_in_is_marked_synthetic(raw_tiny: Path, data_tiny: Path) -> None:
    for spec in all_specs():
        mark = json.loads((raw_tiny / spec.id / MARKER).read_text())
        assert mark["dataset"] == spec.id and mark["size"] == "tiny"
        assert a2fbench.open_dataset(data_tiny, spec.id).card["synthetic"]["size"] == "tiny"


def test_split_membership_matches_the_manifest(raw_tiny: Path) -> None:
    """The split each stand-in sequence is planned for is the split prepare assigns from the manifest."""
    for spec in all_specs():
        root = raw_tiny / spec.id
        raw = read(detect_layout(root, spec), root, spec)
        splits, unassigned, _src = assign_splits(spec, raw.items)
        assert not unassigned
        derived = spec.splits.derived  # subsets of a parent split (D2's test_facediffuser), overlapping it by design
        for name, d in derived.items():
            assert set(splits[name]) <= set(splits[d.of]), (spec.id, name)
        got = {sid: name for name, ids in splits.items() if name not in derived for sid in ids}
        for p in plan(spec, "tiny"):
            if p.split is not None:
                assert got[p.id] == p.split, (spec.id, p.id)
        assert all(splits.get(s) for s in ("train", "val", "test")), spec.id


def _plan_items(spec) -> list:  # noqa: ANN001 - the split rule reads id, subject and the layout's split alone
    return [SimpleNamespace(id=p.id, subject=p.subject, split=None) for p in plan(spec, "full")]


def test_full_size_biwi_and_vocaset_splits() -> None:
    """At full size: BIWI 14 subjects x 40 takes, 192/24/24/32 (Test-A, Test-B); VOCASET 12 x 40, 8/2/2 subjects."""
    d0 = get_spec("D0")
    splits, unassigned, _ = assign_splits(d0, _plan_items(d0))
    assert {k: len(v) for k, v in splits.items()} == {"train": 192, "val": 24, "test": 24, "test_b": 32}
    assert len(unassigned) == 560 - 272
    assert {s.split("_")[0] for s in splits["test_b"]} == {"F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6"}
    assert {int(s[-2:]) for s in splits["test"]} == {37, 38, 39, 40}
    frames_a = sum(int(round(p.seconds * 25)) for p in plan(d0, "full") if p.split == "test")
    assert abs(frames_a - 3879) / 3879 < 0.02  # CodeTalker's Test-A prints "Frame Number: 3879"
    d1 = get_spec("D1")
    splits, unassigned, _ = assign_splits(d1, _plan_items(d1))
    assert {k: len(v) for k, v in splits.items()} == {"train": 320, "val": 40, "test": 40}
    subj = {k: {s.rsplit("_", 1)[0] for s in v} for k, v in splits.items()}
    assert (len(subj["train"]), len(subj["val"]), len(subj["test"])) == (8, 2, 2)
    assert subj["test"] == {"FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"}
    assert {int(s[-2:]) for s in splits["val"]} == set(range(21, 41))
    assert splits["train"][:2] == ["FaceTalk_170728_03272_TA_sentence01", "FaceTalk_170728_03272_TA_sentence02"]
    d5 = get_spec("D5")
    n = {k: sum(p.split == k for p in plan(d5, "full")) for k in ("train", "val", "test")}
    assert abs(n["train"] / sum(n.values()) - 0.8) < 0.02 and abs(n["val"] - n["test"]) < 0.02 * sum(n.values())


def _envelope(audio: np.ndarray, fps: float, T: int) -> np.ndarray:
    hop = 16000 / fps
    return np.array([np.sqrt(np.mean(audio[int(i * hop): int((i + 1) * hop)] ** 2)) for i in range(T)])


def test_lip_motion_follows_the_audio_and_upper_face_does_not(data_tiny: Path) -> None:
    from a2fbench.spaces import converter

    for spec in all_specs():
        ds = a2fbench.open_dataset(data_tiny, spec.id)
        conv = converter(spec.space, ds.space_arrays())
        lips, upper = ds.regions["lips"], ds.regions["upper"]
        c_lip, c_up = [], []
        for sid in ds.ids[:8]:
            s = ds[sid]
            m, t = s.motion.astype(np.float64), ds.template(s.subject).astype(np.float64)
            if conv is None:
                V, Tm = m.reshape(len(m), -1, 3), t.reshape(-1, 3)
            else:
                V, Tm = conv.to_vertices(m), conv.to_vertices(t[None])[0]
            env = _envelope(s.audio, ds.card["fps"], len(m))
            c_lip.append(np.corrcoef(np.linalg.norm(V[:, lips] - Tm[lips], axis=2).mean(1), env)[0, 1])
            c_up.append(np.corrcoef(np.linalg.norm(V[:, upper] - Tm[upper], axis=2).mean(1), env)[0, 1])
        assert np.mean(c_lip) > 0.6 and np.min(c_lip) > 0.3, (spec.id, c_lip)
        assert abs(np.mean(c_up)) < 0.3, (spec.id, c_up)


def _band_features(audio: np.ndarray, fps: float, T: int) -> np.ndarray:
    hop = int(round(16000 / fps))
    win = 2 * hop
    x = np.pad(audio.astype(np.float64), (hop // 2, win))
    frames = np.stack([x[i * hop: i * hop + win] for i in range(T)]) * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    f = np.fft.rfftfreq(win, 1 / 16000)
    edges = np.geomspace(100, 6000, 9)
    F = np.log(np.stack([power[:, (f >= a) & (f < b)].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1) + 1e-8)
    return np.hstack([np.roll(F, k, axis=0) for k in (-2, -1, 0, 1, 2)] + [np.ones((T, 1))])


@pytest.mark.parametrize("sid", ["D1", "D2"])
def test_audio_to_lips_is_learnable_and_a_static_face_is_not_enough(data_tiny: Path, sid: str) -> None:
    """Ridge regression from audio band energies, fit on train, beats the template and the train mean on test."""
    ds = a2fbench.open_dataset(data_tiny, sid)
    lips = ds.regions["lips"]

    def xy(split: str) -> tuple[np.ndarray, np.ndarray]:
        X, Y = [], []
        for sid_ in ds.split(split):
            s = ds[sid_]
            m = s.motion.astype(np.float64) - ds.template(s.subject).astype(np.float64)
            Y.append(m.reshape(len(m), -1, 3)[:, lips].reshape(len(m), -1))
            X.append(_band_features(s.audio, ds.card["fps"], len(m)))
        return np.vstack(X), np.vstack(Y)

    Xtr, Ytr = xy("train")
    Xte, Yte = xy("test")
    W = np.linalg.solve(Xtr.T @ Xtr + 0.1 * len(Xtr) * np.eye(Xtr.shape[1]), Xtr.T @ Ytr)
    err = np.mean((Xte @ W - Yte) ** 2)
    static = np.mean(Yte**2)  # the template itself
    mean_face = np.mean((Ytr.mean(0) - Yte) ** 2)
    assert err < 0.5 * static and err < 0.5 * mean_face, (err, static, mean_face)


def test_synth_is_deterministic_and_seeded(tmp_path: Path, raw_tiny: Path) -> None:
    spec = get_spec("D3")
    a = synth_dataset(spec, tmp_path / "a", size="tiny", seed=0, progress=False)
    b = synth_dataset(spec, tmp_path / "b", size="tiny", seed=1, progress=False)
    for f in sorted(a.glob("*.npy")):
        assert np.array_equal(np.load(f), np.load(raw_tiny / "D3" / f.name))
    same = [np.array_equal(np.load(f), np.load(b / f.name)) for f in sorted(a.glob("*.npy")) if (b / f.name).exists()]
    assert not any(same)


def test_sizes_splits_and_disk_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in all_specs():
        n = [len(plan(spec, s)) for s in ("tiny", "small", "full")]
        assert n[0] < n[1] < n[2], spec.id
    d0 = get_spec("D0")
    assert estimate_bytes(d0, "full") > 30e9  # full BIWI is tens of GB of float64 vertices
    out = synth_dataset(get_spec("D2"), tmp_path, size="tiny", splits=["test"], progress=False)
    d2 = get_spec("D2")
    assert {d2.sentence_number(f.stem) for f in (out / "vertices_npy").glob("*.npy")} == {46}
    assert all(f.stem.endswith("_SEN_why_buy_oil_when_you_always_use_mine") for f in (out / "vertices_npy").glob("*.npy"))
    import shutil
    from collections import namedtuple

    du = namedtuple("du", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: du(10**6, 0, 10**6))
    with pytest.raises(A2FBenchError, match="free disk"):
        synth_dataset(d0, tmp_path / "full", size="full", progress=False)
    assert not (tmp_path / "full" / "D0").exists()
