"""The frozen CNN feature extractor's output, computed once per run instead of every step.

With ``model.encoder.freeze_feature_extractor`` (UniTalker-B/-L) the seven convolutions before the
transformer are frozen in both training phases, so their output for a clip is a pure function of its audio.
The training step recomputed it for every clip of every batch of every epoch (on an H200, its bf16
implicit-GEMM convolutions were 35% of the GPU time of a step). :class:`FeatureCache` computes it once, when
training starts, each clip alone and in float32 (the better precision numerically: the reference computes it
so, at batch 1 in float32; on CUDA cuDNN may use TF32), keeps the valid frames of every training clip in one flat tensor (bfloat16
under bf16 autocast on CUDA, where the step would have produced bfloat16 features anyway; float32 otherwise),
on the GPU when it takes under a quarter of the free memory, else in host memory, and hands the step a padded
(B, L, C) batch of them by one gather.

A clip's valid feature frames do not depend on the padding around it (each valid output frame of a
convolution sees only valid input; the first layer's GroupNorm statistics are over the valid samples), so
caching changes no value beyond rounding (tests/test_unitalker_speed.py compares training losses).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from a2fbench.util.progress import bar as progress_bar

from .batches import bucket
from ..model.encoder import conv_out_length

log = logging.getLogger(__name__)


def applies(cfg: dict) -> bool:
    """Whether a run may cache the CNN's features: it is frozen throughout (and caching is on)."""
    return bool(cfg["train"]["cache_features"]) and bool(cfg["model"]["encoder"]["freeze_feature_extractor"])


class FeatureCache:
    """Valid CNN feature frames of every clip of a :class:`~unitalker.train.data.ClipSet`, in one flat tensor.

    ``feats`` (F + 1, C): clip i's frames are rows ``starts[i] : starts[i] + lengths[i]``; the last row is zeros
    (what padded positions gather). ``lengths_host`` is a CPU copy, so a batch's padded length is known
    without reading the device.
    """

    def __init__(self, feats: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, device: torch.device):
        self.feats = feats
        self.starts = starts.to(feats.device)
        self.lengths = lengths.to(feats.device)
        self.lengths_host = lengths.cpu()
        self.device = device

    @property
    def nbytes(self) -> int:
        return self.feats.numel() * self.feats.element_size()

    @classmethod
    def build(cls, encoder: Any, clips: Any, device: torch.device, dtype: torch.dtype,
              progress: bool = False) -> "FeatureCache":
        """Run the CNN over every clip of ``clips`` once: float32, eval, no autograd, each clip alone (no padding,
        as a batch of one computes it: the cached features are bit for bit those of batch-1 training)."""
        n_samples = list(clips.samples)  # each clip's audio as training reads it (the shorter of recording, motion)
        lengths = torch.tensor([int(conv_out_length(n, encoder.kernels, encoder.strides)) for n in n_samples])
        starts = torch.zeros(len(lengths), dtype=torch.long)
        starts[1:] = torch.cumsum(lengths, 0)[:-1]
        total = int(lengths.sum())
        C = int(encoder.hf.config.conv_dim[-1])
        nbytes = (total + 1) * C * torch.tensor([], dtype=dtype).element_size()
        where = device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes > free // 4:
                where = torch.device("cpu")
                log.info("CNN feature cache: %.2f GB is over a quarter of the GPU's free %.2f GB; keeping it in "
                         "host memory", nbytes / 1e9, free / 1e9)
        feats = torch.zeros(total + 1, C, dtype=dtype, device=where)
        was, load, tune = encoder.training, clips.load_audio, torch.backends.cudnn.benchmark
        encoder.eval()
        clips.load_audio = True
        torch.backends.cudnn.benchmark = False  # every clip has its own length: tuning each would cost more
        bar = progress_bar(total=len(clips), desc="CNN features", show=progress, unit="clip", leave=False)
        try:
            with torch.inference_mode(), torch.autocast(device.type, enabled=False):
                for i in range(len(clips)):
                    audio = clips[i]["audio"].to(device, torch.float32)[None]
                    f, _ = encoder.cnn_features(audio, None, True)
                    s, n = int(starts[i]), int(lengths[i])
                    feats[s:s + n] = f[0, :n].to(where, dtype)
                    bar.update(1)
        finally:
            bar.close()
            clips.load_audio = load
            encoder.train(was)
            torch.backends.cudnn.benchmark = tune
        log.info("CNN feature cache: %d clips, %d frames x %d, %s, %.2f GB on %s", len(clips), total, C,
                 str(dtype).replace("torch.", ""), nbytes / 1e9, where)
        return cls(feats, starts, lengths, device)

    def padded_length(self, index: torch.Tensor, buckets: bool = False) -> tuple[int, bool]:
        """(L, all_full) of a batch of clip indices (CPU): its longest clip's frames (on the :func:`bucket`
        grid when ``buckets``) and whether every clip fills them."""
        n = self.lengths_host[index]
        L = int(n.max())
        if buckets:
            L = bucket(L)
        return L, bool((n == L).all())

    def gather(self, index: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``index`` -> (B, L, C) features on the training device (zeros past each clip's frames), (B,)
        valid frames. ``index`` may be on the cache's device or the CPU; nothing is read back."""
        index = index.to(self.feats.device, non_blocking=True)
        pos = torch.arange(L, device=self.feats.device)
        n = self.lengths[index]
        rows = torch.where(pos[None, :] < n[:, None], self.starts[index][:, None] + pos[None, :], self.feats.shape[0] - 1)
        out = self.feats.index_select(0, rows.reshape(-1)).view(len(index), L, -1)
        if out.device != self.device:
            out = out.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else out.to(self.device)
            n = n.to(self.device)
        return out, n
