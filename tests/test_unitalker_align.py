"""UniTalker's audio/motion alignment on stores that keep whole recordings: training clips cut as
``DataItem.truncate`` cuts them (the shorter of recording and motion, at most data.max_seconds), prediction
at the ground-truth frame count from the recording cut (or padded) to the motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _raw_helpers import clone, rewrite

import a2fbench
from a2fbench.prepare import prepare_dataset
from a2fbench.registry import get_spec
from a2fbench.scoring.protocols import PROTOCOLS
from a2fbench.store import UNITALKER_MAX_SECONDS
from unitalker.infer import predict as P
from unitalker.model.config import load_config, shipped_configs
from unitalker.train.data import ClipSet, identity_table, open_sources

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def skewed(raw_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """D3 with one recording 0.3 s longer and one 0.3 s shorter than its motion, in every split."""
    tmp = tmp_path_factory.mktemp("skewed")
    raw = clone(raw_tiny, tmp / "raw")
    changed: dict[str, float] = {}
    for k, wav in enumerate(sorted((raw / "D3").glob("*.wav"))):
        extra = (0.3, -0.3, 0.0)[k % 3]
        if not extra:
            continue
        x, sr = sf.read(str(wav), dtype="float32")
        rewrite(wav)
        n = len(x) + int(extra * sr)
        sf.write(str(wav), np.concatenate([x, x[: n - len(x)]]) if extra > 0 else x[:n], sr, subtype="PCM_16")
        changed[wav.stem] = extra
    prepare_dataset(get_spec("D3"), raw, tmp / "data", progress=False)
    return tmp / "data", changed


def _rule(audio_s: float, motion_s: float, fps: float, max_s: float) -> tuple[int, int]:
    """UniTalker data_item.truncate, written out: dur = min(audio, annot, max); Python round (ties to even)."""
    dur = min(audio_s, motion_s, max_s)
    return round(dur * fps), round(dur * 16000)


@pytest.mark.parametrize("max_s", [20.0, 1.0])
def test_training_clips_are_cut_to_the_shorter_of_recording_and_motion(skewed, max_s: float) -> None:
    data, changed = skewed
    c = load_config("tiny", ["train.threads=1", f"data.max_seconds={max_s}"])
    srcs = open_sources(data, ["D3"], c)
    clips = ClipSet(srcs, identity_table(srcs), c, normalize=False)
    ds = srcs[0].ds
    assert len(clips) == len(ds.split("train"))
    seen = {"longer": 0, "shorter": 0}
    for i, (_, sid) in enumerate(clips.items):
        s = ds[sid]
        n_annot, n_audio = _rule(s.n_samples / 16000, s.n_frames / 30.0, 30.0, max_s)
        it = clips[i]
        assert it["n_frames"] == n_annot and len(it["audio"]) == n_audio, sid
        assert np.array_equal(it["audio"].numpy(), s.audio[:n_audio])
        motion = it["target"]["motion"].numpy()
        assert motion.shape[0] == n_annot
        np.testing.assert_array_equal(motion, (np.asarray(s.motion[:n_annot], np.float64) * 1.0).astype(np.float32))
        if sid in changed and max_s > 2:
            seen["longer" if changed[sid] > 0 else "shorter"] += 1
            if changed[sid] > 0:  # the recording is cut to the motion
                assert n_annot == s.n_frames and n_audio < s.n_samples
            else:  # the motion is cut to the recording
                assert n_annot < s.n_frames and n_audio == s.n_samples
    if max_s > 2:
        assert seen["longer"] and seen["shorter"]


def test_training_cut_is_the_unitalker_protocol_cut() -> None:
    """One 20 s: the shipped configs' training cut (data.max_seconds, a YAML value) is the constant the
    unitalker scoring protocol cuts to."""
    assert PROTOCOLS["unitalker"].max_seconds == UNITALKER_MAX_SECONDS == 20.0
    for name in (None, *shipped_configs()):
        assert load_config(name)["data"]["max_seconds"] == UNITALKER_MAX_SECONDS, name


def test_min_seconds_applies_to_training_only(skewed) -> None:
    data, _ = skewed
    c = load_config("tiny", ["train.threads=1", "data.min_seconds=30"])
    srcs = open_sources(data, ["D3"], c)
    assert len(ClipSet(srcs, identity_table(srcs), c, normalize=False)) == 0  # every tiny clip is under 30 s
    val = open_sources(data, ["D3"], c, split="val")
    assert len(ClipSet(val, identity_table(srcs), c, normalize=False, split="val")) == len(val[0].ids) > 0


def _d3_checkpoint(data):  # noqa: ANN001, ANN202
    """The parts of a loaded checkpoint that predict_split reads: one arkit52 head (D3), no templates kept."""

    class Loaded:
        class model:  # noqa: N801
            class spec:  # noqa: N801
                heads = [type("H", (), {"space": "arkit52"})()]

            class encoder:  # noqa: N801
                normalize = False

        datasets = [{"id": "D3", "space": "arkit52", "fps": 30.0, "scale": 1.0}]
        identities = identity_table(open_sources(data, ["D3"], load_config("tiny")))
        meta = {"model_spec": {"heads": [{"space": "arkit52"}]}, "datasets": datasets}
        aux: dict = {}

    return Loaded


def test_prediction_outputs_the_ground_truth_frames_from_the_aligned_recording(skewed, monkeypatch) -> None:
    """predict_split feeds round(T / fps * 16000) samples: the recording cut to the motion, or padded with
    silence when it ends first; the model is asked for exactly T frames."""
    data, changed = skewed
    ds = a2fbench.open_dataset(data, "D3")
    for sid in ds.split("test"):
        s = ds[sid]
        a = P.motion_audio(s, 30.0)
        n = round(s.n_frames / 30.0 * 16000)
        assert len(a) == n
        k = min(n, s.n_samples)
        assert np.array_equal(a[:k], s.audio[:k]) and not a[k:].any()
    calls: list[tuple[int, int]] = []

    def fake(model, audios, frames, identities, spaces, device, amp="none"):  # noqa: ANN001, ANN202
        calls.extend((len(x), f) for x, f in zip(audios, frames))
        return {sp: [np.zeros((f, 52), np.float32) for f in frames] for sp in spaces}

    Loaded = _d3_checkpoint(data)

    monkeypatch.setattr(P, "run_batch", fake)
    out = dict(P.predict_split(Loaded, data, "D3", "test", torch.device("cpu"), progress=False))
    assert sorted(out) == sorted(ds.split("test"))
    want = sorted((round(ds[sid].n_frames / 30.0 * 16000), ds[sid].n_frames) for sid in ds.split("test"))
    assert sorted(calls) == want
    assert any(sid in changed for sid in ds.split("test"))
    for sid, p in out.items():
        assert p.shape == (ds[sid].n_frames, 52)


def test_paper_mode_cuts_each_clip_before_the_model_and_pads_nothing(skewed, monkeypatch) -> None:
    """--protocol unitalker: the model gets round(d * 16000) samples of the recording and is asked for round(d *
    fps) frames, d = min(recording, motion, 20 s) (DataItem.truncate); no silence; the record says so."""
    data, changed = skewed
    ds = a2fbench.open_dataset(data, "D3")
    calls: list[tuple[int, int, bool]] = []

    def fake(model, audios, frames, identities, spaces, device, amp="none"):  # noqa: ANN001, ANN202
        calls.extend((len(x), f, amp == "none") for x, f in zip(audios, frames))
        return {sp: [np.zeros((f, 52), np.float32) for f in frames] for sp in spaces}

    Loaded = _d3_checkpoint(data)

    monkeypatch.setattr(P, "run_batch", fake)
    record: dict = {}
    out = dict(P.predict_split(Loaded, data, "D3", "test", torch.device("cpu"), amp="bf16", progress=False,
                               protocol="unitalker", record=record))
    want = []
    for sid in ds.split("test"):
        s = ds[sid]
        d = min(s.n_samples / 16000, s.n_frames / 30.0, 20.0)
        want.append((round(d * 16000), round(d * 30.0), True))
        assert out[sid].shape == (round(d * 30.0), 52)
        assert record["sequences"][sid]["padded_s"] == 0.0 and record["sequences"][sid]["frames"] == round(d * 30.0)
    assert sorted(calls) == sorted(want)
    short = [sid for sid in ds.split("test") if ds[sid].n_samples < round(ds[sid].n_frames / 30.0 * 16000)]
    assert short, "the fixture has a recording that ends before its motion"
    assert record["skipped"] == []
