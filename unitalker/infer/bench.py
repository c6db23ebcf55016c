"""Inference timing: our fast mode beside a reference mode of the same code, in one process.

* reference mode: fp32 weights, transformers' eager attention (WavLM: ``multi_head_attention_forward`` with the
  gated relative-position bias as ``attn_mask``), no compilation, no CUDA graphs: the way the paper's code
  computes;
* fast mode (:mod:`unitalker.infer.fastinfer`): SDPA attention, on CUDA the trunk in bf16 (heads and PCA decoding
  fp32), the CNN in the implementation and precision that time fastest on this shape, ``cudnn.benchmark``,
  the whole forward captured in a CUDA graph; ``--compile`` adds ``torch.compile`` (default mode).

Timed: the model forward only (trunk + one head with its decoding; audio already in memory as a tensor on
the device), ``warmup`` untimed calls first, then the median of ``runs`` calls, with CUDA events around each
call on a GPU (synchronised) or ``time.perf_counter`` on the CPU. Random weights time the same as trained ones.
Each fast row also gives the relative error of its trunk output against the reference mode's on the same input
(``rel_err``; bf16 on CUDA: expect a few 1e-3, the CPU test derives the bound).
"""

from __future__ import annotations

import copy
import functools
import logging
import statistics
from typing import Any, Optional

import numpy as np
import torch

from a2fbench.errors import ConfigError
from a2fbench.registry import all_spaces, all_specs
from a2fbench.util.constants import SAMPLE_RATE

from ..model.config import load_config
from .fastinfer import FastForward, time_calls
from ..model.model import HeadSpec, ModelSpec, UniTalker
from ..model.load import load_model
from ..model.runtime import device_name, select_device, set_threads

log = logging.getLogger(__name__)


def registry_spec(cfg: dict) -> ModelSpec:
    """Heads for every registered space (PCA of ``pca_dim`` for vertex spaces, orthonormal unit rows) and the
    identity count of UniTalker's release (Σ manifests' ``unitalker.identities`` + pivot = 935)."""

    used = {s.space for s in all_specs()}
    heads = []
    for name, sp in all_spaces().items():
        if name not in used:
            continue
        pca = None
        if sp.is_vertex and cfg["model"]["pca"]:
            k = min(int(cfg["model"]["pca_dim"]), sp.dim)
            pca = {"components": np.eye(k, sp.dim, dtype=np.float32), "mean": np.zeros(sp.dim, np.float32)}
        heads.append(HeadSpec(name, sp.dim, pca))
    n_ids = sum(int(s.unitalker.identities) for s in all_specs())
    return ModelSpec(heads, n_ids + 1, [f"id{i}" for i in range(n_ids)])


def _model_for(checkpoint: Optional[str], config: Optional[str], device: torch.device) -> tuple[UniTalker, dict, str]:
    if checkpoint is None and config is None:
        raise ConfigError("expected --checkpoint or --config, found neither; e.g. `unitalker bench --config unitalker-b`")
    cfg = None
    if config is not None:
        cfg = load_config(config)
        cfg["model"]["encoder"]["pretrained"] = False  # timing needs the architecture, not the weights
    if checkpoint is not None:
        loaded = load_model(checkpoint, "cpu", config=cfg)
        return loaded.model, loaded.cfg, f"checkpoint {loaded.meta['path']}"
    assert cfg is not None
    torch.manual_seed(0)
    return UniTalker(cfg, registry_spec(cfg)), cfg, f"config {config} (random weights)"


def reference_model(model: UniTalker, device: torch.device) -> UniTalker:
    """The reference mode: a float32 copy with transformers' eager attention."""
    m = copy.deepcopy(model).to(device).eval()
    m.encoder.set_attention("eager")
    return m


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).norm() / ref.double().norm().clamp(min=1e-30))


