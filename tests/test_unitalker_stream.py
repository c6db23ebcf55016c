"""Streaming inference (unitalker/infer/stream.py): frames leave before the clip ends, one chunk equals offline,
the streamer equals a slow window-by-window reference, the CNN cache is exact where the CNN is local, bad settings."""

from __future__ import annotations

import json
import math
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _cli_helpers import run_unitalker

from unitalker.infer.predict import run_batch
from unitalker.infer.stream import HeadOut, StreamSettings, Streamer, conv_in_length, grid_samples, stream_offsets
from unitalker.model.config import load_config
from unitalker.model.encoder import conv_out_length, frames_for_samples
from unitalker.model.model import HeadSpec, ModelSpec, UniTalker

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
SR, FPS = 16000, 30.0
CPU = torch.device("cpu")


def _model(*ov: str, decoder: str = "conv") -> UniTalker:
    torch.manual_seed(0)
    cfg = load_config("tiny", [f"model.decoder.type={decoder}", *ov])
    m = UniTalker(cfg, ModelSpec([HeadSpec("a", 12)], 3, ["D9/x", "D9/y"])).eval()
    for p in m.heads.parameters():  # non-zero heads, so that the comparisons mean something
        torch.nn.init.normal_(p)
    return m


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    from a2fbench.sources.synth.face import make_drive, render_audio

    rng = np.random.default_rng(seed)
    return render_audio(rng, make_drive(rng, seconds), SR, 140.0).astype(np.float32)


def _offline(m: UniTalker, x: np.ndarray) -> np.ndarray:
    return run_batch(m, [torch.from_numpy(x)], [frames_for_samples(len(x), FPS)], [1], ["a"], CPU)["a"][0]


def _streamer(m: UniTalker, **kw) -> Streamer:
    return Streamer(m, [HeadOut("a", "a", lambda a: a)], FPS, 1, StreamSettings(**kw), CPU)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b - b.mean(0)).max())


def test_grid_and_conv_lengths():
    assert grid_samples(30.0, 320) == (1600, 3) and grid_samples(25.0, 320) == (640, 1)
    assert grid_samples(60.0, 320) == (1600, 6)
    k, s = [3, 3, 3, 3, 2, 2], [2, 2, 2, 2, 2, 2]
    for n in (1, 2, 7):  # the fewest inputs giving n outputs: n outputs, one fewer input gives n - 1
        need = conv_in_length(n, k, s)
        assert conv_out_length(need, k, s) == n and conv_out_length(need - 1, k, s) == n - 1


@pytest.mark.parametrize("cache", [True, False])
def test_one_chunk_holding_the_clip_equals_offline(cache):
    m, x = _model(), _audio(3.3)
    off = _offline(m, x)
    got, rec = stream_offsets(m, x, "a", FPS, 1, StreamSettings(5000, 0, 2000, cache), CPU)
    assert got.shape == off.shape and len(rec["chunks"]) == 1
    # float32 trunk, same operations in the same order up to the CNN's norm: rounding level
    assert _rel(got, off) < 1e-5


