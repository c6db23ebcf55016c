"""Devices, threads, distributed set-up, and the inference autocast context (loading a model: :mod:`.load`)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import platform
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from a2fbench.errors import ConfigError


log = logging.getLogger(__name__)


def amp_context(device: torch.device, amp: str) -> Any:
    """bf16 autocast on CUDA when ``amp == "bf16"`` (inference and validation); a no-op elsewhere."""
    on = device.type == "cuda" and amp == "bf16"
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on) if device.type == "cuda" else contextlib.nullcontext()


def select_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA without one is an error."""
    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"expected a CUDA GPU for device {name!r}, found none (torch.cuda.is_available() is "
                              f"False; torch {torch.__version__}); use --device cpu (or train.device=cpu) or install "
                              "a CUDA build of torch")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"expected GPU {dev.index}, found {torch.cuda.device_count()} GPU(s); pick cuda:0..")
        return dev
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} core(s)"


def busy_elsewhere(window: float = 0.3) -> Optional[float]:
    """Cores kept busy by other processes right now: the machine's busy CPU time over ``window`` seconds
    (``/proc/stat``) minus this process's own, divided by the window. None where ``/proc/stat`` is absent.

    Not the load average: that counts the runnable tasks of the last minute, this process's own included, so
    a training started right after this process prepared data would see its own past work as a neighbour.
    """
    def sample() -> tuple[int, int, float]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
        t = os.times()
        return sum(vals), vals[3] + vals[4], t.user + t.system  # total, idle + iowait (ticks); own CPU (s)

    try:
        t0, i0, o0 = sample()
        time.sleep(window)
        t1, i1, o1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    busy = ((t1 - t0) - (i1 - i0)) / os.sysconf("SC_CLK_TCK")
    return max(0.0, busy - (o1 - o0)) / window


def auto_threads(cores: Optional[int] = None, busy: Optional[float] = None) -> int:
    """CPU threads for torch when ``train.threads`` is 0: the cores other processes leave free (at least one).

    torch's CPU kernels synchronise their threads at the end of every parallel region. When another process
    keeps a core busy, one of our threads is often descheduled and the others wait for it a whole time slice:
    measured on 2 cores with two busy processes beside the tiny config, 2 threads trained at 2.0 audio-s/s and
    1 thread at 33 audio-s/s (docs/unitalker.md). ``busy``: cores busy elsewhere (default: measured now,
    :func:`busy_elsewhere`; the 1-minute load average where that cannot be read).
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if busy is None:
        busy = busy_elsewhere()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    return max(1, min(cores, int(round(cores - busy))))


def set_threads(n: int) -> int:
    """Set torch's CPU threads: ``n`` > 0 as given, 0 = :func:`auto_threads`. Returns the count."""
    if int(n) <= 0:
        busy = busy_elsewhere()
        n = auto_threads(busy=busy)
        log.info("CPU threads: %d (%s)", n, "load average" if busy is None else f"{busy:.1f} cores busy elsewhere")
    torch.set_num_threads(int(n))
    return int(n)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(dev_name: str) -> tuple[Dist, torch.device]:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) -> process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), select_device(dev_name)

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    want = select_device(dev_name)
    if want.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    return Dist(rank, world, local), dev


def barrier(d: Dist) -> None:
    if d.world > 1:

        dist.barrier()


def check_ranks_in_sync(model: torch.nn.Module, device: torch.device) -> None:
    """Every rank must end with the same weights (DDP averages gradients; Adam is deterministic)."""
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
    got = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(got, sums)
    if any(not torch.equal(g, got[0]) for g in got):
        raise RuntimeError("DDP ranks ended with different weights; this is a bug, please report it")
    log.info("DDP: %d ranks hold identical weights", dist.get_world_size())
