"""The UniTalker network: audio encoder -> frequency adaptor -> shared decoder (+ identity) -> one head per space.

Shapes: B clips, N samples, L encoder frames (~50 Hz), T motion frames, H encoder width, C decoder width
(256), D a space's frame width (3V for vertex spaces, P for parameter spaces).

The network works in UniTalker's *scaled* units (motion and templates multiplied by the dataset's
``unitalker.scale``: BIWI 0.2, MeshTalk 0.001, the rest 1); :mod:`unitalker.train.data` scales the inputs and
:mod:`unitalker.infer.predict` divides the outputs back, so predictions come out in the dataset's native units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoder import AudioEncoder, interpolate_frames


# ------------------------------------------------------------------------------------------- decoder
class ConvNormRelu(nn.Module):
    """Conv1d k3 -> LayerNorm over channels -> + residual -> ReLU (UniTalker ``SeqTranslator1D`` block)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size=3, stride=1, padding=1)
        self.norm = nn.LayerNorm(cout)
        self.residual = nn.Conv1d(cin, cout, kernel_size=3, stride=1, padding=1) if cin != cout else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, Cin, T), (B, 1, T) valid-frame mask -> (B, Cout, T). Padded frames are zeroed before each conv,
        so a clip's frames do not depend on the padding after it (as if it were alone, zero-padded)."""
        x = x * mask
        y = self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2)
        r = x if self.residual is None else self.residual(x)
        return F.relu(y + r)


