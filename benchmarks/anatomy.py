"""Anatomy of a training step, measurable without a GPU: operations dispatched (a proxy for kernel launches on
CUDA: one ATen operation is one launch for most operations; views, reshapes and detaches launch nothing and are
not counted), and host reads of tensor values (``.item()``, ``float(t)``, boolean indexing: each one a
device-to-host sync on CUDA). On CUDA, :func:`cuda_profile` adds the kernels actually launched and the GPU's
busy time from ``torch.profiler``, and :func:`count_syncs` the syncs torch reports."""

from __future__ import annotations

import collections
import contextlib
import warnings
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: operations that only make views or move metadata (no kernel)
NO_KERNEL = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "slice", "select", "unsqueeze", "squeeze",
             "as_strided", "detach", "alias", "split", "split_with_sizes", "unbind", "chunk", "reshape", "narrow",
             "_reshape_alias", "lift_fresh", "empty", "empty_like", "empty_strided", "set_", "resize_",
             "_to_copy_view", "unflatten", "flatten", "view_as", "expand_as", "diagonal", "_has_compatible_shallow_copy_type"}
HOST_READS = {"_local_scalar_dense", "nonzero", "item", "equal", "is_nonzero"}


class OpCounter(TorchDispatchMode):
    """Counts the operations dispatched while active (forward, backward and optimizer alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.host_reads: collections.Counter = collections.Counter()
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in HOST_READS:
            self.host_reads[name] += 1
        if not (getattr(func, "is_view", False) or name in NO_KERNEL):
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    def __call__(self) -> "OpCounter":  # Trainer.step_context is a factory; the same counter every step
        self.calls += 1
        return self

    def per_step(self) -> dict:
        n = max(self.calls, 1)
        return {"ops": sum(self.ops.values()) / n, "host_reads": sum(self.host_reads.values()) / n,
                "top_ops": {k: round(v / n, 1) for k, v in self.ops.most_common(12)},
                "host_read_ops": {k: round(v / n, 1) for k, v in self.host_reads.items()}}


class StepInstruments:
    """A ``Trainer.step_context`` factory: steps before ``start`` run bare; then ``n`` steps under the
    :class:`OpCounter`, and on CUDA ``n`` steps under torch.profiler (kept open across them, so the busy
    fraction counts the gaps between steps too) and ``n`` steps with sync reporting. ``steps_needed`` is how many
    steps past ``start`` that takes."""

    def __init__(self, device: torch.device, start: int, n: int):
        self.device, self.start, self.n = device, start, n
        self.cuda = device.type == "cuda"
        self.i = 0
        self.counter = OpCounter()
        self.prof: Any = None
        self.syncs: list[int] = []
        self.sync_sites: collections.Counter = collections.Counter()
        self.result: dict = {}

    @property
    def steps_needed(self) -> int:
        return self.n * (3 if self.cuda else 1) if self.n else 0

    def __call__(self) -> Any:
        k = self.i - self.start
        self.i += 1
        if not self.n or k < 0 or k >= self.steps_needed:
            return contextlib.nullcontext()
        if k < self.n:
            return self.counter()
        if k < 2 * self.n:
            return _ProfiledStep(self, k - self.n)
        return _SyncStep(self)

    def report(self) -> dict:
        if not self.n:
            return {}
        per = self.counter.per_step()
        out = {"ops_per_step": per["ops"], "host_reads_per_step": per["host_reads"], "top_ops": per["top_ops"]}
        if self.cuda:
            out.update(self.result)
            out["syncs_per_step"] = sum(self.syncs) / max(len(self.syncs), 1)
            out["sync_sites"] = dict(self.sync_sites.most_common(8))
        return out


class _ProfiledStep:
    def __init__(self, owner: StepInstruments, k: int):
        self.o, self.k = owner, k

    def __enter__(self) -> None:
        import time

        from torch.profiler import ProfilerActivity, profile

        if self.k == 0:
            torch.cuda.synchronize()
            self.o.t0 = time.perf_counter()
            self.o.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.o.prof.__enter__()

    def __exit__(self, *exc: Any) -> None:
        import time

        if self.k == self.o.n - 1:
            torch.cuda.synchronize()
            wall = time.perf_counter() - self.o.t0
            self.o.prof.__exit__(None, None, None)
            self.o.result = _kernels(self.o.prof, self.o.n, wall)


class _SyncStep:
    def __init__(self, owner: StepInstruments):
        self.o = owner

    def __enter__(self) -> None:
        self.c = count_syncs()
        self.c.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.c.__exit__(*exc)
        self.o.syncs.append(self.c.n)
        self.o.sync_sites.update(self.c.where)


def _kernels(prof: Any, n: int, wall: float) -> dict:
    """Kernels per step and the GPU's busy fraction (union of kernel intervals over the wall time)."""
    spans = [(e.time_range.start, e.time_range.end) for e in prof.events()
             if e.device_type == torch.autograd.DeviceType.CUDA]
    spans.sort()
    busy, end = 0.0, -1.0
    for a, b in spans:  # microseconds
        if b > end:
            busy += b - max(a, end)
            end = b
    return {"kernels_per_step": len(spans) / n, "gpu_busy_ms_per_step": busy / 1e3 / n,
            "profiled_wall_ms_per_step": wall * 1e3 / n, "gpu_busy_fraction": busy / 1e6 / wall if wall else float("nan")}


class count_syncs:
    """Count device-to-host syncs torch reports (``torch.cuda.set_sync_debug_mode('warn')``) inside the block."""

    def __enter__(self) -> "count_syncs":
        self.n = 0
        self._w = warnings.catch_warnings(record=True)
        self.log = self._w.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self.n = sum("synchroniz" in str(w.message) for w in self.log)
        self.where = collections.Counter(f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}" for w in self.log
                                         if "synchroniz" in str(w.message))
        self._w.__exit__(*exc)
