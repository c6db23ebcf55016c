"""Batches: the epoch's length-bucketed batch order, padding clips into a batch, loader workers' set-up.

* :class:`BucketBatchSampler`: the epoch's shuffled clip list is cut into chunks of ``batch_size x
  bucket_factor`` clips, each chunk is sorted by length and cut into batches, and the batch order is
  shuffled (little padding). The order is a pure function of (seed, epoch), so a resumed run sees the same
  batches, and it does not depend on the number of loader workers.
* :func:`collate` pads a batch and carries the host-side facts (padded length, whether any clip is padded)
  that the training step would otherwise read back from the GPU.
* :func:`worker_init`: workers run one torch and one BLAS thread each.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Optional

import numpy as np
import torch
from threadpoolctl import threadpool_limits

log = logging.getLogger("unitalker.train.data")


def worker_init(worker_id: int) -> None:
    """A loader worker's set-up: one torch thread and one BLAS thread.

    Workers only read and pad (targets are computed before they start). A BLAS pool of one thread per core
    in each worker is what made six workers 6x slower on a 16-core GPU machine: OpenBLAS's idle threads
    spin after every call (measured here: one small float64 GEMM followed by a 200 ms wait burns 47 ms of CPU
    in the idle second thread, none with one thread), so 6 workers x 16 threads kept the cores busy and
    starved the process launching GPU work (docs/unitalker.md, 'Speed')."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def bucket(n: int, step: float = 1 / 16) -> int:
    """The smallest value >= n on a fixed grid (1..16, then steps of ``step``): padding to it keeps the set of
    shapes small (cuDNN autotunes each shape once) at <= 6.25% extra length."""
    g = 1
    while g < n:
        g = g + 1 if g < 16 else int(math.ceil(g * (1 + step)))
    return g


#: audio is padded in units of the encoder's frame hop (20 ms)
HOP = 320


def _pad(ts: list[torch.Tensor], T: int) -> torch.Tensor:
    out = torch.zeros((len(ts), T) + tuple(ts[0].shape[1:]), dtype=ts[0].dtype)
    for j, t in enumerate(ts):
        out[j, : t.shape[0]] = t
    return out


def collate(items: list[dict], buckets: bool = False) -> dict:
    """Pad audio (B, N); group targets by space: ``groups[space] = {"rows": (b,), target tensors padded to T}``.

    Host-side facts go with the batch so the step never reads them back from a device: ``T`` (frames the
    batch is padded to), ``all_full`` (no clip's audio is padded). ``buckets``: pad N and T up to
    :func:`bucket` grids (static shapes on CUDA). Items without audio (cached CNN features) give ``audio``
    None."""
    B = len(items)
    n = torch.tensor([int(it["n_samples"]) for it in items])
    t = torch.tensor([int(it["n_frames"]) for it in items])
    N, T = int(n.max()), int(t.max())
    if buckets:
        N, T = HOP * bucket(-(-N // HOP)), bucket(T)
    audio = None
    if items[0]["audio"] is not None:
        audio = torch.zeros(B, N)
        for b, it in enumerate(items):
            audio[b, : len(it["audio"])] = it["audio"]
    rows_by: dict[str, list[int]] = {}
    for b, it in enumerate(items):
        rows_by.setdefault(it["space"], []).append(b)
    groups = {}
    for space, rows in rows_by.items():
        g: dict[str, torch.Tensor] = {"rows": torch.tensor(rows)}
        for k in items[rows[0]]["target"]:
            vals = [items[b]["target"][k] for b in rows]
            g[k] = torch.stack(vals) if k == "template" else _pad(vals, T)
        groups[space] = g
    return {
        "audio": audio, "n_samples": n, "n_frames": t, "T": T, "all_full": bool((n == N).all()),
        "index": torch.tensor([int(it["index"]) for it in items]),
        "identity": torch.tensor([it["identity"] for it in items]),
        "groups": groups,
        "meta": [{k: it[k] for k in ("dataset", "seq_id", "subject", "space", "source")} for it in items],
    }


class BucketBatchSampler(torch.utils.data.Sampler):
    """Length-bucketed batches of an epoch; deterministic in (seed, epoch); sharded over ``world`` ranks.

    Every rank gets the same number of batches: the batch list is extended by wrapping around to a multiple
    of ``world`` (the few repeated clips are logged once).
    """

    def __init__(self, clips: Any, batch_size: int, bucket_factor: int, seed: int, rank: int = 0, world: int = 1,
                 repeats: Optional[list[int]] = None, shuffle: bool = True):
        self.clips = clips
        self.bs = int(batch_size)
        self.bucket = int(batch_size) * int(bucket_factor)
        self.seed = int(seed)
        self.rank, self.world = rank, world
        self.repeats = repeats or [1] * len(clips.sources)
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        pool = [i for i, (si, _) in enumerate(self.clips.items) for _ in range(self.repeats[si])]
        rng = np.random.default_rng([self.seed, epoch, 777])
        if self.shuffle:
            pool = [pool[j] for j in rng.permutation(len(pool))]
        batches: list[list[int]] = []
        for a in range(0, len(pool), self.bucket):
            chunk = sorted(pool[a: a + self.bucket], key=lambda i: self.clips.frames[i])
            batches += [chunk[b: b + self.bs] for b in range(0, len(chunk), self.bs)]
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        if self.world > 1 and len(batches) % self.world:
            extra = self.world - len(batches) % self.world
            if epoch == 0:
                log.info("DDP: %d batch(es) repeated so that %d ranks get equal shares", extra, self.world)
            batches += batches[:extra]
        return batches[self.rank:: self.world]

    def __len__(self) -> int:
        return len(self.epoch_batches(self.epoch)) - self.skip

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)[self.skip:]


def eval_batches(clips: Any, max_batch_seconds: float = 60.0, max_batch: int = 16) -> list[list[int]]:
    """Deterministic length-sorted batches for prediction/validation (bounded total audio per batch)."""
    order = sorted(range(len(clips)), key=lambda i: clips.frames[i])
    out, cur, secs = [], [], 0.0
    for i in order:
        s = clips.seconds(i)
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * max(s, secs) > max_batch_seconds):
            out.append(cur)
            cur, secs = [], 0.0
        cur.append(i)
        secs = max(secs, s)
    if cur:
        out.append(cur)
    return out
