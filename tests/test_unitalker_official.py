"""The official UniTalker release in our toolkit: import-official / export-official round trips, identities,
templates, windows, and bad input. Checkpoints are built from the facts (tests/_official_helpers.py), tiny."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _cli_helpers import run_unitalker
from _official_helpers import ALL, ANNOT, K, official_state_dict, release

from unitalker.model import checkpoint as ck
from unitalker.release.convert import export_official, import_official
from unitalker.infer.predict import infer, run_batch, windows
from unitalker.model.load import load_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
SR = 16000
D5_NAMES = [f"ff_{i:03d}" for i in range(719)]


@pytest.fixture(scope="module")
def rel(tmp_path_factory) -> Path:
    return release(tmp_path_factory.mktemp("rel") / "unitalker_data_release_V1", names={"D5": D5_NAMES})


@pytest.fixture(scope="module")
def b_run(rel, tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("b")
    sd = official_state_dict()
    torch.save(sd, root / "UniTalker-B.pt")
    return import_official(root / "UniTalker-B.pt", rel, root / "run"), root, sd


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 3 * t) + 0.01 * rng.standard_normal(t.size)
            ).astype(np.float32)


# ------------------------------------------------------------------------------------------ import
def test_import_keeps_every_tensor_and_the_release_pca(b_run, rel):
    run, _, sd = b_run
    meta, state, aux = ck.read(run)
    assert meta["official"]["encoder"] == "microsoft/wavlm-base-plus"
    assert meta["config"]["model"]["decoder"]["type"] == "conv"
    assert meta["encoder"]["normalize"] is False
    assert state["identity.weight"].shape == (935, 8) and torch.equal(state["identity.weight"],
                                                                       sd["decoder.learnable_style_emb.weight"])
    assert torch.equal(state["decoder.blocks.0.residual.weight"],
                       sd["decoder.tcn.first_net.conv_layers.0.residual_layer.0.weight"])
    assert torch.equal(state["encoder.hf.encoder.pos_conv_embed.conv.parametrizations.weight.original1"],
                       sd["audio_encoder.encoder.pos_conv_embed.conv.parametrizations.weight.original1"])
    for d in ("D0", "D1", "D2"):  # the first K components and the mean, exactly as shipped
        from a2fbench.registry import get_spec

        spec = get_spec(d)
        z = np.load(rel / spec.unitalker.dirname / "pca.npz")
        np.testing.assert_array_equal(state[f"heads.{spec.space}.components"].numpy(), z["components_to_data"][:K])
        np.testing.assert_array_equal(state[f"heads.{spec.space}.mean"].numpy(), z["original_data_mean"])
        torch.testing.assert_close(state[f"heads.{spec.space}.linear.weight"], sd[f"out_head_dict.{ANNOT[d]}.weight"],
                                   rtol=0, atol=0)
    # templates in scaled units (D0 scale 0.2), one per identity row
    t0 = np.load(rel / "D0_BIWI" / "id_template.npy")[2].reshape(-1)
    np.testing.assert_allclose(aux["template.D0/#2"].numpy(), t0 * 0.2, rtol=1e-7)
    assert len(meta["model_spec"]["identities"]) == 934


def test_identities_official_order_names_and_pivot(b_run):
    loaded = load_model(b_run[0])
    idt = loaded.identities
    assert idt.keys[:6] == [f"D0/#{i}" for i in range(6)] and idt.pivot == 934
    assert idt.lookup("D3/#17") == 31 + 17 and idt.lookup("D5/ff_004") == 196 + 4 and idt.lookup("ff_718") == 914
    assert idt.keys[915] == "D6/#0" and idt.lookup("pivot") == 934 and idt.lookup("933") == 933


def test_export_then_import_is_bit_identical(b_run, rel, tmp_path):
    run, _, sd = b_run
    out = export_official(run, tmp_path / "back.pt")
    back = torch.load(out, weights_only=True)
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k
    run2 = import_official(out, rel, tmp_path / "run2")
    a, b = ck.read(run)[1], ck.read(run2)[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sf.write(tmp_path / "a.wav", speech(2.1), SR)
    y = [np.load(p / "a" / "D1.npy") for p in (infer(r, [tmp_path / "a.wav"], tmp_path / f"o{i}", heads="D1",
                                                     device="cpu")[0].parent for i, r in enumerate((run, run2)))]
    assert np.array_equal(y[0], y[1]) and y[0].shape == (round(2.1 * 30), 15069)


def test_weight_g_spelling_imports_to_the_same_model_and_exports_as_imported(rel, tmp_path):
    for sp in ("parametrizations", "weight_g"):
        torch.save(official_state_dict(["D1", "D3"], spelling=sp), tmp_path / f"{sp}.pt")
    a = import_official(tmp_path / "parametrizations.pt", rel, tmp_path / "a")
    b = import_official(tmp_path / "weight_g.pt", rel, tmp_path / "b")
    sa, sb = ck.read(a)[1], ck.read(b)[1]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    back = torch.load(export_official(b, tmp_path / "b.pt"), weights_only=True)
    assert "audio_encoder.encoder.pos_conv_embed.conv.weight_g" in back
    forced = torch.load(export_official(b, tmp_path / "c.pt", "parametrizations"), weights_only=True)
    assert "audio_encoder.encoder.pos_conv_embed.conv.parametrizations.weight.original0" in forced


def test_head_outputs_a_constant_closed_form_with_windows_and_template(rel, tmp_path):
    """Head weights zero, bias b: every frame = template + (b C + mean) / scale (PCA head), across 25 s windows
    and their cross-fades; with --template, the user's mesh replaces the template."""
    sd = official_state_dict(["D0", "D3"])
    g = torch.Generator().manual_seed(5)
    for d in ("D0", "D3"):
        sd[f"out_head_dict.{ANNOT[d]}.weight"].zero_()
        sd[f"out_head_dict.{ANNOT[d]}.bias"] = torch.randn(sd[f"out_head_dict.{ANNOT[d]}.bias"].shape, generator=g)
    torch.save(sd, tmp_path / "c.pt")
    run = import_official(tmp_path / "c.pt", rel, tmp_path / "run")
    sf.write(tmp_path / "long.wav", speech(47.3), SR, subtype="FLOAT")
    z = np.load(rel / "D0_BIWI" / "pca.npz")
    b = sd["out_head_dict.BIWI_23370_vertices.bias"].double().numpy()
    off = b @ z["components_to_data"][:K].astype(np.float64) + z["original_data_mean"]
    tmpl = np.load(rel / "D0_BIWI" / "id_template.npy").reshape(6, -1).astype(np.float64)
    infer(run, [tmp_path / "long.wav"], tmp_path / "o", heads="D0,D3", device="cpu")
    y = np.load(tmp_path / "o" / "long" / "D0.npy").astype(np.float64)
    assert y.shape == (round(47.3 * 25), 70110)
    want = tmpl.mean(0) + off / 0.2  # pivot: the mean template; offsets divided by BIWI's scale
    # float32 decoding (K=8 terms) and template storage: relative 1e-6 of the largest value
    np.testing.assert_allclose(y, np.broadcast_to(want, y.shape), atol=1e-6 * np.abs(want).max() * 10)
    y3 = np.load(tmp_path / "o" / "long" / "D3.npy").astype(np.float64)
    want3 = np.load(rel / "D3D4_3DETF/D3_HDTF/id_template.npy").mean(0)
    want3 = want3 + sd[f"out_head_dict.{ANNOT['D3']}.bias"].numpy()
    # not clamped to [0, 1]: the model's output, as the official code gives it
    np.testing.assert_allclose(y3, np.broadcast_to(want3, y3.shape), atol=1e-6)
    mesh = np.random.default_rng(1).normal(0, 1, (23370, 3))
    for name, write in (("m.npy", lambda p: np.save(p, mesh)), ("flat.npy", lambda p: np.save(p, mesh.reshape(-1))),
                        ("m.ply", lambda p: _trimesh(mesh).export(p)), ("m.obj", lambda p: _trimesh(mesh).export(p))):
        write(tmp_path / name)
        infer(run, [tmp_path / "long.wav"], tmp_path / name.replace(".", "_"), heads="D0", template=tmp_path / name,
              device="cpu")
        y = np.load(tmp_path / name.replace(".", "_") / "long" / "D0.npy").astype(np.float64)
        # .obj stores 6+ significant digits: compare at that precision
        tol = 1e-5 if name.endswith(".obj") else 1e-5 * np.abs(off).max() / 0.2
        np.testing.assert_allclose(y, np.broadcast_to(mesh.reshape(-1) + off / 0.2, y.shape), atol=tol, err_msg=name)


