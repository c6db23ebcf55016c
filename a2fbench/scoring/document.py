"""The results document of one evaluation: per-sequence scores and runs -> the results JSON (schema in
:mod:`.results`, every key in ``docs/metrics.md``): aggregates by the protocol's rules, bootstrap intervals,
units of the protocol's coordinates, samples of a stochastic model and their spread, and what was scored.

Takes: the evaluation's :class:`~.pipeline.Context`, the matched predictions and the scorer's per-sequence
outputs. Gives: the results dict, not yet finalized (the caller adds what made the predictions, then
:func:`~.results.finalize` sets its content hash once)."""

from __future__ import annotations

import hashlib
import statistics
import time
from typing import Any, Optional

import numpy as np

from .. import __version__
from .accumulate import headline, run_aggregates
from .axes import axes_entries
from .metrics.stats import BOOTSTRAP_METHOD, bootstrap_ci
from .metrics.table import METRICS, display_scale
from .predictions import PredictionSet
from .protocols import CONDITIONS_RULE
from .results import SCHEMA_VERSION
from .streams import fingerprint

SAMPLES_RULE = ("each sample (_<k>) is scored as a whole run; every metric's value is the mean over runs of the "
                "per-run values; values lists them in index order, std is their standard deviation (ddof 1)")


def regions_digest(lips: np.ndarray, upper: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(lips, "<i8").tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(upper, "<i8").tobytes())
    return "sha256:" + h.hexdigest()


def scaled_units(units: str, scale: float) -> str:
    """The unit of coordinates multiplied by ``scale`` (``mm`` x 0.001 = ``m``).

    >>> scaled_units("mm", 0.001), scaled_units("m", 1.0), scaled_units("codetalker_area_normalised", 0.2)
    ('m', 'm', '0.2 codetalker_area_normalised')
    """
    if scale == 1.0:
        return units
    known = {("mm", 0.001): "m", ("m", 1000.0): "mm", ("cm", 0.01): "m", ("m", 100.0): "cm"}
    return known.get((units, float(scale)), f"{scale:g} {units}")


def _display(card: dict, metric: str, scale: float) -> float:
    """Display scale of a metric (the card's, by :func:`.metrics.table.display_scale`) in coordinates multiplied
    by ``scale``."""
    return display_scale(card.get("display") or {}, metric) * float(scale) ** METRICS[metric].power


def _spread(values: list[float]) -> dict[str, Any]:
    return {"values": [float(v) for v in values], "std": float(statistics.stdev(values)) if len(values) > 1 else 0.0,
            "min": float(min(values)), "max": float(max(values))}


def results_doc(ctx: Any, split: str, regions: dict, preds: PredictionSet, seqs: list[dict], digests: dict,
                dtypes: set, n_bootstrap: int, seed: int, policy: str, axes: Optional[dict] = None) -> dict:
    """The results dict of one evaluation, without its content hash (see module doc). ``axes``: for the axes
    asked for, ``{mouth, missing, subjects}`` (the mouth pair used, axes not computable and why, each scored
    sequence's subject)."""
    proto, card, opts = ctx.proto, ctx.ds.card, ctx.opts
    per_seq = [s["row"] for s in seqs]
    frames = [r["frames"] for r in per_seq]
    vunits = str(card.get("vertex_units") or card.get("units") or "")
    if opts.coord_range is not None:
        units, show = "facediffuser_normalised", None
    else:
        units, show = scaled_units(vunits, opts.scale), opts.scale
    runs = run_aggregates(proto, seqs)
    head = headline(proto, runs)
    metrics: dict[str, dict] = {}
    for m in proto.metrics:
        info = METRICS[m]
        key, how = info.per_sequence_key, proto.aggregation_of(m)
        vals = [r["per_sample"][key] for r in per_seq] if len(runs) > 1 else [r[key] for r in per_seq]
        ci = bootstrap_ci(m, vals, frames, n_resamples=n_bootstrap, seed=seed, how=how)
        metrics[m] = {"value": float(head[m]), "unit": info.unit(units), "ci95": [ci[0], ci[1]],
                      "aggregation": how, "higher_is_better": info.higher_is_better, "version": info.version,
                      "display_scale": _display(card, m, show) if show is not None else 1.0}
    if opts.axes:
        ax = axes or {}
        metrics.update(axes_entries(opts.axes, seqs, ax.get("subjects") or [], ctx.fps, units, ax.get("mouth"),
                                    ax.get("missing") or {}, n_bootstrap, seed))
    compute = "float32" if "float32" in dtypes or "float16" in dtypes else "float64"
    synthetic = card.get("synthetic")
    region_entry: dict[str, Any] = {"set": regions["set"], "n_lips": int(ctx.lips.size),
                                    "n_upper": int(ctx.upper.size), "digest": regions_digest(ctx.lips, ctx.upper)}
    if regions.get("files"):
        region_entry["files"] = regions["files"]
    if regions.get("sources"):  # the set's own files (read by prepare) and their sha256
        region_entry["sources"] = regions["sources"]
    if (axes or {}).get("mouth"):
        region_entry["mouth_pair"] = axes["mouth"]
    protocol: dict[str, Any] = {"name": proto.name, "version": proto.version, "length_policy": policy,
                                "description": proto.description, "compute_dtype": compute,
                                "conditions": CONDITIONS_RULE,
                                "bootstrap": {"n": int(n_bootstrap), "seed": int(seed), "level": 0.95,
                                              "method": BOOTSTRAP_METHOD}}
    if opts.metrics is not None or opts.axes:
        protocol["metrics_selected"] = [*proto.metrics, *opts.axes]
    if proto.scaled:
        protocol["scale"] = float(opts.scale)
    if proto.max_seconds is not None:
        protocol["max_seconds"] = float(proto.max_seconds)
    if opts.coord_range is not None:
        protocol["normalise"] = {"min": list(opts.coord_range[0]), "max": list(opts.coord_range[1])}
    predictions: dict[str, Any] = {"fingerprint": fingerprint(digests), "n_files": preds.n_files,
                                   "kind": sorted({pf.kind for pfs in preds.files.values() for pf in pfs}),
                                   "ignored_files": len(preds.ignored)}
    if preds.prefix:
        predictions["prefix"] = preds.prefix
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "a2fbench_version": __version__,
        "dataset": {"id": ctx.ds.id, "name": card.get("name", ctx.ds.spec.name), "version": int(card["version"]),
                    "split": split, "fingerprint": card["fingerprint"], "n_sequences": len(per_seq),
                    "n_frames": int(sum(frames)), "synthetic": bool(synthetic),
                    **({"synthetic_source": synthetic} if synthetic else {}),
                    "space": card.get("space"), "vertex_units": vunits, "n_vertices": ctx.V, "regions": region_entry},
        "protocol": protocol,
        "metrics": metrics,
        "per_sequence": per_seq,
        "predictions": predictions,
    }
    if len(runs) > 1:
        doc["samples"] = {"n": len(runs), "indices": list(preds.samples), "rule": SAMPLES_RULE,
                          "metrics": {m: _spread([r[m] for r in runs]) for m in proto.metrics}}
    doc["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc

