"""The loss of the paper's Eq. 2, per clip, averaged over the clips of a batch.

For a clip in space s with prediction ``P = offset + template`` and ground truth ``G`` (scaled units, valid
frames only):

* vertex spaces: ``MSE(P, G)`` over all coordinates;
* parameter spaces: ``MSE(V(P), V(G)) + w * MSE(P, G)``, with ``V`` the space's converter (blendshape basis
  or FLAME LBS) rebuilding vertices; ``w`` is ``train.param_weight`` for blendshapes (UniTalker's
  ``blendshape_weight`` 1e-4) and ``train.flame_param_weight`` for FLAME (UniTalker: 0, our default 1e-4), whose
  vertex term runs on ``train.flame_face_index`` when given (UniTalker's ``flame_humanface_index.npy``, which
  the release does not ship) and on all vertices otherwise (docs/unitalker.md);
* PCA heads add ``pca_weight * MSE(z, encode(G - template))`` (UniTalker: 0.01).

With batch size 1 this is UniTalker's per-clip loss exactly; a batch averages the per-clip losses, so every
clip weighs the same whatever its length, as in the reference's batch-1 training.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from a2fbench.errors import ConfigError
from a2fbench.registry import get_space
from a2fbench.spaces import torch_converter as tc
from a2fbench.spaces.torch_modules import TorchFlame


def torch_converter(space: str, arrays: dict) -> Optional[nn.Module]:
    """The space's differentiable converter (None for vertex spaces)."""

    if get_space(space).is_vertex:
        return None

    return tc(space, arrays)


def read_vertex_index(path: str, n_vertices: int, what: str) -> np.ndarray:
    """A 1-D .npy of vertex indices (e.g. UniTalker's ``flame_humanface_index.npy``), checked against the mesh."""
    try:
        idx = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ConfigError(f"{what}: expected a .npy of vertex indices at {path}, found {type(e).__name__} ({e}); "
                          "check the path") from None
    idx = np.asarray(idx).reshape(-1)
    if not np.issubdtype(idx.dtype, np.integer) or idx.size == 0 or idx.min() < 0 or idx.max() >= n_vertices:
        raise ConfigError(f"{what}: expected integer indices in 0..{n_vertices - 1}, found {idx.size} values of "
                          f"dtype {idx.dtype}{f' in {idx.min()}..{idx.max()}' if idx.size else ''}")
    return idx.astype(np.int64)


