"""UniTalker training on the tiny stand-ins: learning, exact resume after a kill, DDP on gloo, fine-tuning,
sampling, predictions in native units."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import a2fbench
from a2fbench.errors import ConfigError
from unitalker.model import checkpoint as ck
from unitalker.model.config import load_config
from unitalker.train.data import (
    BucketBatchSampler,
    ClipSet,
    identity_table,
    open_sources,
    select_fraction,
)
from unitalker.model.load import transfer
from unitalker.infer.predict import predict_split
from unitalker.model.load import load_model
from unitalker.train.loop import train

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
ALL = ["D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def data(data_tiny, tmp_path_factory) -> Path:
    """A private copy of the tiny stores with the PCA of D0..D2 (16 components), as acceptance 5 does."""
    from a2fbench.spaces.pca import fit_dataset

    root = tmp_path_factory.mktemp("ut") / "data"
    shutil.copytree(data_tiny, root)
    for d in ("D0", "D1", "D2"):
        fit_dataset(d, root, components=16, progress=False)
    return root


def cfg(*ov: str) -> dict:
    return load_config("tiny", ["train.threads=1", *ov])


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory) -> Path:
    """Two epochs on D0..D5 (no arkit51 head: the annotation-transfer test adds it)."""
    out = tmp_path_factory.mktemp("short") / "run"
    train(data, ALL[:6], out, cfg("train.epochs=2"), progress=False)
    return out


def _unitalker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "unitalker.cli", *args], capture_output=True, text=True, env=ENV)
    if check and r.returncode:
        raise AssertionError(r.stderr[-2000:])
    return r


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ck.resolve(run)))


# -------------------------------------------------------------------------------------------- resume
def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    args = ["train", "--data", str(data), "--datasets", "D1,D3", "--config", "tiny", "--no-progress",
            "train.epochs=4", "train.batch_size=2", "train.checkpoint_every_steps=3", "train.threads=1"]
    ref = tmp_path / "ref"
    _unitalker(*args, "--out", str(ref))
    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "unitalker.cli", *args, "--out", str(run)], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    t0 = time.time()
    while not latest.exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = ck.latest_tag(run)
    assert killed_at is not None and killed_at < ck.latest_tag(ref)
    _unitalker(*args, "--out", str(run))  # the same command resumes
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = (np.genfromtxt(r / "log.csv", delimiter=",", names=True)["loss"] for r in (ref, run))
    np.testing.assert_array_equal(la, lb)


def test_resume_with_another_config_is_refused(short_run, data):
    with pytest.raises(ConfigError, match="another config"):
        train(data, ALL[:6], short_run, cfg("train.epochs=3", "model.decoder.hidden=32"), progress=False)
    with pytest.raises(ConfigError, match="train.lr"):
        train(data, ALL[:6], short_run, cfg("train.epochs=3", "train.lr=0.5"), progress=False)
    with pytest.raises(ConfigError, match="same datasets"):
        train(data, ["D1"], short_run, cfg("train.epochs=3"), progress=False)


# ----------------------------------------------------------------------------------------------- DDP
def test_ddp_two_cpu_processes_on_gloo(data, tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "unitalker.cli", "train", "--data", str(data), "--datasets", "D1,D3", "--out", str(out),
                        "--config", "tiny", "--no-progress", "train.epochs=2", "train.threads=1", "train.batch_size=2"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "DDP: 2 ranks hold identical weights" in r.stderr
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    steps = np.genfromtxt(out / "log.csv", delimiter=",", names=True)["step"]
    sampler_batches = 2 * len(_sampler(data, ["D1", "D3"], batch_size=2, world=2, rank=0).epoch_batches(0))
    assert len(steps) == sampler_batches  # each optimizer step consumed one batch per rank
    load_model(out)  # the checkpoint loads


# ------------------------------------------------------------------------------------------- sampler
def _sampler(data, datasets, batch_size=4, world=1, rank=0, seed=0):
    c = load_config("tiny")
    srcs = open_sources(data, datasets, c)
    clips = ClipSet(srcs, identity_table(srcs), c, normalize=False)
    return BucketBatchSampler(clips, batch_size, 2, seed, rank, world, repeats=[s.duplicate for s in srcs])


def test_sampler_repeats_buckets_and_shards(data):
    s = _sampler(data, ["D0", "D1", "D3"])
    b0 = s.epoch_batches(0)
    flat = [i for b in b0 for i in b]
    counts = np.bincount(flat, minlength=len(s.clips))
    dup = {"D0": 10, "D1": 5, "D3": 1}  # the config's default data.duplicate (the paper's list)
    for i, (si, _) in enumerate(s.clips.items):
        assert counts[i] == dup[s.clips.sources[si].spec.id]
    assert s.epoch_batches(0) == b0 and s.epoch_batches(1) != b0  # a function of (seed, epoch)
    for b in b0:  # bucketed: lengths sorted inside a batch
        fr = [s.clips.frames[i] for i in b]
        assert fr == sorted(fr)
    shards = [_sampler(data, ["D0", "D1", "D3"], world=2, rank=r).epoch_batches(0) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    together = sorted(map(tuple, shards[0] + shards[1]))
    assert set(map(tuple, b0)) == set(together)


def test_fraction_selects_a_seeded_subset():
    ids = [f"s{i}" for i in range(10)]
    half = select_fraction(ids, 0.5, 42)
    assert len(half) == 5 and half == [i for i in ids if i in half] and half == select_fraction(ids, 0.5, 42)
    assert len(select_fraction(ids, 0.25, 42)) == 3 and select_fraction(ids, 1.0, 0) == ids


# --------------------------------------------------------------------------- fine-tuning and transfer
def test_annotation_transfer_new_head_and_pivot_identities(short_run, data, tmp_path):
    from unitalker.train.assemble import build_heads
    from unitalker.model.model import ModelSpec, UniTalker

    meta, state, _ = ck.read(short_run)
    c = load_config(None, ["train.threads=1"], base=meta["config"])
    srcs = open_sources(data, ["D1", "D6"], c)
    idt = identity_table(srcs)
    model = UniTalker(c, ModelSpec(build_heads(data, srcs, c), idt.n_rows, idt.keys), saved_encoder=meta["encoder"])
    notes = transfer(model, meta, state, reinit_decoder=False)
    sd = model.state_dict()
    assert torch.all(sd["heads.arkit51.linear.weight"] == 0) and torch.all(sd["heads.arkit51.linear.bias"] == 0)
    assert any("arkit51: new" in n for n in notes)
    assert sd["identity.weight"].shape[0] != state["identity.weight"].shape[0]
    assert torch.all(sd["identity.weight"] == state["identity.weight"][-1])  # every row = the old pivot
    for k in ("encoder.hf.encoder.layers.0.attention.q_proj.weight", "decoder.proj.weight",
              "heads.flame_5023_verts.linear.weight", "heads.flame_5023_verts.components"):
        assert torch.equal(sd[k], state[k]), k
    fresh = UniTalker(c, ModelSpec(build_heads(data, srcs, c), idt.n_rows, idt.keys), saved_encoder=meta["encoder"])
    transfer(fresh, meta, state, reinit_decoder=True)
    sf = fresh.state_dict()
    assert torch.equal(sf["encoder.hf.encoder.layers.0.attention.q_proj.weight"],
                       state["encoder.hf.encoder.layers.0.attention.q_proj.weight"])
    assert not torch.equal(sf["decoder.proj.weight"], state["decoder.proj.weight"])
    assert torch.all(sf["heads.flame_5023_verts.linear.weight"] == 0)


def test_finetune_command_on_a_new_annotation_with_fraction(short_run, data, tmp_path):
    out = tmp_path / "ft"
    r = _unitalker("finetune", "--from", str(short_run), "--data", str(data), "--datasets", "D1,D6", "--out", str(out),
                   "--fraction", "0.5", "--no-progress", "train.epochs=1")
    assert "head arkit51: new, zero-initialised" in r.stderr
    meta, _, _ = ck.read(out)
    assert [d["id"] for d in meta["datasets"]] == ["D1", "D6"]
    assert {d["id"]: d["n_train"] for d in meta["datasets"]} == {"D1": 2, "D6": 1}  # ceil(4/2), ceil(2/2)
    assert meta["init_from"].endswith(".safetensors") and meta["config"]["data"]["fraction"] == 0.5
    bad = _unitalker("finetune", "--from", str(short_run), "--data", str(data), "--datasets", "D1", "--out",
                     str(tmp_path / "ft2"), "model.decoder.hidden=32", check=False)
    assert bad.returncode == 1 and "another config" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------------- predict
def test_predictions_are_native_units_with_ground_truth_frames(data, tmp_path):
    """With lr=0 every head stays zero, so a prediction is exactly template + the PCA mean (native units):
    this pins the scale handling (D0 scale 0.2, D2 scale 0.001) end to end."""
    from a2fbench.spaces.pca import load_for

    run = tmp_path / "run"
    train(data, ["D0", "D2", "D3"], run, cfg("train.epochs=1", "train.lr=0"), progress=False)
    loaded = load_model(run)
    for d in ("D0", "D2", "D3"):
        ds = a2fbench.open_dataset(data, d)
        mean = load_for(data, d).mean.astype(np.float64) if d != "D3" else 0.0
        n = 0
        for sid, p in predict_split(loaded, data, d, "test", torch.device("cpu"), progress=False):
            seq = ds[sid]
            assert p.shape == seq.motion.shape and p.dtype == np.float32
            want = ds.template(seq.subject).astype(np.float64)[None] + mean
            np.testing.assert_allclose(p, np.broadcast_to(want, p.shape), rtol=1e-5, atol=1e-5 * np.abs(want).max())
            n += 1
        assert n == len(ds.split("test"))


def test_predict_command_and_errors(short_run, data, tmp_path):
    out = tmp_path / "pred"
    r = _unitalker("predict", "--checkpoint", str(short_run), "--data", str(data), "--dataset", "D1", "--out", str(out),
                   "--no-progress")
    ds = a2fbench.open_dataset(data, "D1")
    assert sorted(p.stem for p in out.glob("*.npy")) == sorted(ds.split("test"))
    ev = subprocess.run([sys.executable, "-m", "a2fbench.cli", "evaluate", str(out), "--dataset", "D1", "--data",
                         str(data), "--out", str(tmp_path / "r.json")], capture_output=True, text=True, env=ENV)
    assert ev.returncode == 0, ev.stderr
    bad = _unitalker("predict", "--checkpoint", str(short_run), "--data", str(data), "--dataset", "D7", "--out",
                     str(tmp_path / "p7"), check=False)
    assert bad.returncode == 1 and "unknown head" in bad.stderr and "arkit51" in bad.stderr
    assert not (tmp_path / "p7").exists()
    bad = _unitalker("predict", "--checkpoint", str(short_run), "--data", str(data), "--dataset", "D1", "--out",
                     str(tmp_path / "p8"), "--device", "cuda", check=False)
    if not torch.cuda.is_available():
        assert bad.returncode == 1 and "expected a CUDA GPU" in bad.stderr
    assert r.returncode == 0
