"""The evaluation axes (``evaluate --metrics mtm,lip-lag,silence-opening,slcc,diversity``) inside the streamed
scorer: per sequence, from each chunk, only small per-frame vectors are kept (two mouth-opening values per
input, one lip step per input, one sample-distance per sample pair); at the end of the sequence they become the
per-sequence values, and at the end of the split the aggregates, CIs, constants and reasons of the results file.

Takes: chunks (:class:`~.accumulate.Chunk`, the first one carrying the recording's silent frames and RMS).
Gives: per sequence ``row`` keys and per-run values; per split the ``metrics`` entries. Definitions:
``docs/metrics.md``; arithmetic: :mod:`.metrics.signals`; the axes' table: :mod:`.metrics.axes`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .metrics import functional as F
from .metrics import signals as S
from .metrics.axes import AXES, constants
from .metrics.stats import bootstrap_ci, ratio_ci


@dataclass(frozen=True)
class AudioInfo:
    """What the audio-based axes need of one recording, for the T frames scored."""

    silent: np.ndarray  # (T,) bool: frames in a guarded silent span
    rms: float  # RMS of the whole recording


def audio_info(audio: np.ndarray, sample_rate: float, fps: float, n_frames: int) -> AudioInfo:
    return AudioInfo(S.silent_frames(S.frame_levels(audio, sample_rate, fps, n_frames), fps), S.speech_rms(audio))


class AxesAccumulator:
    """One sequence's axes (module doc). ``files``: the item's prediction files (conditions x samples);
    ``runs``: file indices per sample (:meth:`~.accumulate.Item.runs`)."""

    def __init__(self, axes: tuple[str, ...], fps: float, lips: Any, mouth: Optional[tuple[int, int]],
                 runs: list[list[int]], conditions: list[Optional[str]], audio: Optional[AudioInfo]):
        self.axes, self.fps, self.lips, self.audio = axes, fps, lips, audio
        self.runs = runs
        self.mouth = mouth if any(AXES[a].needs_mouth for a in axes) else None
        k = len(conditions)
        self.o_gt: list[np.ndarray] = []
        self.o_pred: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.slcc = "SLCC" in axes
        self.steps: list[list[np.ndarray]] = [[] for _ in range(k + 1)]  # per input (ground truth last)
        self.last: list[Optional[np.ndarray]] = [None] * (k + 1)
        self.pairs: list[tuple[int, int]] = []
        if "Diversity" in axes and len(runs) > 1:
            # pairs of samples under the same condition: file j of run a with file j' of run b, same condition
            for ra, rb in itertools.combinations(range(len(runs)), 2):
                by_c = {conditions[j]: j for j in runs[rb]}
                self.pairs += [(j, by_c[conditions[j]]) for j in runs[ra] if conditions[j] in by_c]
        self.pair_sum = np.zeros(len(self.pairs))
        self.frames = 0

    def add(self, gt: np.ndarray, preds: list[np.ndarray]) -> None:
        if self.mouth is not None:
            u, lo = self.mouth
            self.o_gt.append(S.mouth_opening(gt, u, lo))
            for c, p in enumerate(preds):
                self.o_pred[c].append(S.mouth_opening(p, u, lo))
        if self.slcc:
            for c, x in enumerate([*preds, gt]):
                lips = F.take_vertices(x, self.lips)
                self.steps[c].append(S.lip_speed(lips, self.last[c]))
                self.last[c] = np.array(lips[-1], np.float64)
        for q, (a, b) in enumerate(self.pairs):
            self.pair_sum[q] += float(S.mean_pair_distance(preds[a], preds[b]).sum())
        self.frames += gt.shape[0]

    def close(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(row keys, per run values). Run values: ``MTM``/``LipLag`` in ms (None if undefined), ``sil``
        (frames, sum of the prediction's opening, sum of the ground truth's), ``LI`` (lip intensity)."""
        row: dict[str, Any] = {}
        ms = 1000.0 / self.fps
        o_gt = np.concatenate(self.o_gt) if self.o_gt else None
        o_pr = [np.concatenate(v) for v in self.o_pred] if self.o_gt else None
        runs: list[dict[str, Any]] = []
        for files in self.runs:
            r: dict[str, Any] = {}
            if o_gt is not None and "MTM" in self.axes:
                v = [m for m in (S.mtm_frames(o_gt, o_pr[j]) for j in files) if m is not None]
                r["MTM"] = float(np.mean(v)) * ms if v else None
            if o_gt is not None and "LipLag" in self.axes:
                v = [lag for lag in (S.lip_lag_frames(o_gt, o_pr[j], self.fps) for j in files) if lag is not None]
                r["LipLag"] = float(np.mean(v)) * ms if v else None
            if o_gt is not None and "SilenceOpening" in self.axes and self.audio is not None:
                s = self.audio.silent
                op = sum(o_pr[j] for j in files) / len(files)
                r["sil"] = (int(s.sum()), float(op[s].sum()), float(o_gt[s].sum()))
            if self.slcc:
                r["LI"] = float(np.mean([S.lip_intensity(np.concatenate(self.steps[j])) for j in files]))
            runs.append(r)
        for key in ("MTM", "LipLag"):
            if key in runs[0]:
                row[key] = _mean_defined([r[key] for r in runs])
        if "sil" in runs[0]:
            n, sp, sg = runs[0]["sil"][0], [r["sil"][1] for r in runs], runs[0]["sil"][2]
            row.update(silence_frames=n, silence_open_pred=float(np.mean(sp)) / n if n else None,
                       silence_open_gt=sg / n if n else None)
            row["SilenceOpening"] = float(np.mean(sp)) / sg if n and sg > 0 else None
        if self.slcc:
            row["speech_rms"] = self.audio.rms if self.audio is not None else None
            row["lip_intensity"] = float(np.mean([r["LI"] for r in runs]))
            row["lip_intensity_gt"] = S.lip_intensity(np.concatenate(self.steps[-1]))
        if "Diversity" in self.axes:
            row["Diversity"] = float(self.pair_sum.mean() / self.frames) if self.pairs else None
        return row, runs