def bench(checkpoint: Optional[str] = None, config: Optional[str] = None, *, seconds: float = 10.0,
          device: str = "auto", batch: int = 16, runs: int = 20, warmup: int = 3, use_compile: bool = False,
          fps: float = 30.0, modes: tuple[str, ...] = ("reference", "fast"), graphs: bool = True) -> dict:
    """Time the forward of a 10 s clip (batch 1, and batch ``batch`` when > 1) in each mode; see module doc."""
    if runs < 20:
        raise ConfigError(f"expected at least 20 timed runs, found {runs}")
    dev = select_device(device)
    if dev.type == "cpu":
        set_threads(0)  # the cores not busy now (runtime.auto_threads): a busy neighbour stalls a full pool
    model, cfg, source = _model_for(checkpoint, config, dev)
    space = "flame_5023_verts" if "flame_5023_verts" in model.heads else next(iter(model.heads))
    n = int(round(seconds * SAMPLE_RATE))
    T = int(round(seconds * fps))
    g = torch.Generator().manual_seed(0)
    audio_cpu = (0.1 * torch.randn(max(batch, 1), n, generator=g))
    rows = []
    n_params = sum(p.numel() for p in model.parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    batches = [1] + ([batch] if batch > 1 else [])
    ref = reference_model(model, dev)
    for B in batches:
        x = audio_cpu[:B].to(dev)
        nn_, tt = torch.full((B,), n, device=dev), torch.full((B,), T, device=dev)
        ident = torch.full((B,), ref.pivot, device=dev)
        with torch.inference_mode():
            ref_feats = ref.features(x, nn_, tt, ident) if "fast" in modes else None
        for mode in modes:
            extra: dict[str, Any] = {}
            if mode == "reference":
                torch.backends.cudnn.benchmark = False  # the reference as the paper's code runs (FastForward sets it)
                groups = {space: torch.arange(B, device=dev)}

                def fn() -> Any:
                    with torch.inference_mode():
                        return ref(x, nn_, tt, ident, groups)

                dtype, attention = "float32", "eager"
            else:
                ff = FastForward(model, dev, B, n, T, space, graphs=graphs, compile=use_compile)
                fn = functools.partial(ff, x)  # noqa: F811
                extra = {**ff.describe(), "rel_err": rel_err(ff.features(x), ref_feats)}
                dtype, attention = extra.pop("dtype"), "sdpa"
            times = time_calls(fn, dev, warmup if dev.type == "cpu" else max(warmup, 5), runs)
            med = statistics.median(times)
            rows.append({"mode": mode, "batch": B, "median_ms": med * 1e3, "p10_ms": float(np.percentile(times, 10)) * 1e3,
                         "p90_ms": float(np.percentile(times, 90)) * 1e3, "audio_s_per_s": B * seconds / med,
                         "dtype": dtype, "attention": attention, "compiled": bool(use_compile and mode == "fast"),
                         **extra})
            log.info("%s batch %d: %.2f ms", mode, B, med * 1e3)
            if mode == "fast":
                del ff, fn
    speed = {}
    for B in batches:
        r = {x["mode"]: x for x in rows if x["batch"] == B}
        if "reference" in r and "fast" in r:
            speed[f"batch{B}"] = r["reference"]["median_ms"] / r["fast"]["median_ms"]
    return {"device": device_name(dev), "device_type": dev.type, "source": source, "seconds": seconds, "fps": fps,
            "head": space, "runs": runs, "warmup": warmup, "params": n_params, "encoder_params": n_enc,
            "torch": torch.__version__, "rows": rows, "speedup_fast_vs_reference": speed}


def format_report(rep: dict) -> str:
    lines = [f"device: {rep['device']}", f"model: {rep['source']}; {rep['params'] / 1e6:.2f} M parameters "
             f"(encoder {rep['encoder_params'] / 1e6:.2f} M); head {rep['head']}",
             f"input: {rep['seconds']:g} s of 16 kHz audio -> {int(round(rep['seconds'] * rep['fps']))} frames; "
             f"median of {rep['runs']} runs after {rep['warmup']} warm-up",
             f"{'mode':<10} {'batch':>5} {'dtype':>9} {'attention':>9} {'median ms':>10} {'p10-p90 ms':>17} {'audio-s/s':>10}"]
    for r in rep["rows"]:
        how = f"  CNN {r['cnn']}, graph {'yes' if r['graph'] else 'no'}, rel. err {r['rel_err']:.1e}" \
            if r["mode"] == "fast" else ""
        lines.append(f"{r['mode']:<10} {r['batch']:>5} {r['dtype']:>9} {r['attention']:>9} {r['median_ms']:>10.2f} "
                     f"{r['p10_ms']:>8.2f}-{r['p90_ms']:<8.2f} {r['audio_s_per_s']:>10.1f}{how}")
    for k, v in rep["speedup_fast_vs_reference"].items():
        lines.append(f"fast vs reference, {k}: {v:.2f}x")
    return "\n".join(lines)
