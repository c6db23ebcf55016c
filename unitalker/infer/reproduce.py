"""``unitalker reproduce``: does this checkpoint, on this data, give the paper's numbers?

For every dataset asked for that is prepared and has a head in the checkpoint: predictions in paper mode
(:func:`~.predict.predict`, ``protocol="unitalker"``), scored by ``a2fbench evaluate --protocol unitalker``, the
LVE beside the paper's (``paper_lve.yaml``: Table 6's row for the checkpoint's audio encoder), their ratio, a
verdict, and every reason the number can differ, read from the predictions record and the results (identity
fallback, missing mouth list, split, precision, stand-in data, units the paper leaves open).

Verdict: ``within`` when the paper's value lies inside the 95% bootstrap interval of our mean over the test
sequences (the spread the test set itself gives the measurement), else ``outside`` with the ratio. On stand-in
data (``a2fbench synth``) the paper column is not comparable, and the verdict says so.

Takes: a checkpoint, a prepared store. Gives: ``OUT/<id>/predictions/``, ``OUT/<id>/results.json`` per dataset
and ``OUT/report.md``; returns the rows.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from a2fbench.errors import ConfigError
from a2fbench.scoring.evaluate import evaluate
from a2fbench.scoring.protocols import UNITALKER, UNITALKER_VERSION
from a2fbench.store import list_prepared
from a2fbench.util.fsutil import atomic_path, write_json
from a2fbench.util.guard import check_apart

from ..model.load import load_model
from ..model.runtime import select_device
from .predict import head_for, predict

log = logging.getLogger(__name__)
PAPER_FILE = Path(__file__).with_name("paper_lve.yaml")


def paper_table() -> dict:
    """The paper's LVE per encoder and dataset, and the scale each column is printed in."""
    return yaml.safe_load(PAPER_FILE.read_text())


def reasons(doc: dict, record: dict, encoder: str, table: dict) -> list[str]:
    """Every reason the measured LVE can differ from the paper's, from the results and the predictions record."""
    out = []
    ds, proto = doc["dataset"], doc["protocol"]
    if ds.get("synthetic"):
        out.append("stand-in data (a2fbench synth): the paper column is not comparable")
    if encoder not in table["models"]:
        out.append(f"the checkpoint's encoder {encoder} is not one the paper reports")
    if proto.get("version") != UNITALKER_VERSION or proto.get("fallback"):
        out.append(f"no UniTalker mouth list: scored on region set {ds['regions']['set']!r} (protocol v"
                   f"{proto.get('version')})")
    seqs = record.get("sequences", {})
    pivot = sorted(sid for sid, r in seqs.items() if r.get("identity_from") in ("pivot_unseen", "pivot"))
    if pivot:
        out.append(f"identity fallback: {len(pivot)} of {len(seqs)} sequences ran on the pivot row, not their "
                   "subject's (the official test loop uses the subject's row)")
    if record.get("precision") != "fp32":
        out.append(f"precision {record.get('precision')} (the official loop runs fp32)")
    if ds["id"] == "D2":
        out.append("D2's split: the official release's D2 test membership is UNVERIFIED (ours: sentences 46-50 of "
                   "all 13 subjects)")
    if ds.get("split") != "test":
        out.append(f"split {ds.get('split')!r}, not test")
    if ds["id"] in ("D0", "D2"):
        out.append(f"the paper does not say whether its {ds['id']} values are in UniTalker's scaled space (x "
                   f"{proto.get('scale'):g} per coordinate, as measured here) or converted back")
    if ds["id"] in ("D3", "D4", "D5"):
        out.append("vertices from parameters: the blendshape/FLAME bases are stand-ins unless RAW holds the "
                   "official resources")
    if proto.get("skipped"):
        out.append(f"{len(proto['skipped'])} clips under 0.5 s left out, as the official loader does")
    return out


