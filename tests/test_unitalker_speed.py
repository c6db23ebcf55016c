"""UniTalker speed work (issue 14), checked on the CPU: the CNN feature cache against the uncached path, the
GEMM form of the CNN against the stock convolutions, the fast inference mode against the reference mode, the
batched loss against the per-clip formula, loader workers' set-up, the length grid, no host reads in a step."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unitalker.model import checkpoint as ck
from unitalker.train.batches import bucket, worker_init
from unitalker.infer.bench import registry_spec, reference_model, rel_err
from unitalker.model.config import load_config
from unitalker.model.encoder import AudioEncoder
from unitalker.model.fastcnn import GemmCNN
from unitalker.infer.fastinfer import FastForward
from unitalker.model.loss import Eq2Loss
from unitalker.model.model import UniTalker
from unitalker.train.loop import Trainer

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")

#: float32 and bfloat16 unit roundoff (round to nearest: half an ulp at 1)
U32, U16 = 2.0 ** -24, 2.0 ** -8

TINY_W2V2 = {"name": "facebook/wav2vec2-large-xlsr-53", "pretrained": False, "freeze_feature_extractor": True,
             "attention": "sdpa", "normalize_audio": "auto",
             "arch": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
                      "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}}


@pytest.fixture(scope="module")
def data(data_tiny, tmp_path_factory) -> Path:
    from a2fbench.spaces.pca import fit_dataset

    root = tmp_path_factory.mktemp("speed") / "data"
    shutil.copytree(data_tiny, root)
    for d in ("D0", "D1"):
        fit_dataset(d, root, components=16, progress=False)
    return root


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ck.resolve(run)))


def _losses(run: Path) -> np.ndarray:
    import csv

    with open(run / "log.csv") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f)])


# ----------------------------------------------------------------------------------- the CNN feature cache
def test_feature_cache_is_bit_equal_at_batch_1_and_close_when_padded(data, tmp_path):
    """A frozen CNN: caching its output once gives, at batch 1 (each clip alone, as the cache computes it), the
    same weights bit for bit after a warm-up epoch and an encoder epoch; in padded batches the features differ
    by rounding only (measured <= 5e-7 relative: the first layer's GroupNorm sums run over another length), and
    the losses agree to float32 rounding carried over the steps: 1e-5 relative, the acceptance tolerance."""
    base = ["train.threads=1", "model.encoder.freeze_feature_extractor=true", "train.warmup_epochs=1",
            "train.epochs=2", "data.duplicate={D1: 1}", "train.val_every_epochs=9"]
    runs, weights = {}, {}
    for bs in (1, 4):
        for cache in (True, False):
            cfg = load_config("tiny", base + [f"train.batch_size={bs}", f"train.cache_features={str(cache).lower()}"])
            t = Trainer(data, ["D1", "D3"], tmp_path / f"b{bs}-{cache}", cfg, progress=False)
            t.max_steps = 2 * len(t.sampler) - 1  # into the encoder epoch, stopping before its validation
            runs[bs, cache] = t.fit()
            weights[bs, cache] = {k: v.clone() for k, v in t.model.state_dict().items()}
            for s in t.sources:
                s.ds.close()
    a, b = weights[1, True], weights[1, False]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(_losses(runs[1, True]), _losses(runs[1, False]))
    la, lb = _losses(runs[4, True]), _losses(runs[4, False])
    assert len(la) == len(lb) >= 6
    np.testing.assert_allclose(la, lb, rtol=1e-5, atol=0)


def test_spec_augment_without_syncs_draws_and_applies_the_same_masks_as_transformers():
    """Our SpecAugment (host lengths, ``where``) == transformers' ``_mask_hidden_states`` (device lengths, boolean
    indexing) for the same numpy seed: the same draws, so bit for bit the same output."""
    ec = {**load_config("tiny")["model"]["encoder"], "arch": {**load_config("tiny")["model"]["encoder"]["arch"],
                                                              "mask_time_prob": 0.3, "mask_time_length": 3}}
    torch.manual_seed(0)
    enc = AudioEncoder(ec).train()
    h = torch.randn(3, 40, 64)
    lens = torch.tensor([40, 31, 17])
    for ln in (lens, None):
        np.random.seed(5)
        ours = enc._spec_augment(h.clone(), ln)
        np.random.seed(5)
        am = None if ln is None else torch.arange(40)[None] < ln[:, None]
        ref = enc.hf._mask_hidden_states(h.clone(), attention_mask=am)
        assert torch.equal(ours, ref) and not torch.equal(ours, h)


# ---------------------------------------------------------------------------------------- CNN as GEMMs
@pytest.mark.parametrize("enc_cfg", ["tiny", "w2v2"])
def test_gemm_cnn_equals_stock_convolutions(enc_cfg):
    """float32: every output is a sum of k*Cin <= 3*64 products in another order, over 7 layers; the norm-wise
    relative error stays under 7 layers x sqrt(192) x u32 ~ 6e-6 (measured ~1e-6)."""
    torch.manual_seed(0)
    ec = load_config("tiny")["model"]["encoder"] if enc_cfg == "tiny" else TINY_W2V2
    enc = AudioEncoder(ec).eval()
    lens = torch.tensor([16000, 23457, 31999])
    audio = torch.zeros(3, 32000)
    for i, n in enumerate(lens.tolist()):
        audio[i, :n] = 0.3 * torch.randn(n)
    g = GemmCNN(enc)
    with torch.no_grad():
        for ln in (lens, None):
            ref, out = enc._cnn(audio, ln), g(audio, ln)
            assert out.shape == ref.shape
            fl = enc.feature_lengths(lens if ln is not None else torch.full((3,), 32000))
            for i, n in enumerate(fl.tolist()):
                assert rel_err(out[i, :n], ref[i, :n]) < 7 * 192 ** 0.5 * U32


# ----------------------------------------------------------------------------------- fast vs reference mode
def test_fast_mode_is_within_bf16_tolerance_of_the_reference_mode():
    """The fast mode (tiny config, CPU) against the reference mode on the same 2 s clips.

    float32 (the CPU default): SDPA and the GEMM CNN only reorder float32 sums: < 1e-5.
    bf16 trunk (the CUDA default, forced here): every tensor entering a product is rounded to bf16, an error of
    at most u16 = 2^-8 per element with a random sign. Along the tiny trunk's data path there are about R = 40
    such roundings (7 CNN layers, the projection, 2 transformer layers x 6 products, 3 decoder blocks x 2 convs,
    their weights and activations), which add in quadrature: sqrt(R) x u16 / sqrt(3) ~ 1.4e-2 (norm-wise).
    Measured: 6e-3 to 1e-2 over seeds and CNN variants. The bound asserted is that estimate, 1.4e-2."""
    cfg = load_config("tiny")
    torch.manual_seed(3)
    model = UniTalker(cfg, registry_spec(cfg))
    dev, B, n, T = torch.device("cpu"), 2, 32000, 60
    x = 0.1 * torch.randn(B, n)
    ref = reference_model(model, dev)
    with torch.inference_mode():
        rf = ref.features(x, torch.full((B,), n), torch.full((B,), T), torch.full((B,), ref.pivot))
    bound16 = (40 ** 0.5) * U16 / 3 ** 0.5
    errs = {}
    for cnn, dt in (("conv-fp32", torch.float32), ("gemm-fp32", torch.float32), ("gemm-bf16", torch.bfloat16),
                    ("conv-fp32", torch.bfloat16)):
        ff = FastForward(model, dev, B, n, T, "flame_5023_verts", trunk_dtype=dt, cnn=cnn)
        errs[cnn, dt] = rel_err(ff.features(x), rf)
        out = ff(x)["flame_5023_verts"][0]
        assert out.shape == (B, T, 15069) and torch.isfinite(out).all()
    assert errs["conv-fp32", torch.float32] < 1e-5 and errs["gemm-fp32", torch.float32] < 1e-5
    assert 1e-4 < errs["gemm-bf16", torch.bfloat16] < bound16, errs  # bf16 really ran, within the bound
    assert errs["conv-fp32", torch.bfloat16] < bound16
    auto = FastForward(model, dev, 1, n, T, "flame_5023_verts")  # CPU: picks the faster float32 CNN
    assert set(auto.timings) == {"conv-fp32", "gemm-fp32"} and auto.describe()["graph"] is False


# -------------------------------------------------------------------------------------------- the loss
def test_batched_loss_equals_the_per_clip_formula():
    """One batched pass over three heads (PCA, blendshapes with a converter, plain vertices) == the per-clip
    Eq. 2 computed clip by clip, in float64 (so the reordering leaves ~1e-16)."""
    torch.manual_seed(0)
    T, D, k, P, V = 7, 12, 3, 4, 5
    q, _ = torch.linalg.qr(torch.randn(D, k, dtype=torch.float64))
    C = q.T
    basis = torch.randn(P, 3 * V, dtype=torch.float64)

    class Blend(torch.nn.Module):
        def forward(self, w):
            return (w @ basis).reshape(*w.shape[:-1], V, 3)

    loss_fn = Eq2Loss({"bs": Blend(), "vx": None}, {"bs": 2.0}, {"pca": D, "bs": 3 * V, "vx": 6}, 0.01, 1e-4).double()
    n_frames = torch.tensor([7, 5, 3, 6, 4])
    rows = {"pca": torch.tensor([0, 3]), "bs": torch.tensor([1, 4]), "vx": torch.tensor([2])}
    gt = {"pca": torch.randn(2, T, D, dtype=torch.float64), "bs": torch.randn(2, T, P, dtype=torch.float64),
          "vx": torch.randn(1, T, 6, dtype=torch.float64)}
    tmpl = {sp: torch.randn(len(r), gt[sp].shape[-1], dtype=torch.float64) for sp, r in rows.items()}
    x = gt["pca"] - tmpl["pca"][:, None]
    zt = x @ C.T
    groups = {"pca": {"rows": rows["pca"], "z": zt, "r2": (x * x).sum(-1) - (zt * zt).sum(-1)},
              "bs": {"rows": rows["bs"], "motion": gt["bs"], "template": tmpl["bs"]},
              "vx": {"rows": rows["vx"], "motion": gt["vx"], "template": tmpl["vx"]}}
    z = torch.randn(2, T, k, dtype=torch.float64)
    off = {"bs": torch.randn(2, T, P, dtype=torch.float64), "vx": torch.randn(1, T, 6, dtype=torch.float64)}
    outputs = {"pca": (None, z), "bs": (off["bs"], None), "vx": (off["vx"], None)}
    total, parts = loss_fn(outputs, {"n_frames": n_frames, "groups": groups})
    per = []
    for sp, r in rows.items():
        for j, row in enumerate(r.tolist()):
            t = int(n_frames[row])
            if sp == "pca":
                pred = z[j, :t] @ C + tmpl[sp][j]
                per.append(((pred - gt[sp][j, :t]) ** 2).mean() + 0.01 * ((z[j, :t] - zt[j, :t]) ** 2).mean())
            elif sp == "bs":
                pred = off[sp][j, :t] + tmpl[sp][j]
                verts = lambda w: (w / 2.0) @ basis * 2.0  # noqa: E731  (the converter in scaled units)
                per.append(((verts(pred) - verts(gt[sp][j, :t])) ** 2).mean()
                           + 1e-4 * ((pred - gt[sp][j, :t]) ** 2).mean())
            else:
                per.append(((off[sp][j, :t] + tmpl[sp][j] - gt[sp][j, :t]) ** 2).mean())
    torch.testing.assert_close(total, torch.stack(per).mean(), rtol=1e-12, atol=0)
    assert parts.shape == (3,) and float(parts[1]) > 0 and float(parts[2]) > 0


# -------------------------------------------------------------------------------------- loader, shapes
class _Probe(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[int, int]:
        from threadpoolctl import threadpool_info

        return torch.get_num_threads(), max(p["num_threads"] for p in threadpool_info())


def test_loader_workers_run_one_torch_and_one_blas_thread():
    dl = torch.utils.data.DataLoader(_Probe(), num_workers=1, worker_init_fn=worker_init, batch_size=None)
    assert [tuple(x) for x in dl] == [(1, 1), (1, 1)]


def test_length_grid_is_small_and_tight():
    grid = sorted({bucket(n) for n in range(1, 1201)})
    assert len(grid) < 100 and grid[:16] == list(range(1, 17))
    for n in range(1, 1201):
        assert n <= bucket(n) <= max(16, n * (1 + 1 / 16) + 1)


class _HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads, self.ops = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func.overloadpacket.__name__ in ("_local_scalar_dense", "nonzero"):
            self.reads += 1
        return func(*args, **(kwargs or {}))

    def __call__(self) -> "_HostReads":
        return self


def test_a_training_step_reads_nothing_back_and_targets_are_precomputed(data, tmp_path):
    """No .item()/float()/bool(t)/boolean indexing inside a step (each is a GPU sync on CUDA); the loss and its
    parts reach the log one step later. Targets exist for every clip before the first step."""
    cfg = load_config("tiny", ["train.threads=1", "train.warmup_epochs=0", "train.epochs=5"])
    t = Trainer(data, ["D0", "D3", "D5"], tmp_path / "run", cfg, progress=False, max_steps=3)
    probe = _HostReads()
    t.step_context = probe
    t.fit()
    for s in t.sources:
        s.ds.close()
    assert probe.ops > 100 and probe.reads == 0
    assert len(t.clips._cache) == len(t.clips)
    assert len(_losses(tmp_path / "run")) == 3
