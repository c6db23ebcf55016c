"""``unitalker plot RUN``: the training curves of a run as one PNG.

Left: the training loss per step (thin) and its mean per epoch (thick), log scale, with the decoder warm-up
phase shaded. Right: the validation LVE of each dataset divided by the LVE of its static template (below 1: the
model beats standing still), per epoch. Both read the run's own logs (``RUN/log.csv``, ``RUN/val.csv``), so
a run that is still training can be plotted at any time.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted, on a training machine
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from a2fbench.errors import ConfigError  # noqa: E402
from a2fbench.util.fsutil import atomic_path  # noqa: E402


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_curves(run: str | os.PathLike) -> dict:
    """{"steps": [(step, loss, epoch, phase)], "epochs": {epoch: mean loss}, "val": {dataset: [(epoch, ratio,
    LVE)]}} from a run folder; one clear line when it holds no training log."""
    run = Path(run)
    log_path = run / "log.csv"
    if not log_path.is_file():
        raise ConfigError(f"{run}: expected a training run folder with log.csv, found "
                          f"{'no folder' if not run.is_dir() else 'no log.csv'}; pass the --out folder of "
                          "`unitalker train` or `unitalker quickstart`'s run/ folder")
    steps, by_epoch = [], defaultdict(list)
    for r in _rows(log_path):
        try:
            s, loss, ep, ph = int(r["step"]), float(r["loss"]), int(r["epoch"]), int(r["phase"])
        except (KeyError, ValueError):
            continue
        steps.append((s, loss, ep, ph))
        by_epoch[ep].append(loss)
    val: dict[str, list] = defaultdict(list)
    if (run / "val.csv").is_file():
        for r in _rows(run / "val.csv"):
            try:
                val[r["dataset"]].append((int(r["epoch"]), float(r["ratio"]), float(r["LVE"])))
            except (KeyError, ValueError):
                continue
    if not steps:
        raise ConfigError(f"{log_path}: expected logged training steps, found none; train for at least one step")
    return {"steps": steps, "epochs": {e: sum(v) / len(v) for e, v in sorted(by_epoch.items())}, "val": dict(val)}


def val_series(curves: dict) -> dict[str, tuple[list[int], list[float]]]:
    """{dataset: (epochs, LVE / static LVE)} as drawn. The trainer validates after an epoch and writes the number
    of epochs done (1 after the first epoch, as its ``epoch 1/60`` log line says) into val.csv, while log.csv
    numbers the epoch being trained from 0: the x value is val.csv's number as it stands (adding 1 drew every
    point one epoch late)."""
    return {d: ([p[0] for p in pts], [p[1] for p in pts]) for d, pts in sorted(curves["val"].items())}


def plot_run(run: str | os.PathLike, out: Optional[str | os.PathLike] = None, dpi: int = 110) -> Path:
    """Write the training curves of ``run`` to ``out`` (default ``RUN/training.png``); returns the path."""
    run = Path(run)
    c = read_curves(run)
    out = Path(out) if out is not None else run / "training.png"
    if not out.parent.is_dir():
        raise ConfigError(f"expected an existing folder for {out}, found none; create {out.parent} first")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    s = [r[0] for r in c["steps"]]
    ax.plot(s, [r[1] for r in c["steps"]], lw=0.6, alpha=0.45, color="C0", label="loss per step")
    last = {}
    for st, _, ep, _ in c["steps"]:
        last[ep] = st
    eps = list(c["epochs"])
    ax.plot([last[e] for e in eps], [c["epochs"][e] for e in eps], "-o", ms=3, color="C0", label="mean per epoch")
    warm = [st for st, _, _, ph in c["steps"] if ph == 0]
    if warm:
        ax.axvspan(min(warm), max(warm), color="0.9", label="decoder warm-up (encoder frozen)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (Eq. 2, scaled units)")
    ax.legend(fontsize=8)
    for i, (d, (xs, ys)) in enumerate(val_series(c).items()):
        bx.plot(xs, ys, "-o", ms=3, color=f"C{i % 10}", label=d)
    bx.axhline(1.0, color="0.5", lw=0.8, ls="--")
    bx.set_xlabel("epochs trained (validated after each)")
    bx.set_ylabel("validation LVE / static-template LVE")
    bx.set_title("below 1: better than a still face", fontsize=9)
    if c["val"]:
        bx.legend(fontsize=8, ncol=2)
    else:
        bx.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=bx.transAxes)
    fig.suptitle(f"{run.name}: {len(s)} steps, {len(eps)} epochs", fontsize=10)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out
