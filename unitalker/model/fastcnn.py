"""The CNN feature extractor as strided matrix products in time-major layout (inference).

transformers runs the seven ``Conv1d`` layers (kernel k, stride s) channel-major, (B, C, L); in bf16 cuDNN
picks implicit-GEMM kernels for them that are slow at small batches (UniTalker-B's fast mode at batch 1 was
slower than fp32 because of them). In time-major layout (B, L, C) a strided convolution is a sum of ceil(k/s)
ordinary matrix products on views of its input, with no im2col copy: viewing the input as rows of s
consecutive frames (B*L/s, s*C), output frame j is ``sum_q rows[j + q][:, taps of q] @ W_q``. Each product
runs on the flattened batch in place (``addmm_`` into the output), so a layer is one to two GEMMs plus its
norm and GELU; the last rows of each clip that these read across the clip boundary are dropped.

Same function as the stock module (tests/test_unitalker_speed.py: float32 agreement at rounding level), the
first layer's GroupNorm over each clip's valid frames as in :func:`unitalker.model.encoder._masked_group_norm`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _taps(w: torch.Tensor, s: int) -> list[torch.Tensor]:
    """Conv weight (Cout, Cin, k) -> per-row-shift matrices W_q (width_q * Cin, Cout), q = 0..ceil(k/s)-1,
    each tap t = q*s + r in row block r (matching the time-major rows of s frames x Cin channels)."""
    cout, cin, k = w.shape
    out = []
    for q in range(-(-k // s)):
        taps = range(q * s, min(k, q * s + s))
        out.append(torch.cat([w[:, :, t].t() for t in taps], 0))  # (len(taps) * cin, cout)
    return out


class GemmCNN(nn.Module):
    """A frozen copy of an :class:`~unitalker.model.encoder.AudioEncoder`'s CNN: (B, N) audio -> (B, L, C)."""

    def __init__(self, encoder: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.kernels, self.strides = list(encoder.kernels), list(encoder.strides)
        self.norms: list[str] = []
        self.act = []
        for i, layer in enumerate(encoder.hf.feature_extractor.conv_layers):
            conv = layer.conv
            for q, wq in enumerate(_taps(conv.weight.detach().float(), self.strides[i])):
                self.register_buffer(f"w{i}_{q}", wq.to(dtype).contiguous())
            self.register_buffer(f"b{i}", None if conv.bias is None else conv.bias.detach().to(dtype))
            norm = getattr(layer, "layer_norm", None)
            kind = "group" if isinstance(norm, nn.GroupNorm) else "layer" if isinstance(norm, nn.LayerNorm) else "none"
            self.norms.append(kind)
            if kind != "none":
                self.register_buffer(f"g{i}", norm.weight.detach().float())
                self.register_buffer(f"h{i}", norm.bias.detach().float())
                setattr(self, f"eps{i}", float(norm.eps))
            self.act.append(layer.activation)
        self.dtype = dtype

    def _layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """(B, L, Cin) contiguous -> (B, L_out, Cout) pre-norm output."""
        B, L, cin = x.shape
        k, s = self.kernels[i], self.strides[i]
        L_out = (L - k) // s + 1
        Lq = -(-L // s)
        if Lq * s != L:
            x = F.pad(x, (0, 0, 0, Lq * s - L))
        rows = x.view(B * Lq, s * cin)
        ws = [getattr(self, f"w{i}_{q}") for q in range(-(-k // s))]
        bias = getattr(self, f"b{i}")
        y = torch.mm(rows, ws[0]) if bias is None else torch.addmm(bias, rows, ws[0])
        for q in range(1, len(ws)):
            y[: B * Lq - q].addmm_(rows[q:, : ws[q].shape[0]], ws[q])
        return y.view(B, Lq, -1)[:, :L_out]

    def forward(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = audio.to(self.dtype).contiguous()[:, :, None]  # (B, N, 1)
        n = lengths
        for i in range(len(self.kernels)):
            y = self._layer(x, i)
            kind = self.norms[i]
            if kind == "group":  # per channel over (each clip's valid) frames, statistics in float32
                yf = y.float()
                if n is not None:
                    n = (n - self.kernels[i]) // self.strides[i] + 1
                    m = (torch.arange(y.shape[1], device=y.device)[None, :] < n[:, None]).float()[..., None]
                    cnt = n.float().clamp(min=1)[:, None, None]
                    mean = (yf * m).sum(1, keepdim=True) / cnt
                    var = (((yf - mean) * m) ** 2).sum(1, keepdim=True) / cnt
                else:
                    var, mean = torch.var_mean(yf, 1, correction=0, keepdim=True)
                y = ((yf - mean) * torch.rsqrt(var + getattr(self, f"eps{i}")) * getattr(self, f"g{i}")
                     + getattr(self, f"h{i}")).to(self.dtype)
                n = None  # later layers have no per-clip statistics
            elif kind == "layer":
                y = F.layer_norm(y.float(), (y.shape[-1],), getattr(self, f"g{i}"), getattr(self, f"h{i}"),
                                 getattr(self, f"eps{i}")).to(self.dtype)
            x = self.act[i](y).contiguous()
        return x
