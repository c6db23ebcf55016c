"""The training step, and what keeps the device busy around it (docs/unitalker.md, 'Speed').

* :class:`DeviceBatches`: the loader's batches with their inputs on the training device. The step's identity
  swap (the pivot with probability ``pivot_prob``, from the step's own seeded generator) is applied on the
  host; copies leave pinned memory on a side CUDA stream as soon as the step before is queued, so they overlap
  its kernels; cached CNN features are gathered on the device. The time spent waiting for the loader is
  recorded (the data wait).
* :func:`train_step`: forward (bf16 autocast on CUDA), the batched loss, backward, clipping, Adam (fused on
  CUDA); nothing is read back to the host, so the host can queue the next step while this one runs.
* :class:`StepLog`: each step's loss and parts are copied to the host without waiting and read one step later,
  when the next step is already queued; that read writes the log row and checks the loss is finite.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator, Optional

import torch

from a2fbench.errors import ConfigError

from .assemble import step_rng
from ..model.loss import PARTS


class DeviceBatches:
    """Iterate ``loader`` (one epoch) as ``(inputs on device, host batch, seconds waited for it)``."""

    def __init__(self, loader: Any, device: torch.device, *, seed: int, epoch: int, rank: int, pivot_prob: float,
                 pivot: int, skip: int = 0, cache: Any = None, buckets: bool = False,
                 feature_lengths: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.loader, self.device = loader, device
        self.seed, self.epoch, self.rank, self.skip = seed, epoch, rank, skip
        self.pivot_prob, self.pivot = float(pivot_prob), int(pivot)
        self.cache, self.buckets, self.feature_lengths = cache, buckets, feature_lengths
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __iter__(self) -> Iterator[tuple[dict, dict, float]]:
        it = iter(self.loader)
        b = self.skip
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            wait = time.perf_counter() - t0
            yield self.inputs(batch, b), batch, wait
            b += 1

    def swap(self, identity: torch.Tensor, b: int) -> torch.Tensor:
        """Batch ``b``'s identity rows with the step's pivot swaps (in place; the same draws as before)."""
        swap = torch.from_numpy(step_rng(self.seed, self.epoch, b, self.rank).random(len(identity)) < self.pivot_prob)
        identity[swap] = self.pivot
        return identity

    def inputs(self, batch: dict, b: int) -> dict:
        ident = self.swap(batch["identity"], b)
        dev = self.device
        side = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with side:
            def to(t: torch.Tensor) -> torch.Tensor:
                return t.to(dev, non_blocking=True)

            out: dict[str, Any] = {
                "n_samples": to(batch["n_samples"]), "n_frames": to(batch["n_frames"]), "identity": to(ident),
                "groups": {sp: {k: to(v) for k, v in g.items()} for sp, g in batch["groups"].items()},
                "host": {"T": int(batch["T"]), "all_full": bool(batch["all_full"])}, "audio": None}
            if self.cache is not None:
                L, full = self.cache.padded_length(batch["index"], self.buckets)
                out["host"].update(all_full=full, cnn=self.cache.gather(batch["index"], L),
                                   flen_host=self.cache.lengths_host[batch["index"]])
            else:
                out["audio"] = to(batch["audio"])
                if self.feature_lengths is not None:
                    out["host"]["flen_host"] = self.feature_lengths(batch["n_samples"])
        if self.stream is not None:
            main = torch.cuda.current_stream(dev)
            main.wait_stream(self.stream)
            for t in _tensors(out):
                if t.is_cuda:
                    t.record_stream(main)  # allocated on the side stream, used on the main one
        return out


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors(v)


def make_optimizer(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam, fused: one kernel for all parameters (CUDA; on the CPU one op instead of ~10 per parameter)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # a torch without a fused Adam for this device
        return torch.optim.Adam(params, lr=lr)


def train_step(net: torch.nn.Module, loss_fn: Any, opt: torch.optim.Optimizer, x: dict, *, amp: bool,
               grad_clip: float, params: list) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a :class:`DeviceBatches` item; returns (loss, parts) as device tensors."""
    groups = {sp: g["rows"] for sp, g in x["groups"].items()}
    dev = x["n_frames"].device
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev.type == "cuda" else contextlib.nullcontext()
    with ctx:
        outputs = net(x["audio"], x["n_samples"], x["n_frames"], x["identity"], groups, decode=False, **x["host"])
    loss, parts = loss_fn(outputs, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return loss.detach(), parts.detach()


class StepLog:
    """Rows of ``log.csv``, each written one step late (see module doc). ``write`` may be None (other ranks)."""

    def __init__(self, write: Optional[Callable[[dict], None]]):
        self.write = write
        self.pending: Optional[tuple[torch.Tensor, Any, dict]] = None
        self.losses: list[float] = []

    def push(self, loss: torch.Tensor, parts: torch.Tensor, row: dict) -> None:
        self.flush()
        vals = torch.cat([loss.reshape(1).float(), parts.float()])
        event = None
        if vals.device.type == "cuda":
            vals = vals.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.pending = (vals, event, row)

    def flush(self) -> None:
        if self.pending is None:
            return
        vals, event, row = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        loss, *parts = vals.tolist()
        if not math.isfinite(loss):
            raise ConfigError(f"expected a finite loss, found {loss} at epoch {row['epoch'] + 1} batch {row['batch']}; "
                              "lower train.lr or check the data")
        self.losses.append(loss)
        if self.write is not None:
            row.update({"loss": f"{loss:.6e}", **{k: f"{v:.6e}" for k, v in zip(PARTS, parts)}})
            self.write(row)