def _mean_defined(values: list[Optional[float]]) -> Optional[float]:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _entry(name: str, value: Optional[float], unit: str, reason: Optional[str], fps: float, **extra: Any) -> dict:
    a = AXES[name]
    out: dict[str, Any] = {"value": value, "unit": unit, "ci95": None, "aggregation": a.aggregation,
                           "better": a.better, "higher_is_better": a.better == "higher", "version": a.version,
                           "constants": constants(name, fps), "description": a.description}
    if value is None:
        out["reason"] = reason
    out.update(extra)
    return out


def axes_entries(axes: tuple[str, ...], seqs: list[dict], subjects: list[str], fps: float, vertex_units: str,
                 mouth: Optional[dict], missing: dict[str, str], n_bootstrap: int, seed: int) -> dict[str, dict]:
    """The results file's ``metrics`` entries of ``axes`` from the per-sequence outputs (``axes_row``,
    ``axes_runs``). ``missing``: axis -> why it cannot be computed at all (no mouth pair, no audio)."""
    out: dict[str, dict] = {}
    rows = [s["row"] for s in seqs]
    n_runs = len(seqs[0]["axes_runs"]) if seqs else 0
    frames = [int(r["frames"]) for r in rows]
    for name in axes:
        unit = vertex_units if AXES[name].unit == "vertex" else AXES[name].unit
        if name in missing:
            out[name] = _entry(name, None, unit, missing[name], fps)
            continue
        if name in ("MTM", "LipLag", "Diversity"):
            vals = [(r.get(name), f) for r, f in zip(rows, frames)]
            ok = [(v, f) for v, f in vals if v is not None]
            if name == "Diversity":
                value = float(np.mean([v for v, _ in ok])) if ok else None
            else:  # per run: the mean over its defined sequences; the headline: the mean over runs
                per_run = [_mean_defined([s["axes_runs"][k].get(name) for s in seqs]) for k in range(n_runs)]
                value = _mean_defined(per_run)
            why = {"MTM": "no sequence has a matched pair of mouth-opening extrema",
                   "LipLag": "no sequence has a lag with a defined correlation (constant mouth opening)",
                   "Diversity": "no sequence has two or more samples (<seq>..._<k>.npy with >= 2 indices)"}[name]
            e = _entry(name, value, unit, why, fps, n_sequences=len(ok))
            if value is not None and len(ok) > 1:
                ci = bootstrap_ci(name, [v for v, _ in ok], [f for _, f in ok], n_resamples=n_bootstrap, seed=seed,
                                  how="mean_sequences")
                e["ci95"] = [ci[0], ci[1]]
            if name == "LipLag" and value is not None:
                e["abs"] = float(np.mean([abs(v) for v, _ in ok]))
            if name == "MTM" and value is not None:
                e["frames"] = value * fps / 1000.0
            out[name] = e
        elif name == "SilenceOpening":
            n = np.array([r["silence_frames"] for r in rows], np.float64)
            sg = np.array([(r["silence_open_gt"] or 0.0) for r in rows]) * n
            sp_runs = [np.array([s["axes_runs"][k]["sil"][1] for s in seqs]) for k in range(n_runs)]
            sp = np.mean(sp_runs, axis=0)
            ok = n.sum() > 0 and sg.sum() > 0
            value = float(np.mean([x.sum() for x in sp_runs]) / sg.sum()) if ok else None
            why = ("no silent span: no frame is part of a run of >= "
                   f"{S.MIN_SPAN_S:g} s below {S.SILENCE_DB:g} dB" if n.sum() == 0 else
                   "the ground truth's mouth opening is 0 over the silent frames")
            e = _entry(name, value, unit, why, fps, silence_frames=int(n.sum()),
                       sequences_with_silence=int((n > 0).sum()), mouth_pair=mouth)
            if ok:
                e["open_pred"], e["open_gt"] = float(sp.sum() / n.sum()), float(sg.sum() / n.sum())
                if (n > 0).sum() > 1:
                    ci = ratio_ci(sp, sg, n_resamples=n_bootstrap, seed=seed)
                    e["ci95"] = [ci[0], ci[1]]
            out[name] = e
        elif name == "SLCC":
            rms = [r["speech_rms"] for r in rows]
            r_gt, n_gt = S.slcc(rms, [r["lip_intensity_gt"] for r in rows], subjects)
            per_run = [S.slcc(rms, [s["axes_runs"][k]["LI"] for s in seqs], subjects)[0] for k in range(n_runs)]
            value = _mean_defined(per_run)
            e = _entry(name, value, unit, f"fewer than 3 usable clips (speakers with >= 2 clips and varying "
                       f"intensity; {n_gt} usable)", fps, gt=r_gt, n_clips=n_gt,
                       delta=abs(value - r_gt) if value is not None and r_gt is not None else None,
                       ci_note="no CI: SLCC is one correlation over the clips of the split")
            out[name] = e
    if mouth is not None:
        for name in ("MTM", "LipLag"):
            if name in out:
                out[name]["mouth_pair"] = mouth
    return out
