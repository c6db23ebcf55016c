"""Scoring in one process: the store and predictions read in chunks (a reader thread ahead of the scorer
when a CPU is spare, a hasher thread over every prediction byte), scored by :mod:`.accumulate`.

Takes: a prepared dataset, a protocol, regions and a plan (which files, how many frames). Gives: per-sequence
outputs, the sha256 of every prediction file and the compute dtypes used."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..registry import get_space
from ..spaces import converter
from ..store.templates import choose_template
from ..util.threads import prefetch as background
from .accumulate import Chunk, Item, Scoring, score_chunks
from .axes import audio_info
from .metrics import functional as F
from .options import ProtocolOptions
from .predictions import PredFile
from .protocols import Protocol
from .streams import BufferPool, HashWorker, NpyReader


class Context:
    """Everything fixed for one evaluation of a prepared dataset: store, converter, regions, protocol and its
    dataset options (:class:`~.options.ProtocolOptions`: coordinate scale, FaceDiffuser's normalisation)."""

    def __init__(self, ds: Any, proto: Protocol, lips: np.ndarray, upper: np.ndarray,
                 opts: Optional[ProtocolOptions] = None):
        self.ds = ds
        self.opts = opts or ProtocolOptions()
        self.proto = proto if self.opts.metrics is None else dataclasses.replace(proto, metrics=self.opts.metrics)
        self.fps = float(ds.card["fps"])
        self.space = get_space(ds.card["space"])
        self.conv = None if self.space.is_vertex else converter(self.space, ds.space_arrays())
        self.V = int(ds.card.get("n_vertices") or (self.conv.n_vertices if self.conv else self.space.n_vertices))
        self.P = None if self.space.is_vertex else int(self.space.dim)
        self.set_regions(lips, upper)

    def set_regions(self, lips: np.ndarray, upper: np.ndarray) -> None:
        self.lips, self.upper = lips, upper
        self.scoring = Scoring(self.proto, lips, upper, self.opts.scale, self.opts.axes, self.opts.mouth_pair,
                               self.fps)

    def ground_truth(self, x: np.ndarray) -> np.ndarray:
        """Ground truth (or template) vertices in the protocol's coordinates (FaceDiffuser's normalised ones)."""
        if self.opts.coord_range is None:
            return x
        return F.normalise_coordinates(x, *self.opts.coord_range)

    def vertices(self, x: np.ndarray, kind: str) -> np.ndarray:
        """Rows of motion or prediction -> (t, V, 3) (parameters through the space's converter)."""
        if kind == "parameters":
            assert self.conv is not None
            return self.conv.to_vertices(x)
        return x.reshape(x.shape[0], self.V, 3)

    def template(self, subject: str) -> np.ndarray:
        tm = choose_template(self.ds, subject=subject).values
        if self.conv is not None:
            return self.ground_truth(self.conv.to_vertices(tm.reshape(1, -1))[0])
        return self.ground_truth(tm.reshape(self.V, 3))


def read_chunks(ctx: Context, plan: list[tuple[Item, list[PredFile]]], rows: int, hashes: dict[str, Any],
            hasher: Optional[HashWorker] = None) -> Iterator[Chunk]:
    """Read every scored chunk in order; every prediction byte is hashed (and the unscored tail checked).

    Buffers come from pools and go back when the scorer (and the hasher) release them. NaN/inf in scored
    rows are checked by the scorer (:meth:`SequenceAccumulator.add`), on cache-resident data.
    """
    pool = BufferPool()
    for i, (item, pfs) in enumerate(plan):
        seq = ctx.ds[item.sid]
        tm = ctx.template(seq.subject) if ctx.scoring.fdd else None
        audio = audio_info(seq.audio, seq.sample_rate, ctx.fps, item.T) if ctx.scoring.needs_audio else None
        gt_dtype = seq.motion_dtype
        readers = [NpyReader(pf, hasher) for pf in pfs]
        try:
            for a in range(0, item.T, rows):
                b = min(item.T, a + rows)
                leases = []
                lg = pool.take(rows, (int(ctx.ds.card["dim"]),), gt_dtype)
                raw = seq.frames_into(lg.buf[:b - a], a)
                if ctx.conv is None and ctx.opts.coord_range is None:
                    gt = ctx.vertices(raw, "vertices")
                    leases.append(lg)
                else:
                    gt = ctx.ground_truth(ctx.vertices(raw, "vertices" if ctx.conv is None else "parameters"))
                    lg.release()
                preds = []
                for r in readers:
                    x, lp = r.read_leased(b - a, pool, check=False, rows=rows)
                    preds.append(ctx.vertices(x, r.pf.kind))
                    if r.pf.kind == "parameters":
                        lp.release()
                    else:
                        leases.append(lp)
                yield Chunk(i, a, gt, preds, tm if a == 0 else None, [r.pf.path for r in readers], leases,
                            audio if a == 0 else None)
            for r in readers:
                hashes[r.pf.path.name] = r.finish()
        finally:
            for r in readers:
                r.close()


def spare_cpu(n_workers: int) -> bool:
    """Run the reader thread ahead of the scorer only when there is a CPU per process to spare for it."""
    return (os.cpu_count() or 1) >= 2 * n_workers


def stream(ctx: Context, plan: list[tuple[Item, list[PredFile]]], chunk_mb: float,
            on_frames: Optional[Callable[[int], Any]], prefetch: bool = True) -> tuple[list[dict], dict[str, str], set]:
    """Score ``plan`` in this process: reader thread (if ``prefetch``), hasher thread, scorer (module doc)."""
    rows = max(1, int(chunk_mb * 2**20 // (ctx.V * 3 * 8)))
    hashes: dict[str, Any] = {}
    hasher = HashWorker()
    try:
        it = read_chunks(ctx, plan, rows, hashes, hasher)
        if prefetch:
            it = background(it, depth=2, name="a2fbench-evaluate-reader")
        seqs, dtypes = score_chunks(ctx.scoring, [it for it, _ in plan], it, on_frames)
    finally:
        hasher.close()
    return seqs, {name: h.hexdigest() for name, h in hashes.items()}, dtypes
