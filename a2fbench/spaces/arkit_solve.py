"""The way back from vertices to blendshape weights: a batched bounded least-squares solve (the weights in
[0, 1] that best explain each frame), exact whenever the basis has full rank."""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.linalg as sl


class BoxLsq:
    """Batched ``min ||A w - d||`` subject to ``lo <= w <= hi`` for many right-hand sides ``d``.

    ``A`` (M, K) is reduced once by a thin QR (``A = Q R``), so each frame is a K-dimensional problem
    ``min 1/2 w'Hw - b'w`` with ``H = R'R``, ``b = R'Q'd``. All frames run a primal active-set method
    together (Nocedal & Wright, Algorithm 16.3, for bounds): start from the clipped unconstrained solution
    with the clipped variables fixed at their bounds; minimise over the free variables exactly (one batched
    K x K solve); step as far as feasibility allows, fixing the variable that blocks; at a face minimum,
    release the fixed variable whose multiplier has the wrong sign, or stop when none has (the KKT point,
    i.e. the optimum: the problem is convex). Frames still running after ``max_iter`` iterations (none in
    practice) are finished one at a time by scipy's BVLS.
    """

    def __init__(self, A: np.ndarray, max_iter: Optional[int] = None, rtol: float = 1e-9):
        self.Q, self.R = sl.qr(np.asarray(A, np.float64), mode="economic")
        K = self.R.shape[1]
        H = self.R.T @ self.R
        # a ridge of 1e-13 x the mean diagonal keeps a rank-deficient basis (duplicate channels) solvable;
        # it is far below float64 noise for a full-rank one
        self.H = H + 1e-13 * float(np.trace(H)) / K * np.eye(K)
        self.max_iter = max_iter or 4 * K + 20
        self.rtol = rtol

    def solve(self, d: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, dict]:
        H = self.H
        K = H.shape[0]
        b = (d @ self.Q) @ self.R  # (T, K) = R'Q'd per frame
        w = np.linalg.solve(H, b.T).T
        low, high = w <= lo, w >= hi
        w = np.clip(w, lo, hi)
        # multiplier tolerance: relative to the size of the gradient terms
        tol = self.rtol * (np.abs(b).max(axis=1) + np.abs(H).max() * max(abs(lo), abs(hi), hi - lo))
        at_min = np.zeros(len(w), bool)  # the current point minimises over its face
        todo = np.arange(len(w))
        it = 0
        for it in range(1, self.max_iter + 1):
            if not len(todo):
                break
            wt, lw, hg, am = w[todo], low[todo], high[todo], at_min[todo]
            fixed = lw | hg
            g = wt @ H - b[todo]
            # frames at a face minimum: check the multipliers of the fixed variables
            wrong = np.where(lw, -g, 0.0) + np.where(hg, g, 0.0)  # > 0: the bound holds the optimum back
            worst = wrong.argmax(1)
            done = am & (wrong.max(1, initial=0.0) <= tol[todo])
            if done.any():
                keep = ~done
                todo, wt, lw, hg, am, g, wrong, worst = (x[keep] for x in (todo, wt, lw, hg, am, g, wrong, worst))
                if not len(todo):
                    break
            release = am
            r = np.flatnonzero(release)
            lw[r, worst[r]] = False
            hg[r, worst[r]] = False
            fixed = lw | hg
            # every frame not done: exact minimiser over its free variables
            free = ~fixed
            M = np.where(free[:, :, None] & free[:, None, :], H[None], 0.0) + fixed[:, :, None] * np.eye(K)
            p = -np.linalg.solve(M, np.where(free, g, 0.0)[..., None])[..., 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(free & (p < 0), (lo - wt) / p, np.where(free & (p > 0), (hi - wt) / p, np.inf))
            ratio = np.maximum(ratio, 0.0)
            amax = ratio.min(1)
            alpha = np.minimum(1.0, amax)
            wt = np.where(free, wt + alpha[:, None] * p, wt)
            block = (amax < 1.0)[:, None] & free & (ratio <= amax[:, None] * (1 + 1e-12))
            lw |= block & (p < 0)
            hg |= block & (p > 0)
            wt = np.where(lw, lo, np.where(hg, hi, wt))
            am = amax >= 1.0
            w[todo], low[todo], high[todo], at_min[todo] = wt, lw, hg, am
        fallback = 0
        if len(todo):  # safety net; not reached on the bases we know
            from scipy.optimize import lsq_linear  # imported here: scipy.optimize costs ~0.5 s of every CLI start

            c = d[todo] @ self.Q
            for i, t in enumerate(todo):
                w[t] = lsq_linear(self.R, c[i], bounds=(lo, hi), method="bvls", tol=1e-14).x
            fallback = len(todo)
        return w, {"iterations": it, "fallback_frames": fallback}
