"""UniTalker network pieces against stock modules and closed forms (no prepared data needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from a2fbench.errors import ConfigError
from unitalker.model.config import load_config, parse_overrides
from unitalker.model.encoder import AudioEncoder, interpolate_frames
from unitalker.model.loss import Eq2Loss
from unitalker.model.model import Head, HeadSpec, ModelSpec, TCNDecoder, UniTalker

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")

TINY_W2V2 = {"name": "facebook/wav2vec2-large-xlsr-53", "pretrained": False, "freeze_feature_extractor": True,
             "attention": "sdpa", "normalize_audio": "auto",
             "arch": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                      "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
                      "hidden_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0, "layerdrop": 0.0,
                      "mask_time_prob": 0.0}}


def tiny_cfg(*ov: str) -> dict:
    return load_config("tiny", list(ov))


# ------------------------------------------------------------------------------------------ config
def test_config_layers_defaults_file_and_overrides():
    cfg = tiny_cfg("train.epochs=3", "train.lr=1e-4", "data.duplicate=[1,2,3,4,5,6,7,8]")
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["lr"] == pytest.approx(1e-4)
    assert cfg["model"]["encoder"]["arch"]["hidden_size"] == 64  # from tiny.yaml
    assert cfg["train"]["pca_weight"] == 0.01  # from defaults.yaml
    assert cfg["data"]["duplicate"] == [1, 2, 3, 4, 5, 6, 7, 8]
    b = load_config("unitalker-b")
    assert b["model"]["encoder"]["name"] == "microsoft/wavlm-base-plus" and b["model"]["pca_dim"] == 512
    assert parse_overrides(["a.b=1e-3"]) == {"a": {"b": 1e-3}}


@pytest.mark.parametrize("ov, match", [
    (["train.epohcs=3"], "did you mean train.epochs"),
    (["train.epochs=many"], "expected a number"),
    (["model.decoder.type=lstm"], "expected one of conv, transformer"),
    (["train"], "key=value"),
    (["train.pivot_prob=2"], "probability"),
])
def test_config_errors_are_one_line(ov, match):
    with pytest.raises(ConfigError, match=match) as e:
        tiny_cfg(*ov)
    assert "\n" not in str(e.value)


def test_duplicate_takes_any_dataset_and_merges_with_the_default_mapping():
    """docs/unitalker.md: data.duplicate is a mapping dataset -> passes for any dataset (absent: 1)."""
    assert tiny_cfg("data.duplicate={D5: 2}")["data"]["duplicate"] == {"D0": 10, "D1": 5, "D2": 4, "D5": 2}
    assert tiny_cfg("data.duplicate={D0: 3, D7: 1}")["data"]["duplicate"] == {"D0": 3, "D1": 5, "D2": 4, "D7": 1}
    for bad, match in [("{D5: 0}", "positive integers"), ("{D5: 2.5}", "positive integers"),
                       ("{D5: true}", "positive integers"), ("{D5: x}", "positive integers"),
                       ("[1, 0]", "positive integers"), ("5", "expected a mapping"),
                       ("{D9: 2}", "unknown config key 'data.duplicate.D9'"), ("{d5: 2}", "did you mean 'D5'")]:
        with pytest.raises(ConfigError, match=match):
            tiny_cfg(f"data.duplicate={bad}")


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_config("tinny")


# ----------------------------------------------------------------------------------------- encoder
def _clips(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, generator=g) * 0.3 for n in lengths]
    batch = torch.zeros(len(xs), max(lengths))
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    return xs, batch, torch.tensor(lengths)


@pytest.mark.parametrize("enc_cfg", ["wavlm", "wav2vec2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_padded_batch_equals_stock_model_per_clip(enc_cfg, attention):
    """Our batched path (masked GroupNorm, key padding, SDPA or eager) == transformers' model on each clip alone."""
    torch.manual_seed(0)
    cfg = tiny_cfg()["model"]["encoder"] if enc_cfg == "wavlm" else TINY_W2V2
    enc = AudioEncoder(cfg, attention).eval()
    assert enc.model_type == enc_cfg
    xs, batch, n = _clips([16000, 11000, 7300])
    with torch.no_grad():
        out, flen = enc(batch, n)
        for i, x in enumerate(xs):
            enc.set_attention("eager")  # the stock module as transformers runs it
            ref = enc.hf(x[None]).last_hidden_state[0]
            enc.set_attention(attention)
            assert int(flen[i]) == ref.shape[0]
            torch.testing.assert_close(out[i, : flen[i]], ref, atol=2e-5, rtol=1e-4)


