"""Scoring commands: evaluate, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from ..scoring.protocols import LENGTH_POLICIES, PROTOCOLS
from ..util import paths
from ..util.fsutil import write_json
from ..util.guard import FORCE_HELP, check_output, show
from . import DATA_OPT, SEED

# scoring.compare, .evaluate and .options are imported inside the commands that use them, not here: they load
# numpy, scipy and h5py, and `a2fbench --help` imports every command module. Measured (python -X importtime,
# median of 5): this module imports in 0.008 s instead of 0.79 s.


def default_out(pred: Path, protocol: str, length_policy: Optional[str] = None) -> Path:
    """``<PRED>.results.json`` beside the predictions folder (``<PRED>.<protocol>.results.json`` off-default; a
    length policy other than the protocol's own adds ``.<policy>``)."""
    pred = Path(pred)
    name = pred.resolve().name or "predictions"
    suffix = "" if protocol == "a2f" else f".{protocol}"
    if length_policy and length_policy != PROTOCOLS[protocol].length_policy:
        suffix += f".{length_policy}"
    return pred.resolve().parent / f"{name}{suffix}.results.json"


def _fmt(v: Optional[float], scale: float) -> str:
    return "-" if v is None else f"{v / scale:.4f}"


def results_table(doc: dict) -> str:
    """The metrics of a results dict in the dataset card's display units."""
    ds, pr = doc["dataset"], doc["protocol"]
    lines = [f"{ds['id']} {ds['name']} | split {ds['split']} ({ds['n_sequences']} sequences, {ds['n_frames']} frames) | "
             f"protocol {pr['name']} v{pr['version']} ({pr.get('length_policy')}) | regions "
             f"{ds.get('regions', {}).get('set')}" + (" + files" if ds.get("regions", {}).get("files") else "")
             + (" | SYNTHETIC stand-in" if ds.get("synthetic") else "")]
    samples = doc.get("samples")
    if samples:
        lines.append(f"{samples['n']} samples (runs), each scored whole; value = mean over samples, spread = std")
    lines.append(f"{'metric':<8} {'value':>10} {'95% CI':>22}  unit")
    for name, m in doc["metrics"].items():
        s = float(m.get("display_scale") or 1.0)
        ci = m.get("ci95")
        ci_s = f"[{_fmt(ci[0], s)}, {_fmt(ci[1], s)}]" if ci else ""
        unit = f"x{s:.0e} {m['unit']}" if s != 1.0 else m["unit"]
        spread = (samples["metrics"].get(name) or {}).get("std") if samples else None
        extra = f"  (spread {_fmt(spread, s)})" if spread is not None else ""
        lines.append(f"{name:<8} {_fmt(m['value'], s):>10} {ci_s:>22}  {unit}{extra}")
        if m.get("value") is None and m.get("reason"):
            lines.append(f"{'':<8} not computed: {show(str(m['reason']))}")
    return "\n".join(lines)


@click.command("evaluate")
@click.argument("pred", type=click.Path(path_type=Path))
@click.option("--dataset", required=True, help="Dataset id or alias (D0..D7, vocaset, ...).")
@DATA_OPT
@click.option("--split", default=None, help="Split to score (BIWI Test-B: test_b). Default: the manifest's evaluation split, test.")
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default="a2f",
              show_default=True, help="Metric protocol (docs/metrics.md).")
@click.option("--length-policy", type=click.Choice(list(LENGTH_POLICIES)), default=None,
              help="truncate_pred_only: predictions cut to the ground truth, never shorter (CodeTalker); "
                   "truncate_both: both cut to the shorter (FaceDiffuser). Default: the protocol's own.")
@click.option("--regions", default=None, help="Region set (lip and upper-face lists). Default: the manifest's.")
@click.option("--region", "region_files", multiple=True, metavar="lips=FILE",
              help="Replace the lip (or upper-face) list by an index file (.npy or .txt), e.g. UniTalker's "
                   "04_BIWI_mouth_idx.npy; recorded by digest. Repeatable.")
@click.option("--prefix", default=None, metavar="NAME",
              help="Prediction files start with NAME_ (FaceDiffuser's --model: NAME_<seq>_condition_<subj>.npy).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results JSON. Default: <PRED>.results.json beside the folder "
                   "(<PRED>.<protocol>.results.json for other protocols).")
