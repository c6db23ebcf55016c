"""The scoring protocols: which metrics, which length rule, which arithmetic.

``a2f`` (ours, the default), ``codetalker`` (CodeTalker's ``cal_metric.py`` to the last bit) and ``facediffuser``
(FaceDiffuser's ``compute_objective_metrics.py``). Every rule is in ``docs/metrics.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import A2FBenchError


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    metrics: tuple[str, ...]
    length_policy: str  # truncate_pred_only | truncate_both
    float64: bool  # compute in float64 (True) or in the inputs' promoted dtype, as the reference script (False)
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "a2f": Protocol("a2f", 1, ("LVE", "MVE", "UFVE", "FDD", "FDD_abs"), "truncate_pred_only", True,
                    "A2F-Bench: CodeTalker's LVE and FDD, FaceDiffuser's MVE, UFVE = MVE over the upper face, "
                    "FDD_abs; float64; 95% bootstrap CIs over sequences"),
    "codetalker": Protocol("codetalker", 1, ("LVE", "FDD"), "truncate_pred_only", False,
                           "CodeTalker main/cal_metric.py, bit-exact on the same arrays"),
    "facediffuser": Protocol("facediffuser", 1, ("LVE", "MVE", "FDD", "FDD_abs"), "truncate_both", False,
                             "FaceDiffuser evaluation/compute_objective_metrics.py (both cut to the shorter)"),
}


CONDITIONS_RULE = ("plain <seq_id>.npy, else the own-subject condition, else the mean over every condition present "
                   "(per-frame terms and FDD averaged over conditions)")


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise A2FBenchError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def frames_scored(proto: Protocol, T_gt: int, pred_frames: list[int]) -> Optional[int]:
    """Frames scored under the protocol's length rule; None when a prediction is too short for it."""
    if proto.length_policy == "truncate_pred_only":
        return T_gt if min(pred_frames) >= T_gt else None
    return min(T_gt, *pred_frames)
