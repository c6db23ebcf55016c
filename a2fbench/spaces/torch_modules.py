"""torch twins of the output-space converters in :mod:`a2fbench.spaces` (built by ``spaces.torch_converter``).

Each module maps (..., P) to (..., V, 3) and is differentiable, so a training loss can rebuild vertices
through the output space. Converter arrays are registered as *non-persistent* buffers: they follow
``.to(device)`` but stay out of ``state_dict`` (a checkpoint does not carry the FLAME model or a basis).
Computation runs in the buffers' dtype (float32 by default); inputs are cast to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SpaceError


def _check_width(x: torch.Tensor, width: int, what: str) -> None:
    if x.dim() == 0 or x.shape[-1] != width:
        raise SpaceError(f"expected {what} frames of width {width} (shape (..., {width})), found shape "
                         f"{tuple(x.shape)}; pass one row of {width} values per frame")


def _buf(m: nn.Module, name: str, a: Any, dtype: torch.dtype) -> None:
    m.register_buffer(name, torch.as_tensor(np.ascontiguousarray(a)).to(dtype), persistent=False)


class VertexReshape(nn.Module):
    """Vertex spaces: (..., 3V) -> (..., V, 3)."""

    def __init__(self, n_vertices: int):
        super().__init__()
        self.n_vertices = n_vertices
        self.n_params = 3 * n_vertices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_width(x, self.n_params, "vertex")
        return x.reshape(*x.shape[:-1], self.n_vertices, 3)


class TorchBlendshapes(nn.Module):
    """``vertices = w @ B + mean``: (..., K) -> (..., V, 3)."""

    def __init__(self, mean: np.ndarray, B: np.ndarray, dtype: Any = None):
        super().__init__()
        dtype = dtype or torch.float32
        _buf(self, "mean", np.asarray(mean).reshape(-1), dtype)
        _buf(self, "B", np.asarray(B).reshape(B.shape[0], -1), dtype)
        self.n_params = int(B.shape[0])
        self.n_vertices = int(self.mean.numel() // 3)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        _check_width(w, self.n_params, "blendshape weight")
        v = w.to(self.B.dtype) @ self.B + self.mean
        return v.reshape(*w.shape[:-1], self.n_vertices, 3)


def rodrigues(r: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3); smooth at zero (Taylor branch), so gradients stay finite there."""
    t2 = (r * r).sum(-1)
    small = t2 < 1e-8
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / t2_safe)
    x, y, z = r.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*r.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


class TorchFlame(nn.Module):
    """The 413-wide UniTalker FLAME vector -> FLAME vertices by batched LBS: (..., 413) -> (..., V, 3).

    Same maths as :func:`a2fbench.spaces.flame_lbs` (global rotation, neck, eyes zero; rotation, translation
    and scale ignored), built from a numpy ``FlameConverter``.
    """

    def __init__(self, conv: Any, dtype: Any = None):
        super().__init__()
        dtype = dtype or torch.float32
        m = conv.model
        self.layout = dict(conv.layout)
        self.n_params = conv.n_params
        self.n_vertices = m.n_vertices
        self.n_joints = m.n_joints
        self.parents = [int(p) for p in m.parents]
        self.jaw_joint = 2
        for name in ("v_template", "dirs", "J_template", "J_dirs", "posedirs", "weights"):
            _buf(self, name, getattr(m, name), dtype)

    def lbs(self, betas: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """betas (N, S+E), pose (N, J, 3) -> (N, V, 3)."""
        N, V, J = betas.shape[0], self.n_vertices, self.n_joints
        v_shaped = (self.v_template.reshape(-1) + betas @ self.dirs).reshape(N, V, 3)
        joints = (self.J_template.reshape(-1) + betas @ self.J_dirs).reshape(N, J, 3)
        R = rodrigues(pose)
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        pose_feat = (R[:, 1:] - eye).reshape(N, -1)
        v_posed = v_shaped + (pose_feat @ self.posedirs).reshape(N, V, 3)
        rots: list[torch.Tensor] = []
        trans: list[torch.Tensor] = []
        for j in range(J):
            p = self.parents[j]
            if p < 0:
                rots.append(R[:, j])
                trans.append(joints[:, j])
            else:
                rel = joints[:, j] - joints[:, p]
                rots.append(rots[p] @ R[:, j])
                trans.append((rots[p] @ rel[..., None])[..., 0] + trans[p])
        Rw = torch.stack(rots, 1)  # (N, J, 3, 3)
        tw = torch.stack(trans, 1) - (Rw @ joints[..., None])[..., 0]  # relative to the rest pose
        A = torch.cat([Rw, tw[..., None]], -1).reshape(N, J, 12)
        T = (self.weights @ A).reshape(N, V, 3, 4)
        return (T[..., :3] @ v_posed[..., None])[..., 0] + T[..., 3]

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        _check_width(params, self.n_params, "FLAME parameter")
        lead = params.shape[:-1]
        P = params.reshape(-1, self.n_params).to(self.dirs.dtype)
        L = self.layout
        betas = torch.cat([P[:, L["shape"][0]:L["shape"][1]], P[:, L["expression"][0]:L["expression"][1]]], 1)
        jaw = P[:, L["jaw"][0]:L["jaw"][1]]
        zeros = torch.zeros_like(jaw)
        pose = torch.stack([jaw if j == self.jaw_joint else zeros for j in range(self.n_joints)], 1)
        return self.lbs(betas, pose).reshape(*lead, self.n_vertices, 3)


class TorchPCA(nn.Module):
    """PCA encode/decode in torch (``forward`` = decode); non-persistent buffers ``components`` (K, D), ``mean``."""

    def __init__(self, components: np.ndarray, mean: np.ndarray, dtype: Any = None):
        super().__init__()
        dtype = dtype or torch.float32
        _buf(self, "components", components, dtype)
        _buf(self, "mean", np.asarray(mean).reshape(-1), dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _check_width(x, self.components.shape[1], "data")
        return (x.to(self.mean.dtype) - self.mean) @ self.components.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        _check_width(z, self.components.shape[0], "PCA coefficient")
        return z.to(self.mean.dtype) @ self.components + self.mean

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)