@click.option("--ignore-extra", is_flag=True, help="Ignore (and list) .npy files that are not in the split.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(100, 1_000_000), default=10000, show_default=True,
              help="Bootstrap resamples for the 95% CIs.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Processes scoring blocks of sequences. Default: automatic (2 for splits of 128 MiB or more). "
                   "Results do not depend on it.")
@click.option("--method", default=None,
              help="What made the predictions, recorded in the results (default: the method named by the folder's "
                   "provenance file, which `unitalker predict` writes).")
@click.option("--metrics", "metric_names", default=None, metavar="NAMES",
              help="Comma list of what to compute (default: the protocol's set): the protocol's metrics (lve, mve, "
                   "ufve, fdd, fdd-abs, lvd) and the axes mtm, lip-lag, silence-opening, slcc, diversity "
                   "(docs/metrics.md).")
@click.option("--mouth-pair", default=None, metavar="UPPER,LOWER",
              help="Vertex indices of the upper and lower lip whose distance is the mouth opening (mtm, lip-lag, "
                   "silence-opening). Default: the manifest's regions.mouth_pair.")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of the table.")
@click.option("--no-progress", is_flag=True, help="No progress bar (bars show on a terminal only anyway).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def evaluate_cmd(pred: Path, dataset: str, data: Optional[Path], split: Optional[str], protocol: str,
                 length_policy: Optional[str], regions: Optional[str], region_files: tuple[str, ...],
                 prefix: Optional[str], out: Optional[Path], ignore_extra: bool, n_bootstrap: int, seed: int,
                 workers: Optional[int], method: Optional[str], metric_names: Optional[str],
                 mouth_pair: Optional[str], as_json: bool, no_progress: bool, force: bool) -> None:
    """Score a predictions folder (one <seq_id>.npy per sequence) and write a results JSON.

    \b
    Examples:
      a2fbench evaluate runs/pred/D1 --dataset D1 --data data --method MyTalker
      a2fbench evaluate ct_pred --dataset biwi --protocol codetalker --out ct.json
      a2fbench evaluate fd_result --dataset biwi --protocol facediffuser --prefix face_diffuser
      a2fbench evaluate ut_pred --dataset biwi --protocol unitalker --region lips=04_BIWI_mouth_idx.npy
      a2fbench evaluate pred_voca --dataset vocaset --regions flame --length-policy truncate_both
      a2fbench evaluate runs/pred/D1 --dataset D1 --metrics lve,fdd,mtm,lip-lag,silence-opening,slcc
    """
    from ..scoring.evaluate import evaluate
    from ..scoring.options import parse_region_args

    region_args = parse_region_args(list(region_files))
    pair = _pair(mouth_pair)
    target = check_output(out or default_out(pred, protocol, length_policy),  # before the work, not after it
                          [pred, data or paths.default_data(), *region_args.values()], force=force)
    doc = evaluate(dataset, pred, data or paths.default_data(), split=split, protocol=protocol, regions=regions,
                   length_policy=length_policy, region_files=region_args, prefix=prefix,
                   ignore_extra=ignore_extra, n_bootstrap=n_bootstrap, seed=seed, workers=workers, method=method,
                   progress=not no_progress, metrics=metric_names, mouth_pair=pair)
    write_json(target, doc)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(results_table(doc))
    click.echo(f"results written to {show(target)}", err=True)


def _pair(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``"3531,3504"`` -> (3531, 3504); anything else a one-line usage error."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise click.BadParameter(f"expected UPPER,LOWER (two vertex indices), found {text!r}; e.g. 3531,3504",
                                 param_hint="--mouth-pair")
    return int(parts[0]), int(parts[1])


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--resamples", "n_resamples", type=click.IntRange(100, 1_000_000), default=10000, show_default=True,
              help="Bootstrap resamples and random permutations.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare_cmd(a: Path, b: Path, n_resamples: int, seed: int, as_json: bool) -> None:
    """Paired difference B - A per metric on the shared sequences, with a 95% CI and a p-value.

    \b
    CI: paired bootstrap over sequences; p: paired permutation test (docs/metrics.md).
    Example:
      a2fbench compare baseline.results.json mine.results.json
    """
    from ..scoring.compare import compare_files

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
    click.echo("lower is better for LVE, MVE, UFVE, FDD_abs, LVD; FDD is signed (closer to 0 is better)")
    for w in res.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
