"""Slow, obviously correct oracles: the metrics computed the way the reference scripts compute them.

Used by the tests (bit parity for ``codetalker``, tolerance for the others) and by the benchmark as the
"reference formulation". These functions follow the published descriptions (``reference-facts.md`` §1):
whole-split arrays built from Python lists, a Python comprehension over vertices, the transposes and
reductions in the same order. They are deliberately naive; never use them on real data sizes.

Inputs everywhere: lists, in canonical split order, of ground truth ``(T, V, 3)`` or ``(T, 3V)`` arrays,
predictions of the same kind, and per-sequence templates ``(V, 3)`` or ``(3V,)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _v(x: np.ndarray, n_vertices: int) -> np.ndarray:
    return np.asarray(x).reshape(-1, n_vertices, 3)


def _ct_dynamics(motion: np.ndarray, upper: Sequence[int]) -> float:
    """CodeTalker's per-sequence upper-face dynamics: comprehension over vertices, transpose, sum, std, mean."""
    dis = np.array([np.square(motion[:, v, :]) for v in upper])  # (U, T, 3)
    dis = np.transpose(dis, (1, 0, 2))  # (T, U, 3)
    dis = np.sum(dis, axis=2)  # (T, U)
    dis = np.std(dis, axis=0)  # (U,)
    return np.mean(dis)


def _ct_lve(gt_all: np.ndarray, pred_all: np.ndarray, lips: Sequence[int]) -> float:
    dis = np.array([np.square(gt_all[:, v, :] - pred_all[:, v, :]) for v in lips])  # (L, N, 3)
    dis = np.transpose(dis, (1, 0, 2))  # (N, L, 3)
    dis = np.sum(dis, axis=2)  # (N, L)
    dis = np.max(dis, axis=1)  # (N,)
    return np.mean(dis)


def codetalker(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], templates: Sequence[np.ndarray],
               lips: Sequence[int], upper: Sequence[int], n_vertices: int) -> dict[str, float]:
    """CodeTalker ``main/cal_metric.py``: LVE pooled over frames, signed FDD; prediction cut to the GT length.

    A prediction shorter than its ground truth makes the reference fail; here it raises ``ValueError``.
    """
    gt_all: list = []
    pred_all: list = []
    fdd: list = []
    for gt, pred, tm in zip(gts, preds, templates):
        g = _v(gt, n_vertices)
        p = _v(pred, n_vertices)
        if p.shape[0] < g.shape[0]:
            raise ValueError("prediction shorter than ground truth")
        p = p[:g.shape[0]]
        gt_all.extend(list(g))
        pred_all.extend(list(p))
        t = np.asarray(tm).reshape(n_vertices, 3)
        fdd.append(_ct_dynamics(g - t, upper) - _ct_dynamics(p - t, upper))
    return {"LVE": _ct_lve(np.array(gt_all), np.array(pred_all), lips), "FDD": sum(fdd) / len(fdd)}


def facediffuser(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], templates: Sequence[np.ndarray],
                 lips: Sequence[int], upper: Sequence[int], n_vertices: int) -> dict[str, float]:
    """FaceDiffuser ``evaluation/compute_objective_metrics.py``: CodeTalker's LVE and FDD plus MVE and
    ABS FDD; both sequences cut to the shorter length."""
    gt_all: list = []
    pred_all: list = []
    fdd: list = []
    for gt, pred, tm in zip(gts, preds, templates):
        g = _v(gt, n_vertices)
        p = _v(pred, n_vertices)
        n = min(g.shape[0], p.shape[0])
        g, p = g[:n], p[:n]
        gt_all.extend(list(g))
        pred_all.extend(list(p))
        t = np.asarray(tm).reshape(n_vertices, 3)
        fdd.append(_ct_dynamics(g - t, upper) - _ct_dynamics(p - t, upper))
    g_all, p_all = np.array(gt_all), np.array(pred_all)
    return {"LVE": _ct_lve(g_all, p_all, lips), "MVE": np.mean(np.linalg.norm(g_all - p_all, axis=2)),
            "FDD": sum(fdd) / len(fdd), "FDD_abs": sum(abs(x) for x in fdd) / len(fdd)}


