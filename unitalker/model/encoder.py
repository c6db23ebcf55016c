"""The audio encoder: a transformers WavLM or wav2vec2 model, run on padded batches, plus the frequency adaptor.

``AudioEncoder`` wraps the stock ``WavLMModel`` / ``Wav2Vec2Model`` (its parameters keep their names, so
``from_pretrained`` weights load unchanged) and runs their sub-modules itself, so that

* a padded batch gives, on every valid frame, the same features as each clip alone: the first conv layer's
  per-channel GroupNorm (WavLM-base, wav2vec2-base) is computed over the valid samples only, and the
  transformer gets the key padding mask (padded frames are zeroed before the positional convolution, as
  transformers does);
* WavLM attention runs through ``scaled_dot_product_attention`` with its gated relative-position bias as an
  additive mask (``attention: sdpa``), instead of transformers' generic ``multi_head_attention_forward``
  (``attention: eager``, the reference path). Both give the same numbers (tests/test_unitalker_model.py);
* the frequency adaptor (UniTalker ``interpolate_pos: 1``) resamples each clip's ~50 Hz features to exactly its
  frame count with linear interpolation, ``align_corners=True`` (``interpolate_frames``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from a2fbench.errors import ConfigError
from a2fbench.util.constants import SAMPLE_RATE
from a2fbench.util.fsutil import read_json

log = logging.getLogger(__name__)

# The two encoders UniTalker names, pinned so that `pretrained: false` builds them offline.
# Values are those of the hub configs (microsoft/wavlm-base-plus, facebook/wav2vec2-large-xlsr-53).
KNOWN_ARCH: dict[str, dict[str, Any]] = {
    "microsoft/wavlm-base-plus": dict(
        model_type="wavlm", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", conv_dim=[512] * 7, conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_bias=False, feat_extract_norm="group",
        feat_extract_activation="gelu", num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=False, num_buckets=320, max_bucket_distance=800, layer_norm_eps=1e-5,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
        layerdrop=0.05, mask_time_prob=0.05, mask_time_length=10, mask_feature_prob=0.0,
        normalize_audio=False),
    "facebook/wav2vec2-large-xlsr-53": dict(
        model_type="wav2vec2", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, hidden_act="gelu", conv_dim=[512] * 7, conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_bias=True, feat_extract_norm="layer",
        feat_extract_activation="gelu", num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        do_stable_layer_norm=True, layer_norm_eps=1e-5, hidden_dropout=0.1, attention_dropout=0.1,
        activation_dropout=0.0, feat_proj_dropout=0.1, layerdrop=0.1, mask_time_prob=0.05,
        mask_time_length=10, mask_feature_prob=0.0, normalize_audio=True),
}


def _classes(model_type: str) -> tuple[type, type]:
    if model_type == "wavlm":
        from transformers import WavLMConfig, WavLMModel

        return WavLMConfig, WavLMModel
    if model_type == "wav2vec2":
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        return Wav2Vec2Config, Wav2Vec2Model
    raise ConfigError(f"encoder model_type {model_type!r} is not supported; expected wavlm or wav2vec2 "
                      "(microsoft/wavlm-base-plus, facebook/wav2vec2-large-xlsr-53 or a local copy of either)")


def _local_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"{path}: expected a transformers model folder with config.json, found none; "
                          "use save_pretrained() output or a hub id")
    return read_json(cfg, what="a transformers config.json", error=ConfigError)


def _read_norm_default(path: Path) -> Optional[bool]:
    p = path / "preprocessor_config.json"
    if p.is_file():
        return bool(read_json(p, what="a transformers preprocessor_config.json", error=ConfigError).get("do_normalize",
                                                                                                       False))
    return None


def build_hf_encoder(enc_cfg: dict, attention: str = "sdpa") -> tuple[nn.Module, bool]:
    """The transformers model named by ``model.encoder`` and whether its input is normalised per clip."""
    name = str(enc_cfg["name"])
    arch_over = dict(enc_cfg.get("arch") or {})
    pretrained = bool(enc_cfg["pretrained"])
    path = Path(name).expanduser()
    is_local = path.is_dir()
    if is_local:
        base = _local_config(path)
        norm_default = _read_norm_default(path)
    elif name in KNOWN_ARCH:
        base = dict(KNOWN_ARCH[name])
        norm_default = base.pop("normalize_audio")
    else:
        raise ConfigError(f"unknown audio encoder {name!r}; expected a local transformers folder or one of "
                          f"{', '.join(KNOWN_ARCH)}")
    model_type = base.get("model_type", "wavlm")
    Cfg, Model = _classes(model_type)
    hf_attn = "eager"  # our WavLM path replaces attention itself; wav2vec2 switches per mode (set_attention)
    if pretrained:
        if arch_over:
            raise ConfigError("model.encoder.arch changes the architecture of a pretrained encoder; expected it "
                              "empty with pretrained: true (or set model.encoder.pretrained=false)")
        try:
            model = Model.from_pretrained(str(path) if is_local else name, attn_implementation=hf_attn)
        except OSError as e:
            raise ConfigError(f"could not load the pretrained encoder {name!r} ({str(e).splitlines()[0][:160]}); "
                              "expected it in the Hugging Face cache or a local folder: download it once with "
                              "internet, pass a local path as model.encoder.name, or set "
                              "model.encoder.pretrained=false") from None
        if norm_default is None:
            norm_default = bool(KNOWN_ARCH.get(name, {}).get("normalize_audio", False))
    else:
        fields = {k: v for k, v in base.items() if k not in ("model_type", "architectures", "transformers_version",
                                                             "_name_or_path", "torch_dtype", "dtype")}
        fields.update(arch_over)
        try:
            conf = Cfg(**fields)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.encoder.arch: the {model_type} config rejected the values ({e})") from None
        conf._attn_implementation = hf_attn
        model = Model(conf)
    na = enc_cfg.get("normalize_audio", "auto")
    normalize = bool(norm_default) if na == "auto" else bool(na)
    return model, normalize


# ------------------------------------------------------------------------------------- WavLM SDPA attention
def _wavlm_attention_sdpa(self: nn.Module, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                          position_bias: Optional[torch.Tensor] = None, index: int = 0, **kwargs: Any):
    """WavLMAttention.forward through SDPA: the gated relative-position bias becomes an additive mask.

    Same maths as transformers' implementation (gate from the layer input, ``multi_head_attention_forward``
    with ``attn_mask = gate * bias`` and the key padding mask), without materialising the weights.
    """
    bsz, tgt_len, _ = hidden_states.size()
    H, hd = self.num_heads, self.head_dim
    if position_bias is None:
        position_bias = self.compute_bias(tgt_len, tgt_len)[None]  # (1, H, T, T), shared by the batch
    pb = position_bias if position_bias.dim() == 4 else position_bias.view(-1, H, tgt_len, tgt_len)
    g = hidden_states.view(bsz, tgt_len, H, hd).permute(0, 2, 1, 3)  # (B, H, T, hd)
    proj = self.gru_rel_pos_linear(g).view(bsz, H, tgt_len, 2, 4).sum(-1)
    gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
    gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
    bias = gate * pb  # (B, H, T, T)
    if attention_mask is not None:
        pad = attention_mask.ne(1)[:, None, None, :]
        bias = bias.masked_fill(pad, float("-inf"))
    q = self.q_proj(hidden_states).view(bsz, tgt_len, H, hd).transpose(1, 2)
    k = self.k_proj(hidden_states).view(bsz, tgt_len, H, hd).transpose(1, 2)
    v = self.v_proj(hidden_states).view(bsz, tgt_len, H, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                         dropout_p=self.dropout if self.training else 0.0)
    out = self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, H * hd))
    return out, None, position_bias


def _install_wavlm_attention(hf: nn.Module) -> None:
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    stock = WavLMAttention.forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any):
        if getattr(self, "_a2f_sdpa", False):
            return _wavlm_attention_sdpa(self, *args, **kwargs)
        return stock(self, *args, **kwargs)

    for m in hf.modules():
        if isinstance(m, WavLMAttention):
            m.forward = forward.__get__(m)  # instance-level: the class and other models stay stock


# ------------------------------------------------------------------------------------------ the encoder
def conv_out_length(n: torch.Tensor | int, kernels: list[int], strides: list[int]) -> Any:
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
    return n


def _masked_group_norm(x: torch.Tensor, gn: nn.GroupNorm, lengths: torch.Tensor) -> torch.Tensor:
    """GroupNorm with one group per channel, statistics over each clip's first ``lengths`` frames only."""
    B, C, L = x.shape
    dt = x.dtype
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in at least fp32
    mask = (torch.arange(L, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]  # (B,1,L)
    n = lengths.to(x.dtype).clamp(min=1)[:, None, None]
    mean = (x * mask).sum(-1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / n
    y = (x - mean) / torch.sqrt(var + gn.eps)
    return (y * gn.weight.to(x.dtype)[None, :, None] + gn.bias.to(x.dtype)[None, :, None]).to(dt)


def build_from_config_dict(d: dict) -> nn.Module:
    """A randomly initialised transformers encoder from a saved ``config.to_dict()`` (checkpoint loading)."""
    Cfg, Model = _classes(d.get("model_type", "wavlm"))
    conf = Cfg.from_dict({k: v for k, v in d.items() if k not in ("transformers_version",)})
    conf._attn_implementation = "eager"
    return Model(conf)


class AudioEncoder(nn.Module):
    """Padded batch of 16 kHz audio -> per-clip features at the motion frame rate.

    ``saved`` = ``{"config": hf config dict, "normalize": bool}`` rebuilds the architecture of a checkpoint
    without touching the hub (its weights are loaded afterwards).
    """

    def __init__(self, enc_cfg: dict, attention: str = "sdpa", saved: Optional[dict] = None):
        super().__init__()
        if saved is not None:
            self.hf, self.normalize = build_from_config_dict(saved["config"]), bool(saved["normalize"])
        else:
            self.hf, self.normalize = build_hf_encoder(enc_cfg, attention)
        conf = self.hf.config
        self.model_type = conf.model_type
        self.dim = int(conf.hidden_size)
        self.kernels = list(conf.conv_kernel)
        self.strides = list(conf.conv_stride)
        self.group_norm_first = conf.feat_extract_norm == "group"
        if self.model_type == "wavlm":
            _install_wavlm_attention(self.hf)
        self.set_attention(attention)
        if bool(enc_cfg.get("freeze_feature_extractor", True)):
            self.freeze_feature_extractor()

    def saved(self) -> dict:
        """What :class:`AudioEncoder` needs to rebuild this architecture (stored in checkpoints)."""
        return {"config": self.hf.config.to_dict(), "normalize": bool(self.normalize)}

    # ---- modes
    def set_attention(self, attention: str) -> None:
        """``sdpa`` (fast path) or ``eager`` (transformers' stock attention, the reference)."""
        self.attention = attention
        if self.model_type == "wavlm":
            for m in self.hf.modules():
                if hasattr(m, "rel_attn_embed") or hasattr(m, "gru_rel_pos_linear"):
                    m._a2f_sdpa = attention == "sdpa"
        else:
            self.hf.config._attn_implementation = "sdpa" if attention == "sdpa" else "eager"

    def freeze_feature_extractor(self) -> None:
        for p in self.hf.feature_extractor.parameters():
            p.requires_grad_(False)

    def feature_lengths(self, n_samples: torch.Tensor) -> torch.Tensor:
        return conv_out_length(n_samples, self.kernels, self.strides)

    # ---- forward
    def _cnn(self, audio: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        x = audio[:, None]
        layers = self.hf.feature_extractor.conv_layers
        for i, layer in enumerate(layers):
            if i == 0 and self.group_norm_first and lengths is not None:
                y = layer.conv(x)
                n0 = conv_out_length(lengths, self.kernels[:1], self.strides[:1])
                x = layer.activation(_masked_group_norm(y, layer.layer_norm, n0))
            else:
                x = layer(x)
        return x.transpose(1, 2)  # (B, L, C)

    def cnn_features(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                     all_full: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) audio, (B,) valid samples -> the CNN's (B, L, C) features and (B,) valid feature frames.

        ``all_full`` (every clip N samples long), when the caller knows it, saves reading ``lengths`` back from
        the device (a host sync on CUDA)."""
        B, N = audio.shape
        if lengths is None:
            lengths, all_full = torch.full((B,), N, dtype=torch.long, device=audio.device), True
        if all_full is None:
            all_full = bool((lengths == N).all())
        feats = self._cnn(audio, None if all_full else lengths)
        return feats, self.feature_lengths(lengths).clamp(max=feats.shape[1])

    def from_features(self, feats: torch.Tensor, flen: torch.Tensor, all_full: bool,
                      flen_host: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The CNN's (B, L, C) features (``all_full``: no padded frames) -> (B, L, H) encoder output.
        ``flen_host``: ``flen`` on the CPU, for SpecAugment's masks (else read back from the device)."""
        L = feats.shape[1]
        fmask = None if all_full else (torch.arange(L, device=feats.device)[None, :] < flen[:, None])
        hidden, _ = self.hf.feature_projection(feats)
        if self.training:
            hidden = self._spec_augment(hidden, None if all_full else (flen if flen_host is None else flen_host))
        return self.hf.encoder(hidden, attention_mask=fmask).last_hidden_state

    def _spec_augment(self, hidden: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """transformers' ``_mask_hidden_states`` (the same numpy draws, the same values) without its two device
        syncs: the time mask is drawn from host lengths and applied with ``where`` instead of boolean indexing."""
        conf = self.hf.config
        if not getattr(conf, "apply_spec_augment", True) or (conf.mask_time_prob <= 0 and conf.mask_feature_prob <= 0):
            return hidden
        if conf.mask_feature_prob > 0:  # not set by UniTalker's encoders: transformers' own code
            return self.hf._mask_hidden_states(hidden, attention_mask=None if lengths is None else
                                               torch.arange(hidden.shape[1], device=lengths.device)[None] < lengths[:, None])
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices  # transformers: 2-4 s

        B, L, _ = hidden.shape
        am = None if lengths is None else (torch.arange(L)[None, :] < lengths.cpu()[:, None]).long()
        idx = _compute_mask_indices((B, L), mask_prob=conf.mask_time_prob, mask_length=conf.mask_time_length,
                                    attention_mask=am, min_masks=conf.mask_time_min_masks)
        m = torch.from_numpy(idx)
        m = m.pin_memory() if hidden.device.type == "cuda" else m
        m = m.to(hidden.device, non_blocking=True)
        return torch.where(m[..., None], self.hf.masked_spec_embed.to(hidden.dtype), hidden)

    def forward(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None, all_full: Optional[bool] = None,
                flen_host: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) audio (zero-padded), (B,) valid sample counts -> (B, L, H) features, (B,) valid frame counts."""
        if lengths is not None and all_full is None:
            all_full = bool((lengths == audio.shape[1]).all())
        feats, flen = self.cnn_features(audio, lengths, all_full)
        return self.from_features(feats, flen, all_full is not False, flen_host), flen


def normalize_audio(x: torch.Tensor, n: Optional[int] = None) -> torch.Tensor:
    """Zero mean, unit variance over the first ``n`` samples (transformers' ``do_normalize``)."""
    v = x[:n] if n is not None else x
    return (x - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-7)


def interpolate_frames(h: torch.Tensor, src_len: torch.Tensor, dst_len: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
    """Per-clip linear resampling with ``align_corners=True``: (B, L, C) -> (B, T, C).

    Clip b's first ``src_len[b]`` frames become ``dst_len[b]`` frames; output frame j samples position
    ``j * (src_len-1) / (dst_len-1)`` (as ``F.interpolate(mode="linear", align_corners=True)``); frames past
    ``dst_len[b]`` are zero.
    """
    B, L, C = h.shape
    T = int(dst_len.max()) if T is None else T
    j = torch.arange(T, device=h.device, dtype=torch.float64)[None, :]  # (1, T)
    s = src_len.to(torch.float64)[:, None]
    d = dst_len.to(torch.float64)[:, None]
    scale = torch.where(d > 1, (s - 1) / (d - 1).clamp(min=1), torch.zeros_like(s))
    pos = (j * scale).clamp(min=0)
    i0 = pos.floor().long()
    i0 = torch.minimum(i0, (src_len[:, None] - 1).clamp(min=0))
    i1 = torch.minimum(i0 + 1, (src_len[:, None] - 1).clamp(min=0))
    w = (pos - i0.to(torch.float64)).clamp(0, 1).to(h.dtype)[..., None]
    idx0 = i0[..., None].expand(B, T, C)
    idx1 = i1[..., None].expand(B, T, C)
    out = torch.gather(h, 1, idx0) * (1 - w) + torch.gather(h, 1, idx1) * w
    valid = (torch.arange(T, device=h.device)[None, :] < dst_len[:, None])[..., None]
    return out * valid.to(out.dtype)


def frames_for_samples(n_samples: int, fps: float, sr: int = SAMPLE_RATE) -> int:
    """Frame count UniTalker's demo gives a clip: ``round(n / sr * fps)``."""
    return int(round(n_samples / sr * fps))

