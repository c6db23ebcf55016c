"""The UniTalker network: audio encoder -> frequency adaptor -> shared decoder (+ identity) -> one head per space.

Shapes: B clips, N samples, L encoder frames (~50 Hz), T motion frames, H encoder width, C decoder width
(256), D a space's frame width (3V for vertex spaces, P for parameter spaces).

The network works in UniTalker's *scaled* units (motion and templates multiplied by the dataset's
``unitalker.scale``: BIWI 0.2, MeshTalk 0.001, the rest 1); :mod:`unitalker.data` scales the inputs and
:mod:`unitalker.predict` divides the outputs back, so predictions come out in the dataset's native units.
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


class TransformerDecoder(nn.Module):
    """The reference's alternative decoder: identity added to the projected features, periodic positional
    encoding (period ``period``), ``layers`` transformer layers with an ALiBi-style distance bias.

    The reference's exact ALiBi/PPE variant is not used by its released models and is UNVERIFIED here.
    """

    def __init__(self, in_dim: int, hidden: int, identity_dim: int, heads: int, ff: int, layers: int,
                 period: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.ident = nn.Linear(identity_dim, hidden, bias=False)
        self.heads = heads
        self.period = period
        layer = nn.TransformerEncoderLayer(hidden, heads, ff, dropout, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        pe = torch.zeros(period, hidden)
        pos = torch.arange(period, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("ppe", pe, persistent=False)
        slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])
        self.register_buffer("slopes", slopes, persistent=False)

    def forward(self, h: torch.Tensor, ident: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        x = self.proj(h) + self.ident(ident)[:, None, :]
        x = x + self.ppe[torch.arange(T, device=h.device) % self.period][None]
        d = torch.arange(T, device=h.device)
        dist = ((d[None, :] - d[:, None]).abs() // self.period).to(x.dtype)  # (T, T)
        bias = -self.slopes[:, None, None].to(x.dtype) * dist[None]  # (heads, T, T)
        bias = bias[None].expand(B, -1, -1, -1).masked_fill(~mask[:, None, None, :], float("-inf"))
        x = self.layers(x, mask=bias.reshape(B * self.heads, T, T))
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
        self.identity = nn.Embedding(spec.n_identities, int(d["identity_dim"]))
        if d["type"] == "conv":
            self.decoder: nn.Module = TCNDecoder(self.encoder.dim, int(d["hidden"]), int(d["identity_dim"]),
                                                 int(d["layers"]), float(d["dropout"]))
        else:
            t = d["transformer"]
            self.decoder = TransformerDecoder(self.encoder.dim, int(d["hidden"]), int(d["identity_dim"]),
                                              int(t["heads"]), int(t["ff"]), int(t["layers"]), int(t["period"]),
                                              float(d["dropout"]))
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
        valid frames (B,)) of the frozen CNN, computed earlier (:mod:`unitalker.featcache`); ``audio`` is then
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