def test_wavlm_sdpa_matches_eager_with_gradients():
    torch.manual_seed(1)
    no_dropout = tiny_cfg("model.encoder.arch.hidden_dropout=0.0", "model.encoder.arch.feat_proj_dropout=0.0")
    enc = AudioEncoder(no_dropout["model"]["encoder"], "sdpa").train()  # gradients flow, no random masks
    _, batch, n = _clips([12000, 9000], seed=3)
    grads = {}
    outs = {}
    for mode in ("sdpa", "eager"):
        enc.zero_grad()
        enc.set_attention(mode)
        o, _ = enc(batch, n)
        o[0, :10].sum().backward()
        outs[mode] = o.detach()
        grads[mode] = enc.hf.encoder.layers[0].attention.q_proj.weight.grad.clone()
    torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(grads["sdpa"], grads["eager"], atol=1e-5, rtol=1e-4)


def test_interpolate_frames_matches_F_interpolate_align_corners():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 50, 6, generator=g)
    src, dst = torch.tensor([50, 34, 7]), torch.tensor([30, 61, 1])
    out = interpolate_frames(h, src, dst)
    assert out.shape == (3, 61, 6)
    for b in range(3):
        ref = F.interpolate(h[b:b + 1, : src[b]].transpose(1, 2), size=int(dst[b]), mode="linear",
                            align_corners=True).transpose(1, 2)[0]
        torch.testing.assert_close(out[b, : dst[b]], ref, atol=1e-5, rtol=1e-5)
        assert torch.all(out[b, dst[b]:] == 0)


def test_unitalker_b_parameter_count_matches_the_paper_code():
    """Random-weight UniTalker-B: 96.05 M parameters, encoder 94.38 M (performance-notes.md, the paper's code)."""
    from unitalker.infer.bench import registry_spec

    cfg = load_config("unitalker-b", ["model.encoder.pretrained=false"])
    m = UniTalker(cfg, registry_spec(cfg))
    n = sum(p.numel() for p in m.parameters())
    e = sum(p.numel() for p in m.encoder.parameters())
    assert round(e / 1e6, 2) == 94.38
    assert round(n / 1e6, 2) == 96.05
    assert not any(p.requires_grad for p in m.encoder.hf.feature_extractor.parameters())  # CNN frozen


def test_pretrained_from_local_folder(tmp_path):
    torch.manual_seed(0)
    enc = AudioEncoder(tiny_cfg()["model"]["encoder"])
    enc.hf.save_pretrained(tmp_path / "enc")
    cfg = dict(tiny_cfg()["model"]["encoder"], name=str(tmp_path / "enc"), pretrained=True, arch={})
    again = AudioEncoder(cfg)
    for (k, a), (_, b) in zip(enc.hf.state_dict().items(), again.hf.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_pretrained_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = dict(load_config("unitalker-b")["model"]["encoder"])
    with pytest.raises(ConfigError, match="pretrained=false"):
        AudioEncoder(cfg)


# ----------------------------------------------------------------------------------- decoder, heads
def test_tcn_decoder_padding_does_not_leak():
    torch.manual_seed(0)
    dec = TCNDecoder(8, 16, 4, 3, 0.0).eval()
    h = torch.randn(2, 20, 8)
    ident = torch.randn(2, 4)
    mask = torch.arange(20)[None] < torch.tensor([20, 13])[:, None]
    h_pad = h.clone()
    h_pad[1, 13:] = 100.0  # garbage after the end
    out = dec(h_pad, ident, mask)
    alone = dec(h[1:2, :13], ident[1:2], torch.ones(1, 13, dtype=torch.bool))
    torch.testing.assert_close(out[1, :13], alone[0], atol=1e-5, rtol=1e-5)


def test_heads_are_zero_initialised_and_pca_decodes():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((30, 4)))
    mean = rng.standard_normal(30)
    h = Head(8, 30, {"components": q.T, "mean": mean})
    x = torch.randn(5, 8)
    off, z = h(x)
    assert torch.all(z == 0) and torch.allclose(off, torch.tensor(mean, dtype=torch.float32).expand(5, 30))
    lin = Head(8, 7)
    off, z = lin(x)
    assert z is None and torch.all(off == 0)