def _trimesh(v: np.ndarray):
    import trimesh

    return trimesh.Trimesh(vertices=v, faces=np.array([[0, 1, 2], [2, 3, 4]]), process=False)


def test_xlsr_family_normalises_every_window_again(rel, tmp_path, monkeypatch):
    """A wav2vec2 checkpoint imports with input normalisation on; infer normalises the clip, then each 25 s window
    again, as the official demo does (each window zero mean, unit variance, whatever its loudness)."""
    torch.save(official_state_dict(["D1"], kind="wav2vec2"), tmp_path / "l.pt")
    run = import_official(tmp_path / "l.pt", rel, tmp_path / "run")
    meta = ck.read(run)[0]
    assert meta["encoder"]["normalize"] is True and meta["official"]["encoder"] == "facebook/wav2vec2-large-xlsr-53"
    x = speech(46.0)
    x[20 * SR:] *= 10.0  # the second window is much louder than the whole clip
    sf.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    seen = []
    import unitalker.infer.predict as P

    def spy(model, audios, *a, **kw):
        seen.extend(a.numpy().astype(np.float64) for a in audios)
        return run_batch(model, audios, *a, **kw)

    monkeypatch.setattr(P, "run_batch", spy)
    infer(run, [tmp_path / "a.wav"], tmp_path / "o", heads="D1", device="cpu")
    assert [len(s) for s in seen] == [b - a for a, b in windows(len(x))]
    for s in seen:  # float32 sums over ~4e5 samples: 1e-4
        assert abs(s.mean()) < 1e-4 and abs(s.std() - 1) < 1e-4


