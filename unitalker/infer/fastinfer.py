"""Fast inference for a fixed shape (B clips of N samples, T frames, one head): the fast mode of ``bench``.

* Trunk: SDPA attention; on CUDA the encoder, decoder and identity table in bf16 (heads and PCA decoding stay
  float32); no host reads inside the forward (the frame count and "no padding" are given), so it can be
  captured.
* CNN: the candidates (stock convolutions or :class:`~unitalker.model.fastcnn.GemmCNN`, each in float32 or bf16 on
  CUDA) are timed on the actual shape when the forward is built and the fastest is kept: at batch 1 bf16
  convolutions were slower than float32 on an H200, at batch 16 faster, and the GEMM form avoids cuDNN's
  implicit-GEMM kernels altogether. ``cnn=`` forces one (tests).
* CUDA graphs: after warm-up the whole forward is captured once and replayed (one launch instead of ~2,000;
  the batch-1 forward is otherwise bound by launching). If capture fails the forward runs eagerly and the
  report says so.
* ``compile=True``: ``torch.compile`` in its default mode (no max-autotune: its Triton configurations ran out
  of shared memory on an H200 and did not finish in 150 s), before the capture.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Any, Callable, Optional

import torch

from ..model.fastcnn import GemmCNN

log = logging.getLogger(__name__)


def _conv_cnn(fe: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(audio: torch.Tensor) -> torch.Tensor:
        x = audio[:, None]
        for layer in fe.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)

    return run


def time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn()`` after ``warmup`` untimed ones: on a GPU CUDA events around
    each call, the device synchronised after the warm-up and after each call; on the CPU ``time.perf_counter``."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    out = []
    for _ in range(runs):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize(device)
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


class FastForward:
    """``ff(audio (B, N)) -> {space: (offset (B, T, D), z)}`` for one fixed shape; see module doc."""

    def __init__(self, model: torch.nn.Module, device: torch.device, B: int, N: int, T: int, space: str, *,
                 trunk_dtype: Optional[torch.dtype] = None, cnn: Optional[str] = None, graphs: bool = True,
                 compile: bool = False):
        cuda = device.type == "cuda"
        self.device, self.space, self.B, self.N, self.T = device, space, B, N, T
        self.trunk_dtype = trunk_dtype or (torch.bfloat16 if cuda else torch.float32)
        m = copy.deepcopy(model).to(device).eval()
        m.encoder.set_attention("sdpa")
        fe = model.encoder.hf.feature_extractor  # the caller's float32 weights: candidates copy from these
        m.encoder.to(self.trunk_dtype)
        m.decoder.to(self.trunk_dtype)
        m.identity.to(self.trunk_dtype)
        self.model = m
        if cuda:
            torch.backends.cudnn.benchmark = True
        self.n_samples = torch.full((B,), N, device=device)
        self.n_frames = torch.full((B,), T, device=device)
        self.ident = torch.full((B,), m.pivot, device=device)
        L = int(m.encoder.feature_lengths(N))
        self.flen = torch.full((B,), L, device=device)
        cands = self._candidates(model, fe, cuda) if cnn is None else {cnn: self._make(cnn, model, fe)}
        self.timings: dict[str, float] = {}
        self.x = (0.1 * torch.randn(B, N, generator=torch.Generator().manual_seed(1))).to(device)
        with torch.inference_mode():
            if len(cands) > 1:
                for name, c in cands.items():
                    times = time_calls(lambda: self._forward(c, self.x), device, warmup=2, runs=5)
                    self.timings[name] = statistics.median(times)
            self.cnn_name = min(self.timings, key=self.timings.get) if self.timings else next(iter(cands))
        self._cnn = cands[self.cnn_name]
        del cands
        fn: Callable[[torch.Tensor], dict] = lambda a: self._forward(self._cnn, a)  # noqa: E731
        self.compiled = False
        if compile:
            fn = torch.compile(fn, mode="default", dynamic=False)
            self.compiled = True
        self._fn = fn
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.graph_error = ""
        if cuda and graphs:
            self._capture()
        log.info("fast forward B=%d N=%d: CNN %s (%s), graph %s%s", B, N, self.cnn_name,
                 ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in self.timings.items()) or "forced",
                 self.graph is not None, f" ({self.graph_error})" if self.graph_error else "")

    # ---- the CNN candidates
    def _make(self, name: str, model: torch.nn.Module, fe: torch.nn.Module) -> Callable:
        impl, dt = name.split("-")
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt]
        if impl == "gemm":
            g = GemmCNN(model.encoder, dtype).to(self.device)
            return lambda a: g(a.to(dtype))
        f = copy.deepcopy(fe).to(self.device, dtype)
        run = _conv_cnn(f)
        return lambda a: run(a.to(dtype))

    def _candidates(self, model: torch.nn.Module, fe: torch.nn.Module, cuda: bool) -> dict[str, Callable]:
        names = ["conv-fp32", "gemm-fp32"] + (["conv-bf16", "gemm-bf16"] if cuda else [])
        return {n: self._make(n, model, fe) for n in names}

    # ---- the forward
    def _trunk(self, cnn: Callable, audio: torch.Tensor) -> torch.Tensor:
        feats = cnn(audio).to(self.trunk_dtype)
        return self.model.features(None, self.n_samples, self.n_frames, self.ident, T=self.T, all_full=True,
                                   cnn=(feats, self.flen))

    def _forward(self, cnn: Callable, audio: torch.Tensor) -> dict:
        return {self.space: self.model.head(self.space, self._trunk(cnn, audio))}

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """The trunk's (B, T, C) output for ``audio`` (eager, for checking against the reference mode)."""
        with torch.inference_mode():
            return self._trunk(self._cnn, audio).float()

    def _capture(self) -> None:
        try:
            with torch.inference_mode():
                s = torch.cuda.Stream(self.device)
                s.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(s):
                    for _ in range(3):
                        self._fn(self.x)
                torch.cuda.current_stream(self.device).wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    self.out = self._fn(self.x)
            self.graph = g
        except Exception as e:  # report and run without a graph rather than fail the benchmark
            self.graph = None
            self.graph_error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
            torch.cuda.synchronize(self.device)

    def __call__(self, audio: torch.Tensor) -> dict:
        with torch.inference_mode():
            if self.graph is None:
                return self._fn(audio)
            self.x.copy_(audio)
            self.graph.replay()
            return self.out

    def describe(self) -> dict:
        return {"cnn": self.cnn_name, "cnn_timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()},
                "graph": self.graph is not None, "graph_error": self.graph_error, "compiled": self.compiled,
                "dtype": str(self.trunk_dtype).replace("torch.", "")}
