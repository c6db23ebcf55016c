"""Per-vertex statistics of an evaluated predictions folder, for the report's maps.

* **Mean error map**: per vertex, the Euclidean distance between prediction and ground truth averaged over
  every scored frame of every sequence (MVE before its mean over vertices).
* **Velocity maps** (UniTalker's Fig. 6, our reading: the paper shows them as pictures only): per vertex, the
  speed ``|x[t+1] - x[t]| * fps`` of consecutive frames of a sequence, its mean and its standard deviation over
  every frame pair of every sequence, for the predictions and for the ground truth. The report draws them on
  the upper face, where a model that "averages out" shows lower mean speed and much lower variation.

Sequences and files are the ones ``evaluate`` scored (the results' split and sequences; every condition file
of a sequence counts), each clip cut to the shorter of prediction and ground truth. Streamed block by block;
sums in float64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..errors import OutputError
from ..scoring.predictions import scan
from .heads import Head, InputItem, gt_frames, load_frames


@dataclass
class VertexStats:
    """Per-vertex accumulations (see module doc); arrays (V,) in the head's error units (speeds per second)."""

    error_mean: np.ndarray
    pred_speed_mean: np.ndarray
    pred_speed_std: np.ndarray
    gt_speed_mean: np.ndarray
    gt_speed_std: np.ndarray
    n_frames: int
    n_pairs: int
    n_files: int


class _Moments:
    """Running per-vertex sum and sum of squares (float64)."""

    def __init__(self, V: int):
        self.s = np.zeros(V)
        self.s2 = np.zeros(V)
        self.n = 0

    def add(self, x: np.ndarray) -> None:  # x: (n, V)
        self.s += x.sum(0, dtype=np.float64)
        self.s2 += np.einsum("tv,tv->v", x, x, dtype=np.float64)
        self.n += len(x)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.n, 1)
        m = self.s / n
        return m, np.sqrt(np.maximum(self.s2 / n - m * m, 0.0))


def _add_speeds(acc: _Moments, blk: np.ndarray, last: Optional[np.ndarray], fps: float) -> None:
    """Add the (n, V) speeds of consecutive frames of ``blk`` to ``acc``; ``last``: the previous block's final frame
    (None at a clip's start), so the pair across a block boundary counts too."""
    x = blk if last is None else np.concatenate([last[None], blk])
    if len(x) > 1:
        acc.add(np.sqrt(((x[1:] - x[:-1]) ** 2).sum(-1, dtype=np.float32)) * np.float32(fps))


def vertex_stats(doc: dict, pred_dir: str | os.PathLike, head: Head,
                 progress: Optional[Callable[[int], Any]] = None) -> VertexStats:
    """The maps' statistics for results ``doc`` and the predictions folder it was computed from."""
    ds = head.ds
    ids = [r["id"] for r in doc["per_sequence"]]
    missing = [s for s in ids if s not in ds]
    if missing:
        raise OutputError(f"--data: expected the sequences of the results in the {head.id} store, found {len(missing)} "
                          f"missing (e.g. {missing[0]}); pass the --data the results were evaluated against")
    preds = scan(pred_dir, ids, {s: ds[s].subject for s in ids}, n_vertices=head.n_vertices,
                 n_params=None if head.space.is_vertex else head.space.n_params, ignore_extra=True,
                 what=f"{head.id} split {doc['dataset']['split']!r}")
    V = head.n_vertices
    err = _Moments(V)
    pv, gv = _Moments(V), _Moments(V)
    n_files = 0
    for sid in ids:
        for pf in preds.files[sid]:
            pred = load_frames(InputItem(sid, pf.path, sid), head)
            gt = gt_frames(head, sid)
            n = min(len(pred), len(gt))
            pred, gt = pred.truncated(n), gt.truncated(n)
            lp = lg = None
            for bp, bg in zip(pred.blocks(), gt.blocks()):  # one pass: each block is read (and converted) once
                err.add(np.sqrt(((bp - bg) ** 2).sum(-1, dtype=np.float32)))
                _add_speeds(pv, bp, lp, head.fps)
                _add_speeds(gv, bg, lg, head.fps)
                lp, lg = bp[-1], bg[-1]
                if progress is not None:
                    progress(len(bp))
            n_files += 1
    s = head.error_scale
    (pm, ps), (gm, gs) = pv.mean_std(), gv.mean_std()
    return VertexStats(err.s / max(err.n, 1) * s, pm * s, ps * s, gm * s, gs * s, err.n, pv.n, n_files)