def test_transformer_decoder_checkpoint_round_trips(rel, tmp_path):
    sd = official_state_dict(["D1", "D6"], decoder="transformer", period=25)
    torch.save(sd, tmp_path / "t.pt")
    run = import_official(tmp_path / "t.pt", rel, tmp_path / "run")
    cfg = ck.read(run)[0]["config"]["model"]["decoder"]
    assert cfg["type"] == "transformer" and cfg["transformer"]["period"] == 25 and cfg["transformer"]["ff"] == 32
    back = torch.load(export_official(run, tmp_path / "back.pt"), weights_only=True)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    sf.write(tmp_path / "a.wav", speech(1.5), SR)
    infer(run, [tmp_path / "a.wav"], tmp_path / "o", heads="D6", identity="D6/#3", device="cpu")
    assert np.isfinite(np.load(tmp_path / "o" / "a" / "D6.npy")).all()


def test_run_folder_serves_bench_and_config(b_run):
    from unitalker.infer.bench import bench

    rep = bench(str(b_run[0]), None, seconds=1.0, device="cpu", batch=2, runs=20)
    assert rep["params"] > rep["encoder_params"] > 0


# --------------------------------------------------------------------------------------- bad input
@pytest.fixture
def bad_inputs(rel, tmp_path) -> dict:
    sd = official_state_dict(["D1", "D3"])
    good = tmp_path / "good.pt"
    torch.save(sd, good)
    blob = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(blob[: len(blob) // 2])

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    torch.save({**sd, "x": Evil()}, tmp_path / "evil.pt", pickle_module=pickle)
    other = {f"encoder.layers.{i}.weight": torch.zeros(3) for i in range(4)}
    torch.save(other, tmp_path / "other.pt")
    wrong = dict(sd)
    wrong["decoder.audio_feature_map.weight"] = torch.zeros(16, 40)
    torch.save(wrong, tmp_path / "wrong.pt")
    import shutil

    nopca = shutil.copytree(rel, tmp_path / "nopca")
    (nopca / "D1_vocaset" / "pca.npz").unlink()
    width = shutil.copytree(rel, tmp_path / "width")
    np.savez(width / "D1_vocaset" / "pca.npz", components_to_data=np.zeros((16, 300), np.float32),
             original_data_mean=np.zeros(300, np.float32))
    few = shutil.copytree(rel, tmp_path / "few")
    np.savez(few / "D1_vocaset" / "pca.npz", components_to_data=np.zeros((4, 15069), np.float32),
             original_data_mean=np.zeros(15069, np.float32))
    return {"good": good, "tmp": tmp_path, "rel": rel}


@pytest.mark.parametrize("ckpt, release_dir, msg", [
    ("evil.pt", "rel", "refused without running it"),
    ("trunc.pt", "rel", "truncated or damaged"),
    ("other.pt", "rel", "audio_encoder.masked_spec_embed"),
    ("wrong.pt", "rel", "expected the official UniTalker layout"),
    ("good.pt", "nopca", "expected the release PCA of D1"),
    ("good.pt", "width", "expected components_to_data (K, 15069)"),
    ("good.pt", "few", "expected at least 8 components"),
    ("missing.pt", "rel", "found nothing"),
])
def test_import_bad_input_is_one_line_and_leaves_nothing(bad_inputs, ckpt, release_dir, msg, capsys, monkeypatch):
    tmp = bad_inputs["tmp"]
    rel = bad_inputs["rel"] if release_dir == "rel" else tmp / release_dir
    code, err = run_unitalker(monkeypatch, capsys, "import-official", str(tmp / ckpt), "--release", str(rel),
                              "--out", str(tmp / "run"))
    assert code == 1 and msg in err and "Traceback" not in err, err
    assert len([ln for ln in err.strip().splitlines() if ln.startswith("error:")]) == 1, err
    assert not (tmp / "run").exists() and not (tmp / "pwned").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".run")]  # no temporary folder left either