def test_pca_subspace_loss_equals_vertex_mse_and_its_gradient():
    """Eq. 2 computed in the PCA subspace == MSE of decoded vertices + 0.01 PCA MSE (value and gradient)."""
    torch.manual_seed(0)
    D, k, T = 60, 5, 9
    q, _ = torch.linalg.qr(torch.randn(D, k, dtype=torch.float64))
    C, mean = q.T.float(), torch.randn(D) * 0.1
    head = Head(4, D, {"components": C.numpy(), "mean": mean.numpy()})
    gt = torch.randn(2, T, D) * 0.05
    tmpl = torch.randn(2, D) * 0.2
    n_frames = torch.tensor([T, 6])
    x = (gt - tmpl[:, None] - mean).double()
    zt = x @ C.double().T
    r2 = (x * x).sum(-1) - (zt * zt).sum(-1)
    z = torch.randn(2, T, k, requires_grad=True)
    loss_fn = Eq2Loss({}, {}, {"sp": D}, 0.01, 1e-4)
    batch = {"n_frames": n_frames, "groups": {"sp": {"rows": torch.tensor([0, 1]), "z": zt.float(), "r2": r2.float()}}}
    ours, _ = loss_fn({"sp": (None, z)}, batch)
    (g_ours,) = torch.autograd.grad(ours, z)
    # the obvious way: decode all D coordinates
    pred = z @ C + mean + tmpl[:, None]
    mask = (torch.arange(T)[None] < n_frames[:, None]).float()
    per = ((pred - gt) ** 2).mean(-1) + 0.01 * ((z - zt.float()) ** 2).mean(-1)
    ref = ((per * mask).sum(1) / mask.sum(1)).mean()
    (g_ref,) = torch.autograd.grad(ref, z)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-8)


def test_model_forward_shapes_and_batch_equivalence():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    spec = ModelSpec([HeadSpec("a", 12), HeadSpec("b", 5)], 4, ["D9/x", "D9/y", "D9/z"])
    m = UniTalker(cfg, spec).eval()
    for p in m.heads.parameters():  # non-zero heads so that the check means something
        torch.nn.init.normal_(p)
    xs, batch, n = _clips([16000, 9600])
    frames = torch.tensor([30, 18])
    with torch.no_grad():
        out = m(batch, n, frames, torch.tensor([0, 3]), {"a": torch.tensor([0, 1]), "b": torch.tensor([1])})
        assert out["a"][0].shape == (2, 30, 12) and out["b"][0].shape == (1, 30, 5)
        alone = m(xs[1][None], n[1:], frames[1:], torch.tensor([3]), {"a": torch.tensor([0])})
    torch.testing.assert_close(out["a"][0][1, :18], alone["a"][0][0], atol=1e-4, rtol=1e-4)
    assert m.pivot == 3