class TCNDecoder(nn.Module):
    """UniTalkerDecoderTCN: Linear(H->C), Dropout, concat identity (E), ``layers`` ConvNormRelu blocks."""

    def __init__(self, in_dim: int, hidden: int, identity_dim: int, layers: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        blocks = [ConvNormRelu(hidden + identity_dim, hidden)]
        blocks += [ConvNormRelu(hidden, hidden) for _ in range(layers - 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, h: torch.Tensor, ident: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) features, (B, E) identity, (B, T) mask -> (B, T, C)."""
        x = self.dropout(self.proj(h))
        x = torch.cat([x, ident[:, None, :].expand(-1, x.shape[1], -1)], dim=-1).transpose(1, 2)
        m = mask[:, None, :].to(x.dtype)
        for b in self.blocks:
            x = b(x, m)
        return x.transpose(1, 2)


def alibi_slopes(heads: int) -> list[float]:
    """Per-head slopes of ALiBi (Press et al.): ``2^(-8/n)`` to the powers 1..n for n a power of two; otherwise
    the slopes of the nearest lower power of two, then every other slope of twice that (FaceFormer, UniTalker)."""
    def pow2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return pow2(heads)
    low = 2 ** math.floor(math.log2(heads))
    return pow2(low) + alibi_slopes(2 * low)[0::2][: heads - low]


def periodic_encoding(period: int, d: int) -> torch.Tensor:
    """(period, d) sinusoidal encoding of positions 0..period-1 (sin on even channels, cos on odd), float32."""
    pe = torch.zeros(period, d)
    pos = torch.arange(0, period, dtype=torch.float).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class TransformerDecoder(nn.Module):
    """UniTalker's ``UniTalkerDecoderTransformer`` (``decoder.type: transformer``).

    Memory: ``Linear(H -> C)`` of the audio features at the motion rate. Queries: the identity embedding (C wide,
    not ``identity_dim``), the same for every frame, plus a periodic positional encoding (period P), then
    dropout. ``layers`` ``nn.TransformerDecoderLayer`` (post-norm, ReLU, ``heads`` heads, FF ``ff``, dropout):
    self-attention causal with the bias ``-slope_h * floor((t - s) / P)`` for s <= t; cross-attention of frame t
    to audio frame t only. A frame sees no frame after it and no padding, so padded batches give each clip's
    own numbers (frames past a clip's end are zeroed).
    """

    def __init__(self, in_dim: int, hidden: int, heads: int, ff: int, layers: int, period: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.query_dropout = nn.Dropout(dropout)
        layer = nn.TransformerDecoderLayer(hidden, heads, ff, dropout, batch_first=True)
        self.transformer = nn.TransformerDecoder(layer, layers)
        self.heads = heads
        self.period = period
        self.register_buffer("ppe", periodic_encoding(period, hidden), persistent=False)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(heads)), persistent=False)

    def self_attention_bias(self, T: int, device: torch.device) -> torch.Tensor:
        """(heads, T, T) additive mask: ``-slope_h * floor((t - s) / P)`` for s <= t, ``-inf`` for s > t."""
        t = torch.arange(T, device=device)
        d = t[:, None] - t[None, :]
        steps = torch.div(d.clamp(min=0), self.period, rounding_mode="floor").float()
        bias = -self.slopes.to(device)[:, None, None] * steps[None]
        return bias.masked_fill((d < 0)[None], float("-inf"))

    def forward(self, h: torch.Tensor, ident: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) features, (B, C) identity, (B, T) mask -> (B, T, C)."""
        B, T, _ = h.shape
        memory = self.proj(h)
        q = ident[:, None, :].expand(B, T, -1) + self.ppe[torch.arange(T, device=h.device) % self.period][None]
        q = self.query_dropout(q)
        self_mask = self.self_attention_bias(T, h.device).to(q.dtype).repeat(B, 1, 1)  # (B * heads, T, T)
        cross_mask = ~torch.eye(T, dtype=torch.bool, device=h.device)  # frame t sees audio frame t only
        x = self.transformer(q, memory, tgt_mask=self_mask, memory_mask=cross_mask)
        return x * mask[..., None].to(x.dtype)


# --------------------------------------------------------------------------------------------- heads
class Head(nn.Module):
    """A zero-initialised Linear(C -> k) head. With a PCA basis, frame = z @ components + mean (an offset from
    the template, D wide); without, the head's output is the offset itself (k = D)."""

    def __init__(self, hidden: int, dim: int, pca: Optional[dict] = None):
        super().__init__()
        self.dim = dim
        if pca is not None:
            comps = torch.as_tensor(np.asarray(pca["components"], np.float32))
            self.register_buffer("components", comps)  # (k, D)
            self.register_buffer("mean", torch.as_tensor(np.asarray(pca["mean"], np.float32)))  # (D,)
            k = comps.shape[0]
        else:
            self.components = None
            self.mean = None
            k = dim
        self.linear = nn.Linear(hidden, k)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def is_pca(self) -> bool:
        return self.components is not None

    def forward(self, x: torch.Tensor, decode: bool = True) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(..., C) -> (offset (..., D), PCA coefficients (..., k) or None). ``decode=False`` skips the (..., D)
        decoding of a PCA head (training computes its vertex loss in the PCA subspace; offset is None)."""
        z = self.linear(x)
        if self.components is None:
            return z, None
        return (z @ self.components + self.mean if decode else None), z

    def decode_columns(self, z: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Only the offset columns ``cols`` of a PCA head (e.g. the lip vertices' coordinates)."""
        assert self.components is not None
        return z @ self.components[:, cols] + self.mean[cols]

    def encode(self, offset: torch.Tensor) -> torch.Tensor:
        """PCA coefficients of an offset from the template (no whitening, as UniTalker)."""
        assert self.components is not None
        return (offset - self.mean) @ self.components.T


# --------------------------------------------------------------------------------------------- model
@dataclass
class HeadSpec:
    """What the model needs to know about one output space."""

    space: str
    dim: int
    pca: Optional[dict] = None  # {"components": (k, D), "mean": (D,)} in scaled units


@dataclass
class ModelSpec:
    """Everything besides the config that fixes the network's shape: heads and identity count."""

    heads: list[HeadSpec]
    n_identities: int  # including the pivot (the last row)
    identities: list[str] = field(default_factory=list)  # "D1/subject" per row (pivot excluded)


class UniTalker(nn.Module):
    def __init__(self, cfg: dict, spec: ModelSpec, attention: Optional[str] = None,
                 saved_encoder: Optional[dict] = None):
        super().__init__()
        mcfg = cfg["model"]
        self.encoder = AudioEncoder(mcfg["encoder"], attention or mcfg["encoder"]["attention"], saved_encoder)
        d = mcfg["decoder"]
        # the transformer decoder's identity embedding is as wide as the decoder (UniTalker), not identity_dim
        id_dim = int(d["hidden"]) if d["type"] == "transformer" else int(d["identity_dim"])
        self.identity = nn.Embedding(spec.n_identities, id_dim)
        if d["type"] == "conv":
            self.decoder: nn.Module = TCNDecoder(self.encoder.dim, int(d["hidden"]), int(d["identity_dim"]),
                                                 int(d["layers"]), float(d["dropout"]))
        else:
            t = d["transformer"]
            self.decoder = TransformerDecoder(self.encoder.dim, int(d["hidden"]), int(t["heads"]), int(t["ff"]),
                                              int(t["layers"]), int(t["period"]), float(d["dropout"]))
        self.heads = nn.ModuleDict({h.space: Head(int(d["hidden"]), h.dim, h.pca) for h in spec.heads})
        self.spec = spec

    @property
    def pivot(self) -> int:
        return self.identity.num_embeddings - 1

    def features(self, audio: Optional[torch.Tensor], n_samples: torch.Tensor, n_frames: torch.Tensor,
                 identity: torch.Tensor, *, T: Optional[int] = None, all_full: Optional[bool] = None,
                 cnn: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                 flen_host: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Shared trunk: (B, N) audio, (B,) samples, (B,) frames, (B,) identity rows -> (B, T, C).

        Host-side facts save reading them back from the device (a sync on CUDA): ``T`` (>= the longest clip's
        frames; padded frames are masked), ``all_full`` (no padded audio or, with ``cnn``, no padded feature
        frames), ``flen_host`` (the valid encoder frames, for SpecAugment's masks). ``cnn`` = (features (B, L, C'),
        valid frames (B,)) of the frozen CNN, computed earlier (:mod:`unitalker.train.featcache`); ``audio`` is then
        unused."""
        enc_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(enc_grad):  # warm-up: a frozen encoder keeps no graph
            if cnn is None:
                audio = audio.to(self.identity.weight.dtype)  # bf16 inference casts the trunk's weights and input
                h, flen = self.encoder(audio, n_samples, all_full, flen_host)
            else:
                flen = cnn[1]
                h = self.encoder.from_features(cnn[0], flen, bool(all_full), flen_host)
        T = int(n_frames.max()) if T is None else int(T)
        h = interpolate_frames(h, flen, n_frames, T)
        mask = torch.arange(T, device=h.device)[None, :] < n_frames[:, None]
        return self.decoder(h, self.identity(identity), mask)

    def head(self, space: str, feats: torch.Tensor, decode: bool = True) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Offsets from the template (and PCA coefficients) of one space, computed in fp32."""
        with torch.autocast(feats.device.type, enabled=False):
            return self.heads[space](feats.float(), decode)

    def forward(self, audio: Optional[torch.Tensor], n_samples: torch.Tensor, n_frames: torch.Tensor,
                identity: torch.Tensor, groups: dict[str, torch.Tensor], decode: bool = True, **host) -> dict[str, tuple]:
        """One call for DDP: ``groups[space]`` = the batch rows in that space -> {space: (offset (b, T, D), z)}.
        ``host``: :meth:`features`' keyword arguments (T, all_full, cnn, flen_host)."""
        f = self.features(audio, n_samples, n_frames, identity, **host)
        return {space: self.head(space, f[rows], decode) for space, rows in groups.items()}
