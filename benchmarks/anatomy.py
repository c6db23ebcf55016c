"""Anatomy of a training step, measurable without a GPU: operations dispatched (a proxy for kernel launches on
CUDA: one ATen operation is one launch for most operations; views, reshapes and detaches launch nothing and are
not counted), and host reads of tensor values (``.item()``, ``float(t)``, boolean indexing: each one a
device-to-host sync on CUDA). On CUDA, :func:`cuda_profile` adds the kernels actually launched and the GPU's
busy time from ``torch.profiler``, and :func:`count_syncs` the syncs torch reports."""

from __future__ import annotations

import collections
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


def cuda_profile(step: Any, n: int) -> dict:
    """Run ``step()`` n times under torch.profiler: kernels launched and GPU busy time per step, wall per step."""
    import time

    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / n
    kernels, busy = 0, 0.0
    spans = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels += 1
            spans.append((e.time_range.start, e.time_range.end))
    spans.sort()
    end = -1.0
    for a, b in spans:  # union of kernel intervals (us): time the GPU had work
        if b > end:
            busy += b - max(a, end)
            end = b
    return {"kernels": kernels / n, "gpu_busy_ms": busy / 1e3 / n, "wall_ms_profiled": wall * 1e3,
            "gpu_busy_fraction": busy / 1e6 / n / wall if wall else float("nan")}


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