# ------------------------------------------------------------------------------ transformer decoder
def _slow_transformer_decoder(dec, h, ident):
    """UniTalker's transformer decoder for one clip, written out frame by frame in float64 (eval: no dropout)."""
    P, H = dec.period, dec.heads
    lay = dec.transformer.layers[0]
    W = {k: v.detach().double().numpy() for k, v in lay.state_dict().items()}
    h, ident = h.double().numpy(), ident.double().numpy()
    T, C = h.shape[0], ident.shape[0]
    dh = C // H
    mem = h @ dec.proj.weight.detach().double().numpy().T + dec.proj.bias.detach().double().numpy()
    pe = dec.ppe.double().numpy()
    q0 = np.stack([ident + pe[t % P] for t in range(T)])

    def ln(x, n):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * W[f"{n}.weight"] + W[f"{n}.bias"]

    Wi, bi = W["self_attn.in_proj_weight"], W["self_attn.in_proj_bias"]
    Q, K, V = (q0 @ Wi[i * C:(i + 1) * C].T + bi[i * C:(i + 1) * C] for i in range(3))
    slopes = dec.slopes.double().numpy()
    att = np.zeros((T, C))
    for n in range(H):
        sl = slice(n * dh, (n + 1) * dh)
        for t in range(T):
            s_ = np.array([Q[t, sl] @ K[s, sl] / np.sqrt(dh) - slopes[n] * ((t - s) // P) for s in range(t + 1)])
            w = np.exp(s_ - s_.max())
            att[t, sl] = (w / w.sum()) @ V[: t + 1, sl]
    x = ln(q0 + att @ W["self_attn.out_proj.weight"].T + W["self_attn.out_proj.bias"], "norm1")
    Wc, bc = W["multihead_attn.in_proj_weight"], W["multihead_attn.in_proj_bias"]
    cross = (mem @ Wc[2 * C:].T + bc[2 * C:]) @ W["multihead_attn.out_proj.weight"].T + W["multihead_attn.out_proj.bias"]
    x = ln(x + cross, "norm2")  # one audio frame per query: softmax weight 1 on it
    ff = np.maximum(x @ W["linear1.weight"].T + W["linear1.bias"], 0) @ W["linear2.weight"].T + W["linear2.bias"]
    return ln(x + ff, "norm3")


def test_transformer_decoder_matches_the_written_out_official_one():
    """Queries = identity + periodic PE (period 30), causal self-attention with bias -slope*floor((t-s)/30),
    cross-attention of frame t to audio frame t, post-norm FF: our module == the computation written out."""
    from unitalker.model.model import TransformerDecoder

    torch.manual_seed(0)
    dec = TransformerDecoder(12, 16, 4, 32, 1, 30, 0.1).eval()
    h, ident = torch.randn(70, 12), torch.randn(16)
    with torch.no_grad():
        ours = dec(h[None], ident[None], torch.ones(1, 70, dtype=torch.bool))[0]
    ref = _slow_transformer_decoder(dec, h, ident)
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-5)  # float32 vs float64, values O(1), <= 70-term sums
    assert dec.slopes.tolist() == [0.25, 0.0625, 0.015625, 0.00390625]


def test_transformer_decoder_is_causal_and_padding_free():
    from unitalker.model.model import TransformerDecoder

    torch.manual_seed(1)
    dec = TransformerDecoder(8, 16, 4, 32, 1, 30, 0.0).eval()
    h, ident = torch.randn(2, 50, 8), torch.randn(2, 16)
    mask = torch.arange(50)[None] < torch.tensor([50, 33])[:, None]
    with torch.no_grad():
        out = dec(h, ident, mask)
        later = h.clone()
        later[0, 20:] += 5.0  # frames after 19 change: frames up to 19 must not
        out2 = dec(later, ident, mask)
        alone = dec(h[1:2, :33], ident[1:2], torch.ones(1, 33, dtype=torch.bool))
    torch.testing.assert_close(out2[0, :20], out[0, :20], atol=1e-6, rtol=0)
    assert not torch.allclose(out2[0, 20:], out[0, 20:])
    torch.testing.assert_close(out[1, :33], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.all(out[1, 33:] == 0)


def test_model_with_transformer_decoder_uses_a_decoder_wide_identity():
    cfg = tiny_cfg("model.decoder.type=transformer")
    m = UniTalker(cfg, ModelSpec([HeadSpec("a", 6)], 3, ["D9/x", "D9/y"])).eval()
    assert m.identity.weight.shape == (3, cfg["model"]["decoder"]["hidden"])
    xs, batch, n = _clips([16000, 9600])
    with torch.no_grad():
        out = m(batch, n, torch.tensor([30, 18]), torch.tensor([0, 2]), {"a": torch.tensor([0, 1])})
    assert out["a"][0].shape == (2, 30, 6)
