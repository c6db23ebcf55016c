"""Official UniTalker checkpoints and release folders built from the facts (shared/spec/official-release.md: the
key table, shapes, head names, dirnames, identity counts), with tiny encoders and random weights. No official code."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from a2fbench.registry import get_space, get_spec

ANNOT = {"D0": "BIWI_23370_vertices", "D1": "FLAME_5023_vertices", "D2": "meshtalk_6172_vertices",
         "D3": "3DETF_blendshape_weight", "D4": "3DETF_blendshape_weight", "D5": "flame_params_from_dadhead",
         "D6": "inhouse_blendshape_weight", "D7": "inhouse_blendshape_weight"}
ALL = list(ANNOT)
K = 8  # PCA head width of the tiny checkpoints


def tiny_encoder(kind: str = "wavlm", seed: int = 0) -> dict[str, torch.Tensor]:
    """``audio_encoder.*`` of a tiny stock transformers model (sizes readable from shapes; max_bucket_distance,
    strides and the rest at the published models' values)."""
    torch.manual_seed(seed)
    common = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=96, conv_dim=[32] * 7,
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    if kind == "wavlm":
        from transformers import WavLMConfig, WavLMModel

        m = WavLMModel(WavLMConfig(num_attention_heads=4, num_buckets=32, **common))
    else:
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        m = Wav2Vec2Model(Wav2Vec2Config(num_attention_heads=1, feat_extract_norm="layer", do_stable_layer_norm=True,
                                         conv_bias=True, **common))
    return {f"audio_encoder.{k}": v for k, v in m.state_dict().items()}


def official_state_dict(datasets: list[str] = ALL, kind: str = "wavlm", decoder: str = "conv", C: int = 16,
                        E: int = 8, seed: int = 0, head_std: float = 0.02, spelling: str = "parametrizations",
                        period: int = 30) -> dict[str, torch.Tensor]:
    """The official key layout for ``datasets`` (identity rows = their subjects + pivot)."""
    sd = tiny_encoder(kind, seed)
    g = torch.Generator().manual_seed(seed + 1)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    H = sd["audio_encoder.masked_spec_embed"].shape[0]
    n_ids = sum(get_spec(d).unitalker.identities for d in datasets) + 1
    sd["decoder.audio_feature_map.weight"], sd["decoder.audio_feature_map.bias"] = r(C, H), r(C)
    if decoder == "conv":
        sd["decoder.learnable_style_emb.weight"] = r(n_ids, E)
        for i in range(3):
            p = f"decoder.tcn.first_net.conv_layers.{i}."
            sd[p + "conv.weight"], sd[p + "conv.bias"] = r(C, C + E if i == 0 else C, 3), r(C)
            sd[p + "norm.weight"], sd[p + "norm.bias"] = 1 + r(C), r(C)
        sd["decoder.tcn.first_net.conv_layers.0.residual_layer.0.weight"] = r(C, C + E, 3)
        sd["decoder.tcn.first_net.conv_layers.0.residual_layer.0.bias"] = r(C)
    else:
        sd["decoder.learnable_style_emb.weight"] = r(n_ids, C)
        p = "decoder.transformer_decoder.layers.0."
        for att in ("self_attn", "multihead_attn"):
            sd[f"{p}{att}.in_proj_weight"], sd[f"{p}{att}.in_proj_bias"] = r(3 * C, C), r(3 * C)
            sd[f"{p}{att}.out_proj.weight"], sd[f"{p}{att}.out_proj.bias"] = r(C, C), r(C)
        sd[p + "linear1.weight"], sd[p + "linear1.bias"] = r(2 * C, C), r(2 * C)
        sd[p + "linear2.weight"], sd[p + "linear2.bias"] = r(C, 2 * C), r(C)
        for n in ("norm1", "norm2", "norm3"):
            sd[f"{p}{n}.weight"], sd[f"{p}{n}.bias"] = 1 + r(C), r(C)
        sd["decoder.PPE.pe"] = ppe(period, C)
    for d in datasets:
        annot = ANNOT[d]
        n = K if get_space(get_spec(d).space).is_vertex else get_space(get_spec(d).space).dim
        sd[f"out_head_dict.{annot}.weight"] = torch.randn(n, C, generator=g) * head_std
        sd[f"out_head_dict.{annot}.bias"] = torch.randn(n, generator=g) * head_std
    if spelling == "weight_g":
        sd = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}
    return sd


def ppe(period: int, C: int) -> torch.Tensor:
    """Periodic positional encoding as the facts describe it (sin/cos of position mod period), max 3000 frames."""
    pos = torch.arange(period, dtype=torch.float)[:, None]
    div = torch.exp(torch.arange(0, C, 2).float() * (-math.log(10000.0) / C))
    pe = torch.zeros(period, C)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe[None].repeat(1, 3000 // period + 1, 1)


def release(root: Path, datasets: list[str] = ALL, seed: int = 0, k: int = 2 * K,
            names: Optional[dict[str, list[str]]] = None, pca: Optional[dict[str, tuple]] = None) -> Path:
    """A fake ``unitalker_data_release_V1``: id_template.npy everywhere, pca.npz (orthonormal rows, ``k`` of them)
    for vertex datasets, ``train.json`` naming the subjects of the datasets in ``names``."""
    rng = np.random.default_rng(seed)
    for d in datasets:
        spec = get_spec(d)
        sp = get_space(spec.space)
        n = spec.unitalker.identities
        folder = root / spec.unitalker.dirname
        folder.mkdir(parents=True, exist_ok=True)
        if sp.is_vertex:
            if pca and d in pca:
                comps, mean = pca[d]
            else:
                q, _ = np.linalg.qr(rng.standard_normal((sp.dim, k)))
                comps, mean = q.T.astype(np.float32), rng.normal(0, 1e-3, sp.dim).astype(np.float32)
            np.savez(folder / "pca.npz", components_to_data=comps, original_data_mean=mean,
                     data_components_mean=np.zeros(len(comps), np.float32),
                     data_components_std=np.ones(len(comps), np.float32))
            np.save(folder / "id_template.npy", rng.normal(0, 0.1, (n, sp.dim // 3, 3)).astype(np.float32))
        else:
            np.save(folder / "id_template.npy", rng.normal(0, 0.1, (n, sp.dim)).astype(np.float32))
        if names and d in names:
            (folder / "train.json").write_text(json.dumps({"info": {"id_list": names[d]}, "data": []}))
    return root
