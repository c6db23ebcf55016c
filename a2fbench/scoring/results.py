"""The results JSON written by ``a2fbench evaluate`` and read by ``compare`` and the leaderboard.

Schema (version 1; every key documented in docs/metrics.md)::

    schema_version   1
    a2fbench_version
    dataset          {id, name, version, split, fingerprint, n_sequences, n_frames, synthetic, regions}
    protocol         {name, version, length_policy, bootstrap: {n, seed, method}}
    metrics          {LVE|MVE|UFVE|FDD|FDD_abs|LVD: {value, unit, ci95, aggregation, higher_is_better, version}}
    per_sequence     [{id, frames, LVE, MVE, UFVE, FDD, LVD}] (+ samples, per_sample with several runs)
    predictions      {fingerprint, n_files}
    samples          (several runs only) {n, indices, rule, metrics: {M: {values, std, min, max}}}
    created
    signature        (files `evaluate` wrote) {scheme: hmac-sha256, key_id, value}: HMAC of the canonical JSON
                     of everything but signature and content_hash, with this installation's key
                     (:mod:`a2fbench.util.signing`); :func:`signature_status` checks it
    content_hash     sha256 of the canonical JSON of everything else (an integrity check, not a proof: anyone
                     can recompute it)

Aggregates follow from the per-sequence scores by the aggregation each metric records (the metric table's,
unless the protocol says otherwise): LVE, MVE and UFVE are pooled over frames (frame-weighted means of the
per-sequence means; protocol unitalker: LVE is the mean of the per-sequence means), FDD is the mean over
sequences of the signed per-sequence values, FDD_abs the mean of their absolute values, LVD a mean over
sequences. With several samples (runs) each run's aggregate comes from the rows' ``per_sample`` values and the
metric's value is their mean. :func:`check_consistency` recomputes them (to 1e-9
relative; 1e-5 when ``protocol.compute_dtype`` is float32, as the codetalker/facediffuser protocols keep the
reference scripts' float32 arithmetic on float32 inputs), and
:func:`load` refuses a file whose numbers or hash do not hold together.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Optional, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ResultSchemaError
from ..util import signing
from ..util.fsutil import read_json
from .metrics.stats import aggregate as aggregate_values
from .metrics.table import METRICS, Aggregation

AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)

SCHEMA_VERSION = 1
REL_TOL = 1e-9
LOW_PRECISION_REL_TOL = 1e-5  # protocol.compute_dtype float32: the reference's own float32 sums


class _M(BaseModel):
    model_config = ConfigDict(extra="allow")


class MetricEntry(_M):
    value: Optional[float]
    unit: str
    ci95: Optional[tuple[float, float]] = None
    aggregation: Optional[str] = None
    higher_is_better: bool = False
    version: int = 1


class DatasetEntry(_M):
    id: str
    name: str
    version: int
    split: str
    fingerprint: str
    n_sequences: int
    n_frames: int


class ProtocolEntry(_M):
    name: str
    version: int
    length_policy: str


class PredictionsEntry(_M):
    fingerprint: str


class ResultsDoc(_M):
    schema_version: int
    a2fbench_version: str
    dataset: DatasetEntry
    protocol: ProtocolEntry
    metrics: dict[str, MetricEntry]
    per_sequence: list[dict[str, Any]]
    predictions: PredictionsEntry
    created: str
    content_hash: Optional[str] = None


def _canonical(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "content_hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def content_hash(doc: dict) -> str:
    return "sha256:" + hashlib.sha256(_canonical(doc)).hexdigest()


def _signed_bytes(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k not in ("content_hash", "signature")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(doc: dict) -> dict:
    """``doc`` with a ``signature`` by this installation's key (``evaluate`` signs what it computed); unchanged
    when no key can be made (a read-only ``$A2FBENCH_HOME``): the file is then simply unsigned."""
    key = signing.installation_key(create=True)
    out = {k: v for k, v in doc.items() if k not in ("content_hash", "signature")}
    if key is None:
        return out
    out["signature"] = {"scheme": signing.SCHEME, "key_id": signing.key_id(key),
                        "value": signing.mac(key, _signed_bytes(out))}
    return out


def signature_status(doc: dict) -> str:
    """``valid`` (signed by this installation's key and unchanged since), ``invalid`` (signed by this
    installation's key, then edited), ``foreign`` (signed by another installation: cannot be checked here) or
    ``unsigned``."""
    sig = doc.get("signature")
    if not isinstance(sig, dict) or sig.get("scheme") != signing.SCHEME:
        return "unsigned"
    key = signing.installation_key(create=False)
    if key is None or sig.get("key_id") != signing.key_id(key):
        return "foreign"
    return "valid" if signing.matches(key, _signed_bytes(doc), str(sig.get("value"))) else "invalid"


def finalize(doc: dict) -> dict:
    """Return ``doc`` with its ``content_hash`` set (call last, after every other key)."""
    out = {k: v for k, v in doc.items() if k != "content_hash"}
    out["content_hash"] = content_hash(out)
    return out


def recorded_aggregation(entry: dict) -> Optional[str]:
    """The aggregation a results file records for a metric (its ``metrics.<M>`` entry) when it is one of
    :data:`AGGREGATIONS`; None otherwise (the metric table's rule then applies)."""
    how = entry.get("aggregation")
    return how if how in AGGREGATIONS else None


def aggregate(metric: str, per_sequence: list[dict], how: Optional[str] = None,
              sample: Optional[int] = None) -> Optional[float]:
    """Recompute one aggregate from per-sequence scores (see module doc); None when no row has the metric.

    ``how``: the aggregation the file records for the metric (default: the metric table's). ``sample``: the
    aggregate of run ``sample`` (position in ``samples.indices``) from the rows' ``per_sample`` values.
    """
    key = METRICS[metric].per_sequence_key
    if sample is None:
        rows = [(r, r.get(key)) for r in per_sequence]
    else:
        rows = [(r, (r.get("per_sample") or {}).get(key, [None] * (sample + 1))[sample]) for r in per_sequence]
    rows = [(r, v) for r, v in rows if v is not None]
    if not rows:
        return None
    return aggregate_values(metric, [float(v) for _, v in rows], [int(r["frames"]) for r, _ in rows], how)


def check_consistency(doc: dict, source: str = "results") -> None:
    """Raise :class:`ResultSchemaError` when aggregates do not follow from per-sequence scores or counts differ."""
    ps = doc["per_sequence"]
    ds = doc["dataset"]
    if len(ps) != int(ds["n_sequences"]):
        raise ResultSchemaError(f"{source}: dataset.n_sequences is {ds['n_sequences']} but per_sequence has {len(ps)} rows")
    if len({r["id"] for r in ps}) != len(ps):
        raise ResultSchemaError(f"{source}: per_sequence lists a sequence twice")
    nf = sum(int(r["frames"]) for r in ps)
    if nf != int(ds["n_frames"]):
        raise ResultSchemaError(f"{source}: dataset.n_frames is {ds['n_frames']} but per_sequence frames sum to {nf}")
    low_precision = doc.get("protocol", {}).get("compute_dtype") in ("float32", "float16")
    samples = doc.get("samples") or {}
    n_runs = int(samples.get("n", 1))
    for name, m in doc["metrics"].items():
        if name not in METRICS or m.get("value") is None:
            continue
        how = recorded_aggregation(m)
        if n_runs > 1:
            runs = [aggregate(name, ps, how, k) for k in range(n_runs)]
            if any(r is None for r in runs):
                raise ResultSchemaError(f"{source}: {name} lacks per-sample scores of its {n_runs} samples; re-run "
                                        "`a2fbench evaluate`")
            listed = samples.get("metrics", {}).get(name, {}).get("values", [])
            if len(listed) != n_runs or any(not math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-300)
                                            for a, b in zip(listed, runs)):
                raise ResultSchemaError(f"{source}: samples.metrics.{name} does not follow from the per-sample "
                                        "scores; the file was edited or is corrupt; re-run `a2fbench evaluate`")
            want = sum(runs) / n_runs
        else:
            want = aggregate(name, ps, how)
        got = float(m["value"])
        rel, abs_tol = REL_TOL, 1e-300
        if low_precision and want is not None:
            # protocols that keep the reference's float32 arithmetic: allow float32 rounding of the sums,
            # relative to the magnitudes summed (signed FDD can cancel)
            key = METRICS[name].per_sequence_key
            rel, abs_tol = LOW_PRECISION_REL_TOL, LOW_PRECISION_REL_TOL * max(
                (abs(float(r[key])) for r in ps if r.get(key) is not None), default=0.0)
        if want is None or not math.isclose(got, want, rel_tol=rel, abs_tol=abs_tol):
            raise ResultSchemaError(f"{source}: {name} is {got!r} but its per-sequence scores give {want!r}; the file "
                                    "was edited or is corrupt; re-run `a2fbench evaluate`")


def check_axes(doc: dict, source: str = "results") -> None:
    """The evaluation axes' values against their per-sequence scores (one run only; docs/metrics.md): MTM, LipLag
    and Diversity are means over the sequences with a value, SilenceOpening the ratio of the sums over silent
    frames. SLCC (one correlation over clips) is not recomputed here."""
    if int((doc.get("samples") or {}).get("n", 1)) > 1:
        return
    ps = doc["per_sequence"]
    for name, m in doc["metrics"].items():
        if not isinstance(m, dict) or m.get("value") is None:
            continue
        if name in ("MTM", "LipLag", "Diversity"):
            vals = [float(r[name]) for r in ps if r.get(name) is not None]
            want = sum(vals) / len(vals) if vals else None
        elif name == "SilenceOpening":
            rows = [r for r in ps if r.get("silence_frames")]
            num = sum(float(r["silence_open_pred"]) * int(r["silence_frames"]) for r in rows)
            den = sum(float(r["silence_open_gt"]) * int(r["silence_frames"]) for r in rows)
            want = num / den if den > 0 else None
        else:
            continue
        if want is None or not math.isclose(float(m["value"]), want, rel_tol=REL_TOL, abs_tol=1e-12):
            raise ResultSchemaError(f"{source}: {name} is {m['value']!r} but its per-sequence scores give {want!r}; "
                                    "the file was edited or is corrupt; re-run `a2fbench evaluate`")


def validate(doc: Any, source: str = "results") -> dict:
    """Schema + hash + consistency checks; returns the document."""
    if not isinstance(doc, dict):
        raise ResultSchemaError(f"{source}: expected a JSON object, found {type(doc).__name__}")
    ver = doc.get("schema_version")
    if ver != SCHEMA_VERSION:
        raise ResultSchemaError(f"{source}: expected schema_version {SCHEMA_VERSION}, found {ver!r}; re-run "
                                "`a2fbench evaluate` with this a2fbench")
    try:
        ResultsDoc.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        raise ResultSchemaError(f"{source}: invalid results field '{'.'.join(map(str, first['loc']))}': "
                                f"{first['msg']}; re-run `a2fbench evaluate`") from None
    h = doc.get("content_hash")
    if h is not None and h != content_hash(doc):
        raise ResultSchemaError(f"{source}: content_hash does not match the file's content; the file was edited "
                                "after `a2fbench evaluate` wrote it")
    check_consistency(doc, source)
    check_axes(doc, source)
    return doc


def load(path: str | os.PathLike) -> dict:
    """Read and validate a results file (see :func:`validate`)."""
    p = Path(path)
    try:
        doc = read_json(p, what="a results JSON written by `a2fbench evaluate`", error=ResultSchemaError)
    except FileNotFoundError:
        raise ResultSchemaError(f"{p}: expected a results JSON written by `a2fbench evaluate`, found nothing") from None
    return validate(doc, str(p))