def _frame_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame mean squared error: (b, T, ...) x2 -> (b, T)."""
    d = (a - b) ** 2
    return d.reshape(d.shape[0], d.shape[1], -1).mean(-1)


#: the loss terms, in the order of the parts tensor :meth:`Eq2Loss.forward` returns
PARTS = ("rec", "pca", "param")


class Eq2Loss(nn.Module):
    """Eq. 2 for a batch grouped by space (see module doc).

    A PCA head's vertex MSE is computed in its subspace: the rows of C are orthonormal, so for
    ``P = zC + mean + template`` and ``x = G - template - mean``, ``|P - G|^2 = |z - xC'|^2 + (|x|^2 - |xC'|^2)``,
    the same value and the same gradient as decoding all D coordinates (tested), without the (T, D) tensors.

    Batched over the heads present: each group contributes its per-frame terms (rec, pca, param; zero where a
    head has no such term), stacked into one (3, B, T) tensor that is masked and averaged once. Nothing is read
    back to the host: the caller reads the parts when it logs them.
    """

    def __init__(self, converters: dict[str, Optional[nn.Module]], scales: dict[str, float], dims: dict[str, int],
                 pca_weight: float, param_weight: float, flame_param_weight: Optional[float] = None,
                 flame_index: Optional[np.ndarray] = None):
        super().__init__()
        self.converters = nn.ModuleDict({k: v for k, v in converters.items() if v is not None})
        self.scales = scales  # space -> unitalker scale of the (first) dataset in that space
        self.dims = dims  # space -> D
        self.pca_weight = float(pca_weight)
        self.param_weight = float(param_weight)
        flame = {k for k, conv in self.converters.items() if isinstance(conv, TorchFlame)}
        fw = float(param_weight if flame_param_weight is None else flame_param_weight)
        self.param_weights = {k: (fw if k in flame else float(param_weight)) for k in self.converters}
        # space -> the vertex indices its vertex term runs on, as non-persistent buffers: .to(device) moves them
        # once with the module (not every step), and they stay out of state_dict
        self.indexed = frozenset(flame if flame_index is not None else ())
        for k in sorted(self.indexed):
            self.register_buffer(f"vertex_index_{k}", torch.as_tensor(np.asarray(flame_index, np.int64)),
                                 persistent=False)

    @classmethod
    def from_config(cls, converters: dict[str, Optional[nn.Module]], scales: dict[str, float], dims: dict[str, int],
                    tc: dict) -> "Eq2Loss":
        """From the ``train`` config: ``pca_weight``, ``param_weight``, ``flame_param_weight``, ``flame_face_index``."""
        idx = None
        if tc.get("flame_face_index"):
            idx = read_vertex_index(tc["flame_face_index"], 5023, "train.flame_face_index")
        return cls(converters, scales, dims, tc["pca_weight"], tc["param_weight"], tc.get("flame_param_weight"), idx)

    def vertices(self, space: str, x: torch.Tensor) -> torch.Tensor:
        s = self.scales.get(space, 1.0)
        conv = self.converters[space]
        v = conv(x / s) * s if s != 1.0 else conv(x)
        return v[..., getattr(self, f"vertex_index_{space}"), :] if space in self.indexed else v

    def _frame_terms(self, space: str, out: tuple, g: dict, T: int) -> torch.Tensor:
        """One group's per-frame (3, b, T) terms: vertex MSE, PCA MSE, parameter MSE."""
        offset, z = out
        if "z" in g:  # PCA head: vertex MSE and PCA MSE in the subspace
            dz2 = ((z - g["z"][:, :T]) ** 2).sum(-1)  # (b, T)
            return torch.stack([(dz2 + g["r2"][:, :T]) / self.dims[space], dz2 / z.shape[-1], torch.zeros_like(dz2)])
        gt = g["motion"][:, :T]
        pred = offset + g["template"][:, None, :]
        if space in self.converters:
            rec = _frame_mse(self.vertices(space, pred), self.vertices(space, gt))
            return torch.stack([rec, torch.zeros_like(rec), _frame_mse(pred, gt)])
        rec = _frame_mse(pred, gt)
        zero = torch.zeros_like(rec)
        return torch.stack([rec, zero, zero])

    def forward(self, outputs: dict[str, tuple], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over the batch's clips of their Eq. 2 losses, and the batch mean of each term (a (3,) tensor in
        :data:`PARTS` order, for the log)."""
        n_frames = batch["n_frames"]
        B = int(n_frames.shape[0])
        terms, rows, pw = [], [], []
        for space, g in batch["groups"].items():
            out = outputs[space]
            T = (out[1] if out[0] is None else out[0]).shape[1]
            terms.append(self._frame_terms(space, out, g, T))
            rows.append(g["rows"])
            t = terms[-1]  # filled on the device: no host-to-device copy, no sync
            pw.append(torch.full((t.shape[1],), self.param_weights.get(space, self.param_weight), dtype=t.dtype,
                                 device=t.device))
        x = torch.cat(terms, 1) if len(terms) > 1 else terms[0]  # (3, B, T)
        r = torch.cat(rows) if len(rows) > 1 else rows[0]
        mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < n_frames[r][:, None]).to(x.dtype)
        per_clip = (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (3, B): each clip's mean over its frames
        parts = per_clip.sum(1) / B  # unweighted, for the log
        # per clip: 1 x rec + pca_weight x pca + its space's parameter weight x param
        p = torch.cat(pw) if len(pw) > 1 else pw[0]
        w = torch.stack([torch.ones_like(p), torch.full_like(p, self.pca_weight), p]).to(per_clip.dtype)
        return (per_clip * w).sum() / B, parts