def test_other_models_keys_are_named_in_one_line(bad_inputs, capsys, monkeypatch):
    tmp = bad_inputs["tmp"]
    code, err = run_unitalker(monkeypatch, capsys, "import-official", str(tmp / "wrong.pt"), "--release",
                              str(bad_inputs["rel"]), "--out", str(tmp / "run"))
    assert code == 1 and "decoder.audio_feature_map.weight shaped (16, 40), expected (16, 64)" in err
    sd = official_state_dict(["D1"])
    sd.pop("decoder.tcn.first_net.conv_layers.2.norm.bias")
    sd["decoder.extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp / "keys.pt")
    code, err = run_unitalker(monkeypatch, capsys, "import-official", str(tmp / "keys.pt"), "--release",
                              str(bad_inputs["rel"]), "--out", str(tmp / "run"))
    assert code == 1 and "missing (e.g. decoder.tcn.first_net.conv_layers.2.norm.bias)" in err
    assert "unexpected key(s) found (e.g. decoder.extra.weight)" in err and len(err.strip().splitlines()) == 1


def test_infer_bad_template_and_identity(b_run, tmp_path, capsys, monkeypatch):
    run = str(b_run[0])
    sf.write(tmp_path / "a.wav", speech(1.0), SR)
    np.save(tmp_path / "small.npy", np.zeros((100, 3)))
    np.save(tmp_path / "ok.npy", np.zeros((5023, 3)))
    cases = [
        (["--heads", "D1", "--template", str(tmp_path / "small.npy")], "expected 5023 vertices"),
        (["--heads", "D1,D0", "--template", str(tmp_path / "ok.npy")], "exactly one vertex head"),
        (["--heads", "D3", "--template", str(tmp_path / "ok.npy")], "exactly one vertex head"),
        (["--heads", "D1", "--identity", "D5/ff_0x1"], "did you mean 'D5/ff_"),
    ]
    for args, msg in cases:
        code, err = run_unitalker(monkeypatch, capsys, "infer", "--checkpoint", run, str(tmp_path / "a.wav"),
                                  "--out", str(tmp_path / "out"), "--device", "cpu", *args)
        assert code == 1 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out" / "a").exists()


def test_all_heads_and_datasets_present(b_run):
    meta = ck.read(b_run[0])[0]
    assert [d["id"] for d in meta["datasets"]] == ALL and [d["fps"] for d in meta["datasets"]][:2] == [25.0, 30.0]
    assert sorted(meta["official"]["annot_types"].values()) == sorted(set(ANNOT.values()))
