"""The evaluation axes beyond vertex distances (``evaluate --metrics``): what each one is, its version and
constants, and how ``--metrics`` names resolve.

They live apart from :mod:`.table` on purpose: the metric table's metrics are per-frame or per-sequence
distances that the leaderboard stores, ranks and recomputes from per-sequence columns; these are computed
from mouth-opening curves, audio and several samples, some at corpus level (SLCC), may be ``null`` with a
reason, and are never part of the overall rank. The results file records each with its ``version`` and
``constants``; the leaderboard shows them as columns keyed by name *and* version (never mixing versions).
Arithmetic: :mod:`.signals`; definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...errors import A2FBenchError
from ...registry import did_you_mean
from . import signals as S
from .table import METRICS


@dataclass(frozen=True)
class Axis:
    """One axis: results key, ``--metrics`` name, unit (``vertex``: the dataset's vertex unit), split aggregation,
    direction, what it needs, version."""

    name: str
    cli: str
    unit: str
    aggregation: str
    description: str
    better: str  # "lower", "higher", "closer_to_0", "closer_to_1"
    needs_mouth: bool = False
    needs_audio: bool = False
    version: int = 1


AXES: dict[str, Axis] = {a.name: a for a in (
    Axis("MTM", "mtm", "ms", "mean_sequences_defined",
         "mean temporal misalignment (P3D, CVPR 2025, as evaluate_MTM.py runs): mouth-opening curves of ground "
         "truth and prediction smoothed, aligned by derivative DTW, mean frame offset of matched extrema", "lower",
         needs_mouth=True),
    Axis("LipLag", "lip-lag", "ms", "mean_sequences_defined",
         "signed lag of the prediction's mouth opening behind the ground truth's (best Pearson cross-correlation "
         "within +-0.5 s; positive = late)", "closer_to_0", needs_mouth=True),
    Axis("SilenceOpening", "silence-opening", "1", "ratio_of_sums",
         "mouth opening of the prediction over the ground truth's, summed over the silent frames of the split "
         "(1 = as closed as the ground truth)", "closer_to_1", needs_mouth=True, needs_audio=True),
    Axis("SLCC", "slcc", "1", "pearson_over_clips",
         "speech-lip intensity correlation (P3D): Pearson r over clips of per-speaker z-scores of the "
         "recording's RMS and the lip vertices' RMS speed; gt = the same on the ground truth, delta = |r - gt|",
         "closer_to_gt", needs_audio=True),
    Axis("Diversity", "diversity", "vertex", "mean_sequences_defined",
         "mean over unordered pairs of samples of mean_t mean_v |P_i - P_j| (FaceDiffuser's formula on samples), "
         "mean over sequences", "higher"),
)}


def constants(axis: str, fps: float) -> dict:
    """The constants of ``axis`` at ``fps``, as the results file records them."""
    if axis == "MTM":
        return {"sigma_frames": S.MTM_SIGMA, "smoothing": "scipy gaussian_filter1d (truncate 4, mode reflect)",
                "alignment": "derivative DTW, |dx - dy|, steps diagonal/up/left", "extrema": "scipy find_peaks",
                "frame_ms": 1000.0 / fps}
    if axis == "LipLag":
        return {"window_s": S.LAG_WINDOW_S, "max_lag_frames": int(round(S.LAG_WINDOW_S * fps)),
                "resolution_ms": 1000.0 / fps, "ties": "smaller |lag|, then the negative one"}
    if axis == "SilenceOpening":
        return {"threshold_db": S.SILENCE_DB, "reference": "loudest frame of the recording",
                "min_span_s": S.MIN_SPAN_S, "min_span_frames": S.frames_for(S.MIN_SPAN_S, fps),
                "guard_s": S.GUARD_S, "guard_frames": S.frames_for(S.GUARD_S, fps), "min_peak_rms": S.MIN_PEAK_RMS}
    if axis == "SLCC":
        return {"speech": "RMS of the whole recording", "lips": "RMS over frames of the mean lip-vertex step",
                "zscore": "per speaker (subject), ddof 1", "min_clips": 3}
    return {"pairs": "unordered sample pairs i<j", "vertices": "all"}


ALIASES = {"fdd-abs": "FDD_abs"}


def parse_metrics(text: Optional[str], core: tuple[str, ...], protocol: str) -> Optional[tuple[tuple[str, ...],
                                                                                                tuple[str, ...]]]:
    """``--metrics`` (comma list, case-insensitive, ``-``/``_`` alike) -> (metric-table names in the protocol's
    order, axes in table order); None for no option (the protocol's own set). One-line errors for an empty
    list, an unknown name (with a did-you-mean) or a table metric the protocol does not compute."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise A2FBenchError(f"--metrics: expected a comma list of metric names, found {text!r}; valid: {valid(core)}")
    known = {m.lower().replace("_", "-"): m for m in METRICS}
    known.update({a.cli: a.name for a in AXES.values()})
    known.update({a.name.lower(): a.name for a in AXES.values()})
    known.update(ALIASES)
    picked = []
    for raw in names:
        key = raw.lower().replace("_", "-")
        if key not in known:
            hint = did_you_mean(key, [m.lower().replace("_", "-") for m in core] + [a.cli for a in AXES.values()])
            raise A2FBenchError(f"--metrics: unknown metric {raw!r}{hint}; valid: {valid(core)}")
        picked.append(known[key])
    table = [m for m in METRICS if m in picked]
    outside = [m for m in table if m not in core]
    if outside:
        raise A2FBenchError(f"--metrics: protocol {protocol} does not compute {outside[0]}; valid: {valid(core)}")
    return tuple(m for m in core if m in picked), tuple(a for a in AXES if a in picked)


def valid(core: tuple[str, ...]) -> str:
    return ", ".join([m.lower().replace("_", "-") for m in core] + [a.cli for a in AXES.values()])
