"""`unitalker infer` and `unitalker bench`: formats, windows and cross-fade, bad input, timing report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _cli_helpers import run_unitalker

from unitalker.model.config import load_config
from unitalker.infer.predict import AudioInputError, infer, run_batch, windows
from unitalker.model.load import load_model
from unitalker.train.loop import train

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
SR = 16000


@pytest.fixture(scope="module")
def run(data_tiny, tmp_path_factory) -> Path:
    """One epoch on D1 + D3 (a PCA vertex head and a blendshape head)."""
    from a2fbench.spaces.pca import fit_dataset

    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    for d in ("D1", "D3"):
        shutil.copytree(data_tiny / d, data / d)
    fit_dataset("D1", data, components=16, progress=False)
    out = root / "run"
    train(data, ["D1", "D3"], out, load_config("tiny", ["train.threads=1", "train.epochs=2", "train.warmup_epochs=0"]),
          progress=False)
    return out


def speech(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Speech-like audio from the stand-ins' generator."""
    from a2fbench.sources.synth.face import make_drive, render_audio

    rng = np.random.default_rng(seed)
    return render_audio(rng, make_drive(rng, seconds), sr, 140.0)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unitalker.cli", *args], capture_output=True, text=True, env=ENV)


def test_windows_follow_the_reference_demo():
    assert windows(SR * 25) == [(0, SR * 25)]
    assert windows(SR * 26) == [(0, SR * 25), (SR * 20, SR * 26)]
    w = windows(int(SR * 61.3))
    assert [a for a, _ in w] == [0, SR * 20, SR * 40]
    assert w[-1][1] == int(SR * 61.3) and all(b - a <= SR * 25 for a, b in w)