def row_for(doc: dict, record: dict, encoder: str, table: dict) -> dict:
    """One dataset's line of the report."""
    d = doc["dataset"]["id"]
    m = doc["metrics"]["LVE"]
    model = table["models"].get(encoder)
    paper = None if model is None or d not in model["LVE"] else float(model["LVE"][d]) * table["printed_scale"][d]
    lo, hi = m["ci95"]
    why = reasons(doc, record, encoder, table)
    if paper is None:
        verdict = "no paper value for this encoder"
    elif doc["dataset"].get("synthetic"):
        verdict = "not comparable (stand-in data)"
    elif lo <= paper <= hi:
        verdict = "within the 95% CI"
    else:
        verdict = f"outside the 95% CI (x{m['value'] / paper:.3g})"
    return {"dataset": d, "LVE": m["value"], "ci95": [lo, hi], "unit": m["unit"], "paper": paper,
            "paper_model": model["name"] if model else None, "ratio": (m["value"] / paper) if paper else None,
            "verdict": verdict, "reasons": why, "n_sequences": doc["dataset"]["n_sequences"],
            "skipped": [x["id"] for x in doc["protocol"].get("skipped", [])]}


def report_md(rows: list[dict], checkpoint: str, encoder: str, data: str) -> str:
    """The report page (Markdown)."""
    lines = ["# unitalker reproduce", "", f"Checkpoint `{checkpoint}` (encoder {encoder}), data `{data}`.",
             "Paper mode predictions scored with `a2fbench evaluate --protocol unitalker`; paper values from the "
             "UniTalker paper, Table 6. Verdict: the paper's value inside our 95% bootstrap interval over the test "
             "sequences, or not.", "",
             "| dataset | LVE (ours) | 95% CI | paper | ratio | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.4g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3g}"
        lines.append(f"| {r['dataset']} | {r['LVE']:.4g} {r['unit']} | [{r['ci95'][0]:.4g}, {r['ci95'][1]:.4g}] | "
                     f"{paper} | {ratio} | {r['verdict']} |")
    lines.append("")
    for r in rows:
        lines.append(f"## {r['dataset']}: why the numbers can differ")
        lines += [f"- {w}" for w in r["reasons"]] or ["- nothing recorded"]
        lines.append("")
    return "\n".join(lines)


def reproduce(checkpoint: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
              datasets: Optional[list[str]] = None, device: str = "auto", progress: bool = True,
              n_bootstrap: int = 1000) -> list[dict]:
    """Run paper mode on every dataset asked for (default: every prepared one with a head), write the results
    and the report under ``out`` (a new folder, written whole or not at all); return the report's rows."""
    out = Path(out)
    check_apart(out, [checkpoint, data])
    if out.exists():
        raise ConfigError(f"--out {out}: expected a new folder, found an existing "
                          f"{'folder' if out.is_dir() else 'file'}; choose another path")
    loaded = load_model(checkpoint, select_device(device))
    encoder = loaded.cfg["model"]["encoder"]["name"]
    heads = [d["id"] for d in loaded.datasets]
    prepared = {d for d, ok in list_prepared(data).items() if ok}
    asked = datasets or [d for d in heads if d in prepared]
    if not asked:
        raise ConfigError(f"expected a prepared dataset with a head in the checkpoint under {data}, found none "
                          f"(heads: {', '.join(heads)}); run `a2fbench prepare` first")
    for d in asked:
        head_for(loaded, d)  # one line for a dataset without a head, before anything runs
    del loaded
    table = paper_table()
    rows = []
    with atomic_path(out, is_dir=True) as tmp:
        for d in asked:
            pred = tmp / d / "predictions"
            pred.parent.mkdir(parents=True)
            predict(checkpoint, data, d, pred, identity="gt", device=device, progress=progress, protocol=UNITALKER)
            doc = evaluate(d, pred, data, protocol=UNITALKER, n_bootstrap=n_bootstrap, progress=progress)
            write_json(tmp / d / "results.json", doc)
            record: dict[str, Any] = doc["predictions"].get("source") or {}
            rows.append(row_for(doc, record, encoder, table))
        (tmp / "report.md").write_text(report_md(rows, str(checkpoint), encoder, str(data)))
        write_json(tmp / "report.json", {"checkpoint": str(checkpoint), "encoder": encoder, "data": str(data),
                                         "paper": table["source"], "rows": rows})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The terminal table."""
    out = [f"{'dataset':8} {'LVE (ours)':>12} {'paper':>12} {'ratio':>7}  verdict"]
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.4e}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3g}"
        out.append(f"{r['dataset']:8} {r['LVE']:12.4e} {paper:>12} {ratio:>7}  {r['verdict']}")
        out += [f"{'':8} - {w}" for w in r["reasons"]]
    return "\n".join(out)
