"""The report's mouth-opening plot: predicted and ground-truth mouth opening over time for one sequence, silent
spans shaded, the lip lag stated (``docs/metrics.md``, "Timing, silence, intensity and diversity").

Drawn when the results were computed with a mouth-based axis (``evaluate --metrics mtm,lip-lag,silence-opening``),
so they record the mouth pair; the sequence shown is the one with the largest |lip lag| among those with a silent
span (else among all). One sequence's two curves are held, never more.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from ..scoring.axes import audio_info
from ..scoring.metrics import signals as S
from ..scoring.predictions import scan
from .figures import png
from .heads import Head, InputItem, gt_frames, load_frames


def pick_sequence(doc: dict) -> Optional[str]:
    rows = doc["per_sequence"]
    pool = [r for r in rows if r.get("silence_frames")] or rows
    if not pool:
        return None
    return max(pool, key=lambda r: abs(r.get("LipLag") or 0.0))["id"]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def mouth_section(doc: dict, pred_dir: str | os.PathLike, head: Head) -> dict[str, tuple[bytes, str]]:
    """``{heading: (png, caption)}``: empty when the results record no mouth pair."""
    mp = (doc["dataset"].get("regions") or {}).get("mouth_pair")
    sid = pick_sequence(doc)
    if not mp or sid is None or sid not in head.ds:
        return {}
    preds = scan(pred_dir, [sid], {sid: head.ds[sid].subject}, n_vertices=head.n_vertices,
                 n_params=None if head.space.is_vertex else head.space.n_params, ignore_extra=True,
                 what=f"{head.id} {sid}")
    pf = preds.files[sid][0]
    pred, gt = load_frames(InputItem(sid, pf.path, sid), head), gt_frames(head, sid)
    n = min(len(pred), len(gt))
    u, lo = int(mp["upper"]), int(mp["lower"])
    o_p = np.concatenate([S.mouth_opening(b, u, lo) for b in pred.truncated(n).blocks()])
    o_g = np.concatenate([S.mouth_opening(b, u, lo) for b in gt.truncated(n).blocks()])
    seq = head.ds[sid]
    silent = audio_info(seq.audio, seq.sample_rate, head.fps, n).silent
    lag = S.lip_lag_frames(o_g, o_p, head.fps)
    t = np.arange(n) / head.fps
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for a, b in _runs(silent):
        ax.axvspan(a / head.fps, b / head.fps, color="0.85", lw=0, label="silent" if a == _runs(silent)[0][0] else None)
    s = head.error_scale
    ax.plot(t, o_g * s, color="black", lw=1.2, label="ground truth")
    ax.plot(t, o_p * s, color="tab:red", lw=1.2, label=f"prediction ({pf.path.name})")
    lag_s = "undefined" if lag is None else f"{lag * 1000.0 / head.fps:+.1f} ms ({lag:+d} frames)"
    ax.set_title(f"{sid}: mouth opening |x{u} - x{lo}|; lip lag {lag_s}", fontsize=10)
    ax.set_xlabel("s")
    ax.set_ylabel(head.error_units)
    ax.legend(fontsize=8, loc="upper right")
    caption = (f"Distance between vertices {u} (upper lip) and {lo} (lower lip) per frame, for the sequence with the "
               f"largest |lip lag|{' among those with silence' if silent.any() else ''}. Grey: silent spans (below "
               f"{S.SILENCE_DB:g} dB for at least {S.MIN_SPAN_S:g} s, guards removed) where silence-opening compares "
               "the two curves. Lip lag > 0: the prediction is late. Mouth pair source: "
               f"{mp.get('source', '?')}{'' if mp.get('verified') else ' (unverified)'}.")
    return {"Mouth opening over time": (png(fig), caption)}