def test_frames_leave_as_soon_as_their_audio_and_look_ahead_arrived():
    m, x = _model(), _audio(3.0)
    for chunk, look in ((200, 0), (320, 160), (100, 250)):
        s = _streamer(m, chunk_ms=chunk, lookahead_ms=look, context_ms=1000)
        n, got = round(chunk * SR / 1000), 0
        for k in range(1, len(x) // n):  # every whole chunk but the last: the clip has not ended
            fr = s.push(x[(k - 1) * n: k * n])["a"]
            got += len(fr)
            # frame t is out once (t + 1) / fps s of audio plus the look-ahead have arrived: no earlier, no later
            assert got == max(0, math.floor(Fraction(k * n - round(look * SR / 1000)) * 30 / SR)), (chunk, look, k)
        assert got > 0
        rest = s.flush(x[(len(x) // n - 1) * n:])["a"]
        assert got + len(rest) == frames_for_samples(len(x), FPS)


def _reference(m: UniTalker, x: np.ndarray, chunk_ms: float, look_ms: float, context_ms: float) -> np.ndarray:
    """The rule written out slowly: at every chunk boundary n (and at the end), run the offline model on the audio
    from the grid point at or before (first owed frame's start - context) up to n, keep the frames now due."""
    c, la, ctx = (round(v * SR / 1000) for v in (chunk_ms, look_ms, context_ms))
    q = 1600  # 100 ms: 5 CNN hops, 3 frames at 30 fps
    total, out = frames_for_samples(len(x), FPS), []
    ends = list(range(c, len(x), c)) + [len(x)]
    done = 0
    for n in ends:
        due = total if n == len(x) else max(done, (n - la) * 30 // SR)
        if due > done:
            ws = max(0, math.floor((Fraction(done * SR, 30) - ctx) / q)) * q
            win = _offline(m, x[ws:n])
            out.append(win[done - ws // q * 3: due - ws // q * 3])
            done = due
    return np.concatenate(out)


@pytest.mark.parametrize("decoder", ["conv", "transformer"])
def test_streamer_equals_the_window_by_window_reference(decoder):
    m, x = _model(decoder=decoder), _audio(3.1, seed=1)
    for chunk, look, ctx in ((200, 0, 600), (300, 100, 450)):
        ref = _reference(m, x, chunk, look, ctx)
        got, rec = stream_offsets(m, x, "a", FPS, 1, StreamSettings(chunk, look, ctx, False), CPU)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        assert len(rec["chunks"]) == math.ceil(len(x) / (chunk * 16))


def test_cnn_cache_is_exact_for_a_local_cnn_and_close_for_groupnorm():
    x = _audio(3.2, seed=2)
    local = _model("model.encoder.arch.feat_extract_norm=layer")  # every conv layer layer-normed: local
    a, _ = stream_offsets(local, x, "a", FPS, 1, StreamSettings(200, 0, 700, True), CPU)
    b, _ = stream_offsets(local, x, "a", FPS, 1, StreamSettings(200, 0, 700, False), CPU)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    group = _model()  # WavLM-base: the first layer's GroupNorm statistics span the window, so cached frames differ
    a, _ = stream_offsets(group, x, "a", FPS, 1, StreamSettings(200, 0, 700, True), CPU)
    b, _ = stream_offsets(group, x, "a", FPS, 1, StreamSettings(200, 0, 700, False), CPU)
    assert a.shape == b.shape and 0 < _rel(a, b)


def test_pieces_of_any_size_give_the_same_frames():
    m, x = _model(), _audio(2.45, seed=3)  # not a whole number of chunks: the last one is partial either way
    whole, rec = stream_offsets(m, x, "a", FPS, 1, StreamSettings(200, 100, 800, True), CPU)
    s = _streamer(m, chunk_ms=200, lookahead_ms=100, context_ms=800)
    parts = [s.push(x[i: i + 777])["a"] for i in range(0, len(x), 777)] + [s.flush()["a"]]
    got = np.concatenate([p for p in parts if p.size])
    np.testing.assert_array_equal(got, whole)
    assert [c["frames"] for c in s.record()["chunks"]] == [c["frames"] for c in rec["chunks"]]
    with pytest.raises(RuntimeError, match="flushed"):
        s.push(x[:100])


@pytest.mark.parametrize("kw, match", [
    (dict(chunk_ms=0), "at least one frame"), (dict(chunk_ms=-5), "at least one frame"),
    (dict(chunk_ms=20), "at least one frame"), (dict(chunk_ms=200, lookahead_ms=-1), "0 or more"),
    (dict(chunk_ms=200, lookahead_ms=900, context_ms=500), "at most the context"),
    (dict(chunk_ms=float("nan")), "finite"),
])
def test_bad_settings_are_one_line(kw, match):
    from a2fbench.errors import ConfigError

    with pytest.raises(ConfigError, match=match) as e:
        StreamSettings(**kw).check(FPS)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def run(data_tiny, tmp_path_factory) -> Path:
    from a2fbench.spaces.pca import fit_dataset
    from unitalker.train.loop import train

    root = tmp_path_factory.mktemp("stream")
    shutil.copytree(data_tiny / "D1", root / "data" / "D1")
    fit_dataset("D1", root / "data", components=16, progress=False)
    train(root / "data", ["D1"], root / "run", load_config("tiny", ["train.threads=1", "train.epochs=1",
                                                                    "train.warmup_epochs=0"]), progress=False)
    return root


def test_stream_command_writes_infer_frames_and_its_record(run, tmp_path, monkeypatch, capsys):
    wav = tmp_path / "talk.wav"
    sf.write(wav, _audio(2.5, seed=4), SR)
    code, err = run_unitalker(monkeypatch, capsys, "infer", "--checkpoint", str(run / "run"), str(wav), "--out",
                              str(tmp_path / "off"), "--heads", "D1", "--device", "cpu")
    assert code == 0, err
    off = np.load(tmp_path / "off" / "talk" / "D1.npy")
    for chunk, out in ((4000, "one"), (200, "s")):
        code, err = run_unitalker(monkeypatch, capsys, "stream", "--checkpoint", str(run / "run"), str(wav), "--out",
                                  str(tmp_path / out), "--heads", "D1", "--chunk-ms", str(chunk), "--device", "cpu")
        assert code == 0, err
    one = np.load(tmp_path / "one" / "talk" / "D1.npy")
    # template + offsets in float32: equal up to a few roundings of the largest value (a 1-epoch model barely moves,
    # so the motion's range is no yardstick here)
    assert one.shape == off.shape and np.abs(one - off).max() <= 1e-6 * np.abs(off).max()
    rec = json.loads((tmp_path / "s" / "talk" / "stream.json").read_text())
    assert len(rec["chunks"]) == math.ceil(2.5 / 0.2) and sum(c["frames"] for c in rec["chunks"]) == len(off)
    assert rec["algorithmic_latency_ms"] == 200 and rec["chunk_ms"] == 200 and rec["rtf"] > 0
    assert np.load(tmp_path / "s" / "talk" / "D1.npy").shape == off.shape
    # the sidecar infer writes, so render and export find the clip's audio and the template the frames sit on
    from a2fbench.outputs import sidecar

    for name in ("off", "s"):
        got = sidecar.for_motion(tmp_path / name / "talk" / "D1.npy")
        assert got is not None and got.audio == tmp_path / name / "talk" / sidecar.AUDIO_FILE
        assert np.array_equal(sf.read(got.audio, dtype="float32")[0], sf.read(wav, dtype="float32")[0])
    s_side = sidecar.for_motion(tmp_path / "s" / "talk" / "D1.npy").template
    assert np.array_equal(s_side.values, sidecar.for_motion(tmp_path / "off" / "talk" / "D1.npy").template.values)
    assert json.loads((tmp_path / "s" / "talk" / "infer.json").read_text())["made_by"] == "unitalker stream"
    # existing output: refused without --force, replaced with it
    args = ("stream", "--checkpoint", str(run / "run"), str(wav), "--out", str(tmp_path / "s"), "--heads", "D1",
            "--chunk-ms", "300", "--device", "cpu")
    code, err = run_unitalker(monkeypatch, capsys, *args)
    assert code == 1 and "--force" in err and len(err.strip().splitlines()) == 1
    assert json.loads((tmp_path / "s" / "talk" / "stream.json").read_text())["chunk_ms"] == 200
    code, err = run_unitalker(monkeypatch, capsys, *args, "--force")
    assert code == 0 and json.loads((tmp_path / "s" / "talk" / "stream.json").read_text())["chunk_ms"] == 300


@pytest.mark.parametrize("extra, match", [
    (("--chunk-ms", "0"), "at least one frame"), (("--chunk-ms", "10"), "at least one frame"),
    (("--lookahead-ms", "3000"), "at most the context"),
])
def test_stream_bad_input_is_one_line_and_writes_nothing(run, tmp_path, monkeypatch, capsys, extra, match):
    wav = tmp_path / "talk.wav"
    sf.write(wav, _audio(1.0), SR)
    code, err = run_unitalker(monkeypatch, capsys, "stream", "--checkpoint", str(run / "run"), str(wav), "--out",
                              str(tmp_path / "o"), "--heads", "D1", "--device", "cpu", *extra)
    assert code == 1 and match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_predict_in_streaming_mode_records_its_settings_for_evaluate(run, tmp_path, monkeypatch, capsys):
    from a2fbench.scoring.predictions import read_provenance

    code, err = run_unitalker(monkeypatch, capsys, "predict", "--checkpoint", str(run / "run"), "--data",
                              str(run / "data"), "--dataset", "D1", "--out", str(tmp_path / "p"), "--chunk-ms", "400",
                              "--lookahead-ms", "100", "--device", "cpu", "--no-progress")
    assert code == 0, err
    st = read_provenance(tmp_path / "p")["streaming"]
    assert st["chunk_ms"] == 400 and st["lookahead_ms"] == 100 and st["algorithmic_latency_ms"] == 500
