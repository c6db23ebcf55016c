"""Scoring commands: evaluate, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from ..scoring.compare import compare_files
from ..scoring.evaluate import evaluate
from ..util import paths
from ..util.fsutil import write_json


def default_out(pred: Path, protocol: str) -> Path:
    """``<PRED>.results.json`` beside the predictions folder (``<PRED>.<protocol>.results.json`` off-default)."""
    pred = Path(pred)
    name = pred.resolve().name or "predictions"
    suffix = ".results.json" if protocol == "a2f" else f".{protocol}.results.json"
    return pred.resolve().parent / f"{name}{suffix}"


def _fmt(v: Optional[float], scale: float) -> str:
    return "-" if v is None else f"{v / scale:.4f}"


def results_table(doc: dict) -> str:
    """The metrics of a results dict in the dataset card's display units."""
    ds, pr = doc["dataset"], doc["protocol"]
    lines = [f"{ds['id']} {ds['name']} | split {ds['split']} ({ds['n_sequences']} sequences, {ds['n_frames']} frames) | "
             f"protocol {pr['name']} v{pr['version']} | regions {ds.get('regions', {}).get('set')}"
             + (" | SYNTHETIC stand-in" if ds.get("synthetic") else "")]
    lines.append(f"{'metric':<8} {'value':>10} {'95% CI':>22}  unit")
    for name, m in doc["metrics"].items():
        s = float(m.get("display_scale") or 1.0)
        ci = m.get("ci95")
        ci_s = f"[{_fmt(ci[0], s)}, {_fmt(ci[1], s)}]" if ci else ""
        unit = f"x{s:.0e} {m['unit']}" if s != 1.0 else m["unit"]
        lines.append(f"{name:<8} {_fmt(m['value'], s):>10} {ci_s:>22}  {unit}")
    return "\n".join(lines)


@click.command("evaluate")
@click.argument("pred", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, help="Dataset id or alias (D0..D7, vocaset, ...).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Prepared store root (DATA/<id>/). Default: $A2FBENCH_HOME/data.")
@click.option("--split", default=None, help="Split to score (BIWI Test-B: test_b). Default: the manifest's evaluation split, test.")
@click.option("--protocol", type=click.Choice(["a2f", "codetalker", "facediffuser"]), default="a2f",
              show_default=True, help="Metric protocol (docs/metrics.md).")
@click.option("--regions", default=None, help="Region set (lip and upper-face lists). Default: the manifest's.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results JSON. Default: <PRED>.results.json beside the folder "
                   "(<PRED>.<protocol>.results.json for other protocols).")
@click.option("--ignore-extra", is_flag=True, help="Ignore (and list) .npy files that are not in the split.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(100), default=10000, show_default=True,
              help="Bootstrap resamples for the 95% CIs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Processes scoring blocks of sequences. Default: automatic (2 for splits of 128 MiB or more). "
                   "Results do not depend on it.")
@click.option("--method", default=None,
              help="What made the predictions, recorded in the results (default: the method named by the folder's "
                   "provenance file, which `unitalker predict` writes).")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of the table.")
@click.option("--no-progress", is_flag=True, help="No progress bar (bars show on a terminal only anyway).")
def evaluate_cmd(pred: Path, dataset: str, data: Optional[Path], split: Optional[str], protocol: str,
                 regions: Optional[str], out: Optional[Path], ignore_extra: bool, n_bootstrap: int, seed: int,
                 workers: Optional[int], method: Optional[str], as_json: bool, no_progress: bool) -> None:
    """Score a predictions folder (one <seq_id>.npy per sequence) and write a results JSON.

    \b
    Examples:
      a2fbench evaluate runs/pred/D1 --dataset D1 --data data --method MyTalker
      a2fbench evaluate ct_pred --dataset biwi --protocol codetalker --out ct.json
      a2fbench evaluate pred_voca --dataset vocaset --regions flame
    """

    doc = evaluate(dataset, pred, data or paths.default_data(), split=split, protocol=protocol, regions=regions,
                   ignore_extra=ignore_extra, n_bootstrap=n_bootstrap, seed=seed, workers=workers, method=method,
                   progress=not no_progress)
    target = out or default_out(pred, protocol)
    write_json(target, doc)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(results_table(doc))
    click.echo(f"results written to {target}", err=True)


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--resamples", "n_resamples", type=click.IntRange(100), default=10000, show_default=True,
              help="Bootstrap resamples and random permutations.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare_cmd(a: Path, b: Path, n_resamples: int, seed: int, as_json: bool) -> None:
    """Paired difference B - A per metric on the shared sequences, with a 95% CI and a p-value.

    \b
    CI: paired bootstrap over sequences; p: paired permutation test (docs/metrics.md).
    Example:
      a2fbench compare baseline.results.json mine.results.json
    """

    res = compare_files(a, b, n_resamples=n_resamples, seed=seed)
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    click.echo(f"{res['dataset']} split {res['split']} | protocol {res['protocol']} | {res['n_shared']} shared "
               f"sequences (only in A: {res['only_in_a']}, only in B: {res['only_in_b']})")
    click.echo(f"{'metric':<8} {'A':>10} {'B':>10} {'B-A':>10} {'95% CI of B-A':>24} {'rel':>8} {'p':>7}  unit")
    for name, m in res["metrics"].items():
        s = float(m.get("display_scale") or 1.0)
        rel = f"{100 * m['rel_diff']:+.1f}%" if m["rel_diff"] is not None else "-"
        unit = f"x{s:.0e} {m['unit']}" if s != 1.0 else str(m["unit"])
        ci = "-" if m["ci95"] is None else "[" + _fmt(m["ci95"][0], s) + ", " + _fmt(m["ci95"][1], s) + "]"
        click.echo(f"{name:<8} {_fmt(m['a'], s):>10} {_fmt(m['b'], s):>10} {_fmt(m['diff'], s):>10} "
                   f"{ci:>24} {rel:>8} {m['p_value']:>7.4f}  {unit}")
    click.echo("lower is better for LVE, MVE, UFVE, FDD_abs; FDD is signed (closer to 0 is better)")
    for w in res.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
