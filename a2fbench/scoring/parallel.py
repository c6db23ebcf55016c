"""Scoring in several processes: contiguous blocks of sequences in forked workers, merged in split order
so the pooled means see the same concatenated vectors, bit for bit, as one process would."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any, Optional

import numpy as np

from ..store import open_dataset
from ..util.progress import frames_bar
from .accumulate import Item
from .pipeline import Context, spare_cpu, stream
from .predictions import PredFile
from .protocols import PROTOCOLS

PARALLEL_MIN_BYTES = 128 << 20  # below this much ground truth, forking workers costs more than it saves


def worker_count(workers: Optional[int], n_seq: int, gt_bytes: int) -> int:
    """Processes to use: ``workers``, else min(2, CPUs) for splits of at least 128 MiB of ground truth;
    always 1 without the fork start method or with one sequence."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if gt_bytes >= PARALLEL_MIN_BYTES else 1
    if "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(int(workers), n_seq))


_FORKED: dict[str, Any] = {}  # state handed to forked workers (a shared frame counter)


def _worker(args: tuple, plan: list[tuple[Item, list[PredFile]]]) -> tuple[list[dict], dict[str, str], set]:
    data, dataset, proto_name, lips, upper, chunk_mb, opts = args
    counter = _FORKED.get("counter")

    def on_frames(n: int) -> None:
        if counter is not None:
            with counter.get_lock():
                counter.value += n

    ds = open_dataset(data, dataset)
    try:
        return stream(Context(ds, PROTOCOLS[proto_name], lips, upper, opts), plan, chunk_mb, on_frames,
                       spare_cpu(int(_FORKED.get("n_workers", 1))))
    finally:
        ds.close()


def split_blocks(plan: list, n: int) -> list[list]:
    """``plan`` cut into ``n`` contiguous blocks of about equal work (frames x inputs), order kept."""
    cost = np.cumsum([it.T * (1 + len(pfs)) for it, pfs in plan], dtype=np.float64)
    cuts = [int(np.searchsorted(cost, cost[-1] * k / n)) + 1 for k in range(1, n)]
    edges = [0, *sorted(set(min(max(c, 1), len(plan) - 1) for c in cuts)), len(plan)]
    return [plan[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def score_parallel(args: tuple, plan: list, n_workers: int, desc: Optional[str]) -> tuple[list[dict], dict, set]:
    """Contiguous blocks of sequences in forked worker processes; results merged in split order (so the
    pooled means see the same concatenated vectors, bit for bit, as one process would)."""
    mpc = mp.get_context("fork")
    blocks = split_blocks(plan, n_workers)
    _FORKED["counter"] = counter = mpc.Value("q", 0)
    _FORKED["n_workers"] = len(blocks)
    pool = mpc.Pool(len(blocks))
    try:
        jobs = [pool.apply_async(_worker, (args, b)) for b in blocks]
        with frames_bar(desc, sum(it.T for it, _ in plan)) as bar:
            while not all(j.ready() for j in jobs):
                for j in jobs:
                    if j.ready() and not j.successful():
                        j.get()  # re-raises the worker's error (one-line A2FBenchError)
                if bar is not None:
                    bar.update(counter.value - bar.n)
                time.sleep(0.05)
        parts = [j.get() for j in jobs]
    finally:
        pool.terminate()
        pool.join()
        _FORKED.clear()
    seqs = [s for p in parts for s in p[0]]
    digests = {k: v for p in parts for k, v in p[1].items()}
    return seqs, digests, set().union(*(p[2] for p in parts))
