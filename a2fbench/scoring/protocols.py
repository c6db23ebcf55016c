"""The scoring protocols: which metrics, which length rules, which arithmetic, in which coordinates.

``a2f`` (ours, the default), ``codetalker`` (CodeTalker's ``cal_metric.py`` to the last bit), ``facediffuser``
(FaceDiffuser's ``compute_objective_metrics.py``), ``facediffuser_multiface`` (the same on Multiface in
FaceDiffuser's normalised coordinates) and ``unitalker`` (UniTalker's in-loop lip metric). Every rule is in
``docs/metrics.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import A2FBenchError
from ..store import UNITALKER_MAX_SECONDS, UNITALKER_MIN_SECONDS
from .metrics.table import METRICS

#: the name of UniTalker's protocol (a protocol name, not the ``unitalker`` package; tests/test_layering.py)
UNITALKER = "unitalker"
#: the unitalker protocol's version on UniTalker's own mouth lists (region set ``unitalker``), and the version it
#: takes when it falls back to the dataset's default lip list (the mouth list files are absent): never ranked with 2
UNITALKER_VERSION, UNITALKER_FALLBACK_VERSION = 2, 3
#: the length policies, in the spelling of the results JSON (``protocol.length_policy``)
LENGTH_POLICIES = ("truncate_pred_only", "truncate_both")


@dataclass(frozen=True)
class Protocol:
    """What one protocol computes.

    * ``length_policy``: its default (the reference script's); ``policies``: the ones it can honour;
    * ``float64``: compute in float64 (True) or in the inputs' promoted dtype, as the reference script (False);
    * ``aggregation``: metrics aggregated otherwise than the metric table says, ``((metric, aggregation), ...)``;
    * ``max_seconds``: every sequence cut to the part its recording covers, at most its first ``max_seconds``
      (UniTalker's ``DataItem.truncate``);
    * ``min_seconds``: sequences shorter than this after that cut are left out and listed (UniTalker's loader);
    * ``region_set``: the region set the protocol scores on when the prepared store has it (else the dataset's
      default, under ``fallback_version``);
    * ``scaled``: values in UniTalker's scaled coordinates (motion x the manifest's ``unitalker.scale``);
    * ``normalised``: ground truth and templates in FaceDiffuser's min/max-normalised Multiface coordinates (the
      manifest's ``facediffuser`` block), where FaceDiffuser's predictions are.
    """

    name: str
    version: int
    metrics: tuple[str, ...]
    length_policy: str
    float64: bool
    description: str
    policies: tuple[str, ...] = LENGTH_POLICIES
    aggregation: tuple[tuple[str, str], ...] = ()
    max_seconds: Optional[float] = None
    min_seconds: Optional[float] = None
    region_set: Optional[str] = None
    fallback_version: Optional[int] = None
    scaled: bool = False
    normalised: bool = False

    def aggregation_of(self, metric: str) -> str:
        """The metric's aggregation under this protocol (the metric table's unless overridden)."""
        return dict(self.aggregation).get(metric, METRICS[metric].aggregation)


PROTOCOLS: dict[str, Protocol] = {
    "a2f": Protocol("a2f", 1, ("LVE", "MVE", "UFVE", "FDD", "FDD_abs"), "truncate_pred_only", True,
                    "A2F-Bench: CodeTalker's LVE and FDD, FaceDiffuser's MVE, UFVE = MVE over the upper face, "
                    "FDD_abs; float64; 95% bootstrap CIs over sequences"),
    "codetalker": Protocol("codetalker", 1, ("LVE", "FDD"), "truncate_pred_only", False,
                           "CodeTalker main/cal_metric.py, bit-exact on the same arrays"),
    "facediffuser": Protocol("facediffuser", 1, ("LVE", "MVE", "FDD", "FDD_abs"), "truncate_both", False,
                             "FaceDiffuser evaluation/compute_objective_metrics.py (both cut to the shorter)"),
    "facediffuser_multiface": Protocol(
        "facediffuser_multiface", 1, ("LVE", "MVE", "FDD", "FDD_abs"), "truncate_both", False,
        "FaceDiffuser evaluation/compute_objective_metrics.py on Multiface: ground truth and templates in "
        "FaceDiffuser's per-axis min/max normalisation to [-1, 1] (data/multiface/preprocess.py), predictions as "
        "FaceDiffuser writes them (normalised); lips = mouth weight > 0.1, upper = forehead weight > 0.4",
        normalised=True),
    UNITALKER: Protocol(
        UNITALKER, UNITALKER_VERSION, ("LVE", "LVD"), "truncate_both", True,
        "UniTalker's in-loop metric (loss.mouth_metric, validate_epoch): per sequence the mean over frames of the "
        "max over UniTalker's mouth list (region set unitalker) of the squared distance (LVE) and of the distance "
        "(LVD), then the mean over sequences; in UniTalker's scaled coordinates (x unitalker.scale); every sequence "
        f"cut as DataItem.truncate cuts it (the part its recording covers, at most {UNITALKER_MAX_SECONDS:g} s); "
        f"sequences under {UNITALKER_MIN_SECONDS:g} s after the cut left out (and listed), as its loader skips them",
        policies=("truncate_both",), aggregation=(("LVE", "mean_sequences"),), max_seconds=UNITALKER_MAX_SECONDS,
        min_seconds=UNITALKER_MIN_SECONDS, region_set=UNITALKER, fallback_version=UNITALKER_FALLBACK_VERSION,
        scaled=True),
}


CONDITIONS_RULE = ("plain <seq_id>.npy; else, for a training subject, its own condition (required); else the mean "
                   "over every training-subject condition (all required; per-frame terms and FDD averaged over "
                   "conditions); samples _<k> are runs scored whole, the headline is their mean")


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise A2FBenchError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def aggregation(protocol: str, metric: str) -> str:
    """How ``metric`` is aggregated under the protocol named ``protocol``: its override (UniTalker's LVE is a mean of
    per-sequence means) or the metric table's rule, which is also the answer for a name this version does not
    know."""
    return PROTOCOLS[protocol].aggregation_of(metric) if protocol in PROTOCOLS else METRICS[metric].aggregation


def resolve_policy(proto: Protocol, policy: Optional[str]) -> str:
    """The length policy to use: ``policy`` (checked against what the protocol can honour) or its default."""
    if policy is None:
        return proto.length_policy
    if policy not in LENGTH_POLICIES:
        raise A2FBenchError(f"unknown length policy {policy!r}; expected one of {', '.join(LENGTH_POLICIES)}")
    if policy not in proto.policies:
        why = (f" (it cuts every sequence, ground truth included, to its first {proto.max_seconds:g} s)"
               if proto.max_seconds else "")
        raise A2FBenchError(f"protocol {proto.name}: expected length policy {' or '.join(proto.policies)}{why}, "
                            f"found {policy}; drop --length-policy or pass {proto.policies[0]}")
    return policy


def frames_scored(policy: str, T_gt: int, pred_frames: list[int], cap: Optional[int] = None) -> Optional[int]:
    """Frames scored under a length policy; None when a prediction is too short for it.

    ``cap``: the most frames the protocol scores of this sequence (unitalker: what 20 s and the recording cover).
    ``truncate_pred_only``: every prediction cut to the ground truth, which is never cut; ``truncate_both``: all
    cut to the shortest.
    """
    T_ref = T_gt if cap is None else min(T_gt, cap)
    if policy == "truncate_pred_only":
        return T_ref if min(pred_frames) >= T_ref else None
    return min(T_ref, *pred_frames)