def a2f(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], templates: Sequence[np.ndarray],
        lips: Sequence[int], upper: Sequence[int], n_vertices: int) -> dict:
    """A2F-Bench's definitions written out literally, in float64, frame by frame and vertex by vertex.

    Returns the aggregates and the per-sequence scores (``per_sequence``: list of dicts with ``frames``,
    ``LVE``, ``MVE``, ``UFVE``, ``FDD``). A shorter prediction raises ``ValueError``; a longer one is cut.
    """
    lve_f: list[float] = []
    mve_f: list[float] = []
    ufve_f: list[float] = []
    rows = []
    for gt, pred, tm in zip(gts, preds, templates):
        g = _v(gt, n_vertices).astype(np.float64)
        p = _v(pred, n_vertices).astype(np.float64)
        if p.shape[0] < g.shape[0]:
            raise ValueError("prediction shorter than ground truth")
        p = p[:g.shape[0]]
        t = np.asarray(tm, np.float64).reshape(n_vertices, 3)
        seq_l, seq_m, seq_u = [], [], []
        for f in range(g.shape[0]):
            dist = [float(np.linalg.norm(g[f, v] - p[f, v])) for v in range(n_vertices)]
            seq_l.append(max(float(np.sum((g[f, v] - p[f, v]) ** 2)) for v in lips))
            seq_m.append(sum(dist) / n_vertices)
            seq_u.append(sum(dist[v] for v in upper) / len(upper))

        def dyn(x: np.ndarray) -> float:
            per_v = []
            for v in upper:
                d = [float(np.sum((x[f, v] - t[v]) ** 2)) for f in range(x.shape[0])]
                mu = sum(d) / len(d)
                per_v.append((sum((e - mu) ** 2 for e in d) / len(d)) ** 0.5)
            return sum(per_v) / len(per_v)

        fdd = dyn(g) - dyn(p)
        rows.append({"frames": g.shape[0], "LVE": sum(seq_l) / len(seq_l), "MVE": sum(seq_m) / len(seq_m),
                     "UFVE": sum(seq_u) / len(seq_u), "FDD": fdd})
        lve_f += seq_l
        mve_f += seq_m
        ufve_f += seq_u
    fdds = [r["FDD"] for r in rows]
    return {"LVE": sum(lve_f) / len(lve_f), "MVE": sum(mve_f) / len(mve_f), "UFVE": sum(ufve_f) / len(ufve_f),
            "FDD": sum(fdds) / len(fdds), "FDD_abs": sum(abs(x) for x in fdds) / len(fdds), "per_sequence": rows}


def unitalker(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], lips: Sequence[int], n_vertices: int,
              scale: float = 1.0) -> dict[str, float]:
    """UniTalker's in-loop mouth metric (``loss.mouth_metric`` with batch 1, then ``AverageMeter``), literally:
    per sequence, in coordinates multiplied by ``scale``, per frame the max over the lip vertices of the squared
    distance; its mean over frames (LVE) and the mean over frames of its square root (LVD); then the plain mean
    over sequences. Sequences must already be cut to the frames scored (equal lengths)."""
    lve, lvd = [], []
    for gt, pred in zip(gts, preds):
        g = _v(gt, n_vertices).astype(np.float64) * scale
        p = _v(pred, n_vertices).astype(np.float64) * scale
        if g.shape != p.shape:
            raise ValueError("cut both to the frames scored first")
        e = [float(np.max(np.sum((g[t, list(lips)] - p[t, list(lips)]) ** 2, axis=1))) for t in range(len(g))]
        lve.append(sum(e) / len(e))
        lvd.append(sum(x ** 0.5 for x in e) / len(e))
    return {"LVE": sum(lve) / len(lve), "LVD": sum(lvd) / len(lvd), "per_sequence_LVE": lve}


def ddtw_path(x: Sequence[float], y: Sequence[float]) -> list[tuple[int, int]]:
    """Derivative DTW path, cell by cell in Python (the recursion as written; the oracle for
    :func:`a2fbench.scoring.metrics.signals.ddtw_path`, which fills anti-diagonals at once)."""
    dx = [0.0] + [float(x[i]) - float(x[i - 1]) for i in range(1, len(x))]
    dy = [0.0] + [float(y[j]) - float(y[j - 1]) for j in range(1, len(y))]
    n, m = len(dx), len(dy)
    inf = float("inf")
    D = [[inf] * (m + 1) for _ in range(n + 1)]
    D[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            D[i][j] = abs(dx[i - 1] - dy[j - 1]) + min(D[i - 1][j - 1], D[i - 1][j], D[i][j - 1])
    path = []
    i, j = n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        steps = [D[i - 1][j - 1], D[i - 1][j], D[i][j - 1]]
        k = steps.index(min(steps))  # the first minimum: diagonal, then up, then left
        i, j = (i - 1, j - 1) if k == 0 else ((i - 1, j) if k == 1 else (i, j - 1))
    return path[::-1]
