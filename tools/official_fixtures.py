"""Make tests/assets/official/: numbers produced by the OFFICIAL UniTalker code (github.com/X-niper/UniTalker), which
tests/test_unitalker_official_parity.py compares with ours. Run it outside the repository's environment, against a
checkout of the official code that is never copied into this project:

    python tools/official_fixtures.py /tmp/official-unitalker tests/assets/official --commit <sha>

in a virtual environment with what the official code imports (torch, transformers 4.x, librosa, smplx, pyyaml,
tqdm). Every input is ours: seeded random weights at a tiny size, closed-form audio, release files and motion
(:func:`pattern`, :func:`audio`: integer arithmetic, exact in float32 on any machine, so the tests rebuild them
instead of storing them). The official modules are imported from the checkout and run unchanged; the run-time
changes are ``torch.Tensor.cuda`` made the identity (its test loop moves every batch to CUDA; this machine has none)
and, for the float64 runs only, the transformer decoder's ``biased_mask`` cast to float64 (a plain attribute, which
``model.double()`` leaves in float32; a float32 mask on float64 queries changes the official output by 0.07).

What each file holds, the agreement figures and how to read them: tests/assets/official/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

SR = 16000
H, LAYERS, HEADS, FF, CONV, POS_K, POS_G, BUCKETS = 32, 2, 4, 64, 16, 16, 4, 32  # the tiny WavLM
C = 16  # decoder width
W2V_H = 16  # the tiny wav2vec2's width
K = 8  # PCA components of the D1 head
ROWS = {"D1": 12, "D6": 8}  # official subject counts; identity rows = 12 + 8 + the pivot
V1, P6 = 5023, 51  # D1 vertices, D6 blendshape weights
CLIP_S = (1.3, 0.9)  # the short clips (seconds)
LONG_S = 46.0  # three demo windows: 0-25, 20-45, 40-46 s
ROW_D1, ROW_D6 = 3, 12 + 2  # identity rows used (D1 subject #3, D6 subject #2)
COLS_SEED = 7


# ------------------------------------------------------------------ closed-form inputs (shared with the tests)
def pattern(shape: tuple[int, ...], a: int, b: int, m: int, denom: float) -> np.ndarray:
    """``((a * i + b * i // 7) % m - m // 2) / denom`` over the flat index i, float32: small integers over a power of
    two, so every value is exact in float32 and the same on every machine."""
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((a * i + b * (i // 7)) % m - m // 2) / denom).astype(np.float32).reshape(shape)


def audio(seconds: float, seed: int) -> np.ndarray:
    """A closed-form 16 kHz clip in [-1, 1): integer hash noise under a 4 Hz syllable-like envelope, as int16 / 2^15
    (exact in float32)."""
    n = np.arange(int(round(seconds * SR)), dtype=np.int64)
    noise = ((n * 2654435761 + seed * 97) >> 5) % 4001 - 2000  # |noise| <= 2000
    env = 2 + (n // 4000 + seed) % 7  # 2..8
    return ((noise * env).astype(np.int16).astype(np.float32) / 32768.0).astype(np.float32)


def release_arrays() -> dict[str, np.ndarray]:
    """The fake release: D1 ``pca.npz`` (K rows over 3 * 5023) and ``id_template.npy`` of D1 and D6."""
    return {"D1/components_to_data": pattern((K, 3 * V1), 131, 71, 257, 2048.0),
            "D1/original_data_mean": pattern((3 * V1,), 37, 11, 101, 65536.0),
            "D1/id_template": pattern((ROWS["D1"], V1, 3), 29, 17, 199, 1024.0),
            "D6/id_template": pattern((ROWS["D6"], P6), 13, 5, 61, 256.0)}


def gt_motion(frames: int) -> np.ndarray:
    """Closed-form D1 ground truth for the in-loop metric: subject #3's template plus a small pattern offset."""
    t = release_arrays()["D1/id_template"][ROW_D1].reshape(-1)
    return (t[None] + pattern((frames, 3 * V1), 41, 3, 211, 8192.0)).astype(np.float32)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def write_release(root: Path) -> Path:
    r = release_arrays()
    (root / "D1_vocaset").mkdir(parents=True)
    (root / "D6_unitalker_Chinese_speech").mkdir(parents=True)
    np.savez(root / "D1_vocaset" / "pca.npz", components_to_data=r["D1/components_to_data"],
             original_data_mean=r["D1/original_data_mean"], data_components_mean=np.zeros(K, np.float32),
             data_components_std=np.ones(K, np.float32))
    np.save(root / "D1_vocaset" / "id_template.npy", r["D1/id_template"])
    np.save(root / "D6_unitalker_Chinese_speech" / "id_template.npy", r["D6/id_template"])
    return root


# ------------------------------------------------------------------------------------------- the official runs
def _import_official(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self  # the one run-time change: no CUDA here


class _Meter:
    """The official AverageMeter, keeping its average when the loop resets it after logging."""

    def __init__(self, base: type):
        self.m, self.kept = base(), None

    def update(self, v, n=1):
        self.m.update(v, n)

    def reset(self):
        self.kept = self.m.avg
        self.m.reset()

    @property
    def avg(self):
        return self.m.avg


def in_loop(pairs: list[tuple[np.ndarray, np.ndarray]], mouth: np.ndarray, annot: str, model=None,
            batches=None) -> dict:
    """``validate_epoch`` over (prediction, ground truth) pairs (scaled float32, (T, 3V)) with a loss module
    holding only the ``VerticesLoss`` of ``annot``: LVE (mouth_metric_L2) and LVD (its square-root variant)."""
    import torch
    from loss.loss import UniTalkerLoss, VerticesLoss
    from main.train_eval_loop import validate_epoch
    from torch import nn
    from utils.utils import AverageMeter

    with tempfile.TemporaryDirectory() as td:
        np.save(Path(td) / "mouth.npy", mouth)
        loss = UniTalkerLoss.__new__(UniTalkerLoss)
        nn.Module.__init__(loss)
        loss.loss_module_dict = nn.ModuleDict({annot: VerticesLoss(str(Path(td) / "mouth.npy"))})
        loss.mse = nn.MSELoss()

    class Given(nn.Module):  # the "model" returns the prediction that the batch carries in its audio slot
        def forward(self, audio, template, face_motion, style_idx, annot_type):
            return audio, None, None

    names = ["rec_loss", "LVE", "LVD"]
    meters = {d: {n: _Meter(AverageMeter) for n in names} for d in ("D", "D1", "mixed_dataset")}
    if batches is None:
        batches = [{"data": torch.from_numpy(g[None]), "template": torch.zeros(1, g.shape[1]),
                    "audio": torch.from_numpy(p[None]), "id": torch.tensor([0]), "annot_type": [annot],
                    "dataset_name": ["D"]} for p, g in pairs]
    args = SimpleNamespace(val_meter=meters, val_metric_name_list=names, random_id_prob=0.0, identity_num=1)
    validate_epoch(batches, model or Given(), loss, 0, "test", args)
    return {n: meters["mixed_dataset"][n].kept for n in ("LVE", "LVD")}


def make_metric(out: Path) -> dict:
    """Seeded sequences in native units; the official loop sees them scaled as ``DataItem.scale_and_offset`` does."""
    from dataset.data_item import DataItem

    rng = np.random.default_rng(20)
    arrays, cases = {}, []
    for name, scale, unit in (("scale1", 1.0, 1e-3), ("scale0.2", 0.2, 5e-3), ("scale0.001", 0.001, 1.0)):
        V = 24
        mouth = np.sort(rng.choice(V, 8, replace=False)).astype(np.int64)
        pairs = []
        for s, T in enumerate((7, 10, 4)):
            g = (rng.standard_normal((T, 3 * V)) * unit).astype(np.float32)
            p = (g + rng.standard_normal((T, 3 * V)) * unit * 0.5).astype(np.float32)
            arrays[f"{name}/gt{s}"], arrays[f"{name}/pred{s}"] = g, p
            scaled = [DataItem.scale_and_offset(None, x, scale, 0.0).astype(np.float32) for x in (p, g)]
            pairs.append(tuple(scaled))
        arrays[f"{name}/mouth"] = mouth
        r = in_loop(pairs, mouth, "FLAME_5023_vertices")
        cases.append({"name": name, "scale": scale, "vertices": V, "sequences": 3, **r})
    np.savez_compressed(out / "metric.npz", **arrays)
    return {"cases": cases}


CUT_CASES = [  # (audio samples, motion frames as the JSON's fps gives them, that fps)
    (16000 * 3, 90, 30), (16000 * 3 + 7, 95, 30), (16000 * 2, 90, 30), (16000 * 30, 900, 30), (16000 * 25, 480, 25),
    (8000, 15, 30), (7999, 30, 30), (16000 * 2, 240, 60), (16000 * 2, 241, 60), (16000 * 4 + 3, 401, 100),
    (16000 * 30, 2001, 100), (16000 // 2 + 533, 16, 30), (12345, 9, 25), (16000 * 21, 1300, 60),
    (16000 * 1 + 267, 37, 30), (8267, 25, 30), (4000, 60, 30)]


def make_cut(out: Path) -> dict:
    """``DataItem`` on each case (as ``AudioFaceDataset`` builds it from a JSON), and which items the dataset keeps."""
    from dataset.data_item import DataItem
    from dataset.dataset import AudioFaceDataset
    from transformers import Wav2Vec2FeatureExtractor

    proc = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False,
                                    return_attention_mask=True)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        root = Path(td)
        np.save(root / "id_template.npy", np.zeros((1, 4, 3), np.float32))
        data = []
        for i, (n, T, fps) in enumerate(CUT_CASES):
            np.save(root / f"a{i}.npy", np.zeros(n, np.float32))
            np.save(root / f"m{i}.npy", np.zeros((T, 4, 3), np.float32))
            data.append({"annot_path": f"m{i}.npy", "audio_path": f"a{i}.npy", "id": 0, "annot_type": "x",
                         "dataset": "D1", "fps": fps})
            item = DataItem(str(root / f"m{i}.npy"), str(root / f"a{i}.npy"), 0, "x", "D1",
                            np.zeros((4, 3), np.float32), fps, proc)
            rows.append({"audio_samples": n, "motion_frames": T, "fps": fps, "fps_after": item.fps,
                         "duration": item.duration, "frames": len(item.annot_data),
                         "samples": len(item.original_audio_data)})
        (root / "test.json").write_text(json.dumps({"info": {"id_list": ["s"]}, "data": data}))
        kept = {Path(d.annot_path).name for d in AudioFaceDataset(str(root / "test.json"),
                                                                   SimpleNamespace(processor=proc)).data_list}
    for i, r in enumerate(rows):
        r["kept"] = f"m{i}.npy" in kept
    return {"cases": rows}


def _tiny_encoder_dir(root: Path, seed: int) -> Path:
    """A local ``save_pretrained`` WavLM the official ``from_pretrained`` reads (its path names ``wavlm``)."""
    import torch
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(seed)
    cfg = WavLMConfig(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FF,
                      conv_dim=[CONV] * 7, num_conv_pos_embeddings=POS_K, num_conv_pos_embedding_groups=POS_G,
                      num_buckets=BUCKETS, max_bucket_distance=800, conv_bias=False, feat_extract_norm="group",
                      do_stable_layer_norm=False)
    # stock init leaves norms at 1/0 and some biases at 0: give every tensor a value
    return _save_encoder(WavLMModel(cfg), root / "tiny-wavlm", seed, normalize=False, skip="masked_spec_embed")


def _save_encoder(m, d: Path, seed: int, normalize: bool, skip: Optional[str] = None) -> Path:
    """Seeded noise (0.05) on every parameter of encoder ``m`` but those ending in ``skip``, then ``save_pretrained``
    with its feature extractor (``do_normalize=normalize``) into ``d``."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for n, p in m.named_parameters():
            if skip is None or not n.endswith(skip):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    m.save_pretrained(d, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=normalize,
                             return_attention_mask=True).save_pretrained(d)
    return d


def _official_model(enc: Path, rel: Path, decoder_type: str, feature_dim: int, seed: int):
    """The official ``UniTalker`` (heads D1 with PCA, D6) on encoder ``enc`` and release ``rel``, with seeded noise
    on the decoder (0.1) and the heads (0.3), which start at zero and norms at 1/0; in eval mode."""
    import torch
    from models.unitalker import UniTalker

    args = SimpleNamespace(audio_encoder_repo=str(enc), freeze_wav2vec=False, decoder_type=decoder_type,
                           decoder_dimension=C, audio_encoder_feature_dim=feature_dim,
                           identity_num=sum(ROWS.values()) + 1, interpolate_pos=1, use_pca=True, pca_dim=512,
                           dataset=["D1", "D6"], data_root=str(rel), headlayer=1, period=30)
    torch.manual_seed(seed + 2)
    model = UniTalker(args)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 3)
        for n, p in list(model.decoder.named_parameters()) + list(model.out_head_dict.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * (0.3 if "out_head" in n else 0.1))
    return model.eval()


def _templates() -> dict:
    """The release's template rows of the identities used (D1 subject #3, D6 subject #2), (1, dim) float32."""
    import torch

    r = release_arrays()
    return {"D1": torch.from_numpy(r["D1/id_template"][ROW_D1].reshape(1, -1)),
            "D6": torch.from_numpy(r["D6/id_template"][ROW_D6 - ROWS["D1"]].reshape(1, -1))}


def make_model(out: Path, seed: int = 0) -> dict:
    import torch
    from main.demo import merge_out_list, split_long_audio
    from transformers import Wav2Vec2FeatureExtractor
    from utils.utils import filter_unitalker_state_dict

    torch.set_num_threads(1)
    res: dict = {}
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as td:
        root = Path(td)
        enc = _tiny_encoder_dir(root, seed)
        rel = write_release(root / "unitalker_data_release_V1")
        model = _official_model(enc, rel, "conv", H, seed)
        sd = filter_unitalker_state_dict(model.state_dict())
        torch.save(sd, out / "model.pt")
        proc = Wav2Vec2FeatureExtractor.from_pretrained(str(enc))
        r = release_arrays()
        templates = _templates()
        rng = np.random.default_rng(COLS_SEED)
        cols = np.sort(rng.choice(3 * V1, 48, replace=False)).astype(np.int64)
        arrays["d1_cols"] = cols
        with torch.no_grad():
            for c, secs in enumerate(CLIP_S):  # as the demo calls the model: face_motion None, fps given
                x = np.squeeze(proc(audio(secs, c), sampling_rate=SR).input_values).astype(np.float32)
                a = torch.from_numpy(x)[None]
                for d, annot, row in (("D1", "FLAME_5023_vertices", ROW_D1), ("D6", "inhouse_blendshape_weight",
                                                                                 ROW_D6)):
                    motion, z, _ = model(a, templates[d], None, torch.tensor([row]), annot, fps=30)
                    motion = motion[0].numpy()
                    arrays[f"clip{c}/{d}"] = motion[:, cols] if d == "D1" else motion
                    if z is not None:
                        arrays[f"clip{c}/{d}_pca"] = z[0].numpy()
                for d, annot in (("D1", "FLAME_5023_vertices"),):  # the pivot row (the demo's default)
                    motion, z, _ = model(a, templates[d], None, torch.tensor([sum(ROWS.values())]), annot, fps=30)
                    arrays[f"clip{c}/{d}_pivot_pca"] = z[0].numpy()
            # the same network in float64 (model.double()): its rounding is ~1e-16, so ours must agree far more
            # tightly than in float32, where the official stock encoder's own rounding on a 25 s window is ~1e-4
            model.double()
            x = np.squeeze(proc(audio(CLIP_S[0], 0), sampling_rate=SR).input_values).astype(np.float32)
            a = torch.from_numpy(x).double()[None]
            motion, z, _ = model(a, templates["D1"].double(), None, torch.tensor([ROW_D1]), "FLAME_5023_vertices",
                                 fps=30)
            arrays["fp64/clip0/D1_pca"] = z[0].numpy()
            motion, _, _ = model(a, templates["D6"].double(), None, torch.tensor([ROW_D6]),
                                 "inhouse_blendshape_weight", fps=30)
            arrays["fp64/clip0/D6"] = motion[0].numpy()
            w = torch.from_numpy(audio(LONG_S, 5)[: int(25 * SR)]).double()[None]  # the long clip's first window
            motion, _, _ = model(w, templates["D6"].double(), None, torch.tensor([ROW_D6]),
                                 "inhouse_blendshape_weight", fps=30)
            arrays["fp64/window0/D6_cols"] = wcols = np.array([5, 40], np.int64)
            arrays["fp64/window0/D6"] = motion[0].numpy()[:, wcols]
            model.float()
            # the demo's windows on a long clip (D6 head): split_long_audio + one forward each + merge_out_list
            x = np.squeeze(proc(audio(LONG_S, 5), sampling_rate=SR).input_values).astype(np.float32)
            pieces = []
            for w in split_long_audio(x, proc):
                o, _, _ = model(torch.from_numpy(w)[None], templates["D6"], None, torch.tensor([ROW_D6]),
                                "inhouse_blendshape_weight", fps=30)
                pieces.append(o[0].numpy())
            merged = merge_out_list(pieces, 30)
            arrays["long/D6_cols"] = long_cols = np.array([0, 17, 33, 50], np.int64)
            arrays["long/D6"] = merged[:, long_cols]
            res["long"] = {"seconds": LONG_S, "seed": 5, "windows": len(pieces),
                           "window_frames": [len(p) for p in pieces], "frames": len(merged)}
            # the test loop: DataItem (cut, processor) -> model(audio, template, data) -> mouth_metric, AverageMeter
            from dataset.data_item import DataItem

            mouth = np.sort(np.random.default_rng(11).choice(V1, 40, replace=False)).astype(np.int64)
            arrays["inloop/mouth"] = mouth
            batches, loop = [], []
            for c, (secs, frames) in enumerate(((1.3, 45), (0.9, 25))):  # recording longer / shorter than motion
                np.save(root / f"a{c}.npy", audio(secs, c))
                np.save(root / f"m{c}.npy", gt_motion(frames).reshape(frames, V1, 3))
                it = DataItem(str(root / f"m{c}.npy"), str(root / f"a{c}.npy"), ROW_D1, "FLAME_5023_vertices", "D1",
                              r["D1/id_template"][ROW_D1], 30, proc)
                d = it.get_dict()
                batches.append({"data": torch.from_numpy(d["data"])[None], "template":
                                torch.from_numpy(d["template"]), "audio": torch.from_numpy(d["audio"])[None],
                                "id": torch.tensor([ROW_D1]), "annot_type": [d["annot_type"]], "dataset_name": ["D1"]})
                loop.append({"audio_seconds": secs, "seed": c, "motion_frames": frames, "frames": len(d["data"]),
                             "samples": len(d["audio"])})
            res["inloop"] = {"clips": loop, "identity_row": ROW_D1, **in_loop([], mouth, "FLAME_5023_vertices",
                                                                               model, batches)}
    np.savez_compressed(out / "model.npz", **arrays)
    res.update({"clips": [{"seconds": s, "seed": c, "frames": round(s * 30)} for c, s in enumerate(CLIP_S)],
                "rows": {"D1": ROW_D1, "D6": ROW_D6, "pivot": sum(ROWS.values())}, "fps": 30,
                "encoder": {"hidden": H, "layers": LAYERS, "heads": HEADS, "ff": FF, "conv": CONV, "pos_kernel": POS_K,
                            "pos_groups": POS_G, "buckets": BUCKETS},
                "decoder": {"type": "conv", "hidden": C}, "pca_components": K,
                "release_sha256": {k: sha(v) for k, v in release_arrays().items()},
                "audio_sha256": {f"{s}s/{c}": sha(audio(s, c)) for c, s in enumerate(CLIP_S)} | {
                    f"{LONG_S}s/5": sha(audio(LONG_S, 5))}})
    return res


def make_model_w2v(out: Path, seed: int = 10) -> dict:
    """The other published pair: a tiny wav2vec2 (xlsr-53's layout: layer-norm CNN with biases, stable layer norm,
    normalised input) and the ``transformer`` decoder, heads D1 (PCA) and D6, called as the demo calls it
    (processor on the clip, then ``split_long_audio``: every window normalised again). ``decoder.PPE.pe``, a fixed
    (1, 3030, C) encoding, is stored as its first period (it repeats it; the tests tile it back)."""
    import torch
    from main.demo import merge_out_list, split_long_audio
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from utils.utils import filter_unitalker_state_dict

    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as td:
        torch.manual_seed(seed)
        cfg = Wav2Vec2Config(hidden_size=W2V_H, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32,
                             conv_dim=[8] * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                             conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True)
        enc = Path(td) / "tiny-wav2vec2"
        _save_encoder(Wav2Vec2Model(cfg), enc, seed, normalize=True)
        rel = write_release(Path(td) / "rel")
        model = _official_model(enc, rel, "transformer", W2V_H, seed)
        sd = filter_unitalker_state_dict(model.state_dict())
        pe = sd.pop("decoder.PPE.pe")
        arrays["ppe_period"], arrays["ppe_shape"] = pe[0, :30].numpy(), np.array(pe.shape, np.int64)
        assert torch.equal(pe, pe[:, :30].repeat(1, pe.shape[1] // 30, 1))
        torch.save(sd, out / "model_w2v.pt")
        proc = Wav2Vec2FeatureExtractor.from_pretrained(str(enc))
        templates = _templates()
        heads = (("D1", "FLAME_5023_vertices", ROW_D1), ("D6", "inhouse_blendshape_weight", ROW_D6))
        with torch.no_grad():
            for name, x in (("clip0", audio(CLIP_S[0], 0)), ("long", audio(LONG_S, 5))):
                x = np.squeeze(proc(x, sampling_rate=SR).input_values).astype(np.float32)
                for d, annot, row in heads:
                    pieces = [model(torch.from_numpy(w)[None], templates[d], None, torch.tensor([row]), annot,
                                    fps=30)[0][0].numpy() for w in split_long_audio(x, proc)]
                    y = merge_out_list(pieces, 30)
                    arrays[f"{name}/{d}"] = y[:, [0, 17, 33, 50]] if name == "long" or d == "D1" else y
            model.double()  # float64, on the clip as it is (the network alone; normalisation is checked above)
            model.decoder.biased_mask = model.decoder.biased_mask.double()  # a plain attribute: .double() skips it
            y, z, _ = model(torch.from_numpy(audio(CLIP_S[0], 0)).double()[None], templates["D1"].double(), None,
                            torch.tensor([ROW_D1]), "FLAME_5023_vertices", fps=30)
            arrays["fp64/clip0/D1_pca"] = z[0].numpy()
    np.savez_compressed(out / "model_w2v.npz", **arrays)
    return {"encoder": {"family": "wav2vec2", "hidden": W2V_H, "layers": 1, "heads": 1, "normalize": True},
            "decoder": {"type": "transformer", "hidden": C, "period": 30}, "rows": {"D1": ROW_D1, "D6": ROW_D6},
            "columns": [0, 17, 33, 50], "clips": {"clip0": CLIP_S[0], "long": LONG_S}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", type=Path, help="a checkout of github.com/X-niper/UniTalker (outside this project)")
    ap.add_argument("out", type=Path, help="the fixture folder (tests/assets/official)")
    ap.add_argument("--commit", required=True, help="the checkout's commit (recorded)")
    a = ap.parse_args()
    _import_official(a.checkout.resolve())
    import torch
    import transformers

    a.out.mkdir(parents=True, exist_ok=True)
    prov = {"official_repository": "https://github.com/X-niper/UniTalker", "official_commit": a.commit,
            "command": "python tools/official_fixtures.py <checkout> tests/assets/official --commit " + a.commit,
            "runtime_changes": ["torch.Tensor.cuda replaced by the identity (validate_epoch moves batches to CUDA)",
                                "float64 runs only: the transformer decoder's biased_mask, a plain tensor attribute "
                                "that model.double() leaves in float32, cast to float64 as well"],
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "numpy": np.__version__},
            "machine": f"{platform.system()} {platform.machine()}, CPU"}
    for name, fn in (("metric", make_metric), ("cut", make_cut), ("model", make_model),
                     ("model_w2v", make_model_w2v)):
        res = fn(a.out)
        (a.out / f"{name}.json").write_text(json.dumps({**prov, **res}, indent=1) + "\n")
        print(f"wrote {name}", file=sys.stderr)
    os.sync()


if __name__ == "__main__":
    main()