def test_infer_formats_and_heads(run, tmp_path):
    x = speech(2.0, 44100)
    stereo = np.stack([x, 0.5 * x], 1)
    sf.write(tmp_path / "a.flac", stereo, 44100)
    sf.write(tmp_path / "b.mp3", stereo, 44100, format="MP3")
    sf.write(tmp_path / "c.wav", speech(1.0, 22050, 1), 22050, subtype="PCM_16")
    r = _cli("infer", "--checkpoint", str(run), str(tmp_path / "a.flac"), str(tmp_path / "b.mp3"),
             str(tmp_path / "c.wav"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    for stem, secs in (("a", 2.0), ("b", 2.0), ("c", 1.0)):
        meta = json.loads((tmp_path / "out" / stem / "meta.json").read_text())
        assert set(meta["heads"]) == {"D1", "D3"}
        d1 = np.load(tmp_path / "out" / stem / "D1.npy")
        d3 = np.load(tmp_path / "out" / stem / "D3.npy")
        n = meta["heads"]["D1"]["frames"]
        assert abs(n - round(secs * 30)) <= 1 and d1.shape == (n, 15069) and d3.shape == (n, 52)
        assert np.isfinite(d1).all() and np.isfinite(d3).all()
    d3_subject = next(k for k in load_model(run).identities.keys if k.startswith("D3/"))
    only = _cli("infer", "--checkpoint", str(run), str(tmp_path / "c.wav"), "--out", str(tmp_path / "o2"),
                "--heads", "D3", "--identity", d3_subject)
    assert only.returncode == 0, only.stderr
    assert [p.name for p in (tmp_path / "o2" / "c").glob("*.npy")] == ["D3.npy"]


def test_long_audio_is_windowed_and_cross_faded(run, tmp_path):
    """52 s: windows [0,25) [20,45) [40,52) s, each animated alone, blended with linspace(1, 0, 5 s x fps)."""
    x = speech(52.0, SR, 3)
    sf.write(tmp_path / "long.wav", x, SR, subtype="FLOAT")
    infer(run, [tmp_path / "long.wav"], tmp_path / "out", heads="D1", device="cpu")
    got = np.load(tmp_path / "out" / "long" / "D1.npy").astype(np.float64)
    loaded = load_model(run)
    fps, T = 30.0, round(52.0 * 30)
    assert got.shape[0] == T
    wins = [(0, 25), (20, 45), (40, 52)]
    outs = []
    for a, b in wins:  # each window alone through the model
        seg = torch.from_numpy(x[a * SR: b * SR])
        o = run_batch(loaded.model, [seg], [int((b - a) * fps)], [loaded.identities.pivot], ["flame_5023_verts"],
                      torch.device("cpu"))["flame_5023_verts"][0]
        outs.append(o.astype(np.float64))
    tmpl = loaded.aux["template_mean.D1"].double().numpy()
    want = np.zeros_like(got)
    want[0:600] = outs[0][:600]
    w = np.linspace(1, 0, 150)[:, None]
    want[600:750] = w * outs[0][600:750] + (1 - w) * outs[1][:150]
    want[750:1200] = outs[1][150:600]
    want[1200:1350] = w * outs[1][600:750] + (1 - w) * outs[2][:150]
    want[1350:] = outs[2][150:]
    np.testing.assert_allclose(got, want + tmpl, atol=1e-5)
    assert not np.allclose(outs[0][600:750], outs[1][:150], atol=1e-6)  # the fade mattered


def test_infer_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, monkeypatch):
    sf.write(tmp_path / "ok.wav", speech(1.0), SR)
    sf.write(tmp_path / "short.wav", speech(0.3), SR)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    cases = [
        ([str(tmp_path / "ok.wav"), str(tmp_path / "short.wav")], "at least 0.5 s"),
        ([str(tmp_path / "empty.wav")], "empty"),
        ([str(tmp_path / "junk.wav")], "unreadable"),
        ([str(tmp_path / "missing.wav")], "found nothing"),
        ([str(tmp_path / "ok.wav"), "--heads", "D7"], "unknown head"),
        ([str(tmp_path / "ok.wav"), "--heads", "D9"], "unknown head"),
        ([str(tmp_path / "ok.wav"), "--identity", "nobody"], "identity 'nobody'"),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(tmp_path / "ok.wav"), "--device", "cuda"], "expected a CUDA GPU"))
    for args, msg in cases:
        code, err = run_unitalker(monkeypatch, capsys, "infer", "--checkpoint", str(run), *args, "--out",
                                  str(tmp_path / "out"))
        assert code == 1, (args, err)
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
        assert msg in err and "Traceback" not in err and len(lines) == 1, err
        assert not (tmp_path / "out" / "ok").exists()
    r = _cli("infer", "--checkpoint", str(run), str(tmp_path / "short.wav"), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "0.300 s" in r.stderr
    with pytest.raises(AudioInputError, match="at least 0.5 s"):
        infer(run, [tmp_path / "short.wav"], tmp_path / "o3")


def test_bench_reports_both_modes(run, tmp_path):
    r = _cli("bench", "--config", "tiny", "--seconds", "1", "--batch", "2", "--runs", "20", "--device", "cpu",
             "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "b.json").read_text())
    assert {(x["mode"], x["batch"]) for x in rep["rows"]} == {("reference", 1), ("fast", 1), ("reference", 2), ("fast", 2)}
    assert rep["runs"] == 20 and rep["device"].startswith("CPU") and rep["params"] > rep["encoder_params"] > 0
    ref = {x["mode"]: x for x in rep["rows"] if x["batch"] == 1}
    assert ref["reference"]["attention"] == "eager" and ref["fast"]["attention"] == "sdpa"
    assert "fast vs reference" in r.stdout
    mixed = _cli("bench", "--checkpoint", str(run), "--config", "unitalker-b", "--device", "cpu")
    assert mixed.returncode == 1 and "another config" in mixed.stderr
    if not torch.cuda.is_available():
        nocuda = _cli("bench", "--config", "tiny", "--device", "cuda")
        assert nocuda.returncode == 1 and "expected a CUDA GPU" in nocuda.stderr
