"""What each difference between our training defaults and the paper's recipe does, measured on the tiny stand-ins
(CPU): one short run per setting, the same seed, data and epochs; the final validation LVE per dataset (its ratio
to the static template: below 1 beats standing still) and the wall time. Rows of docs/unitalker.md's table::

    python benchmarks/bench_paper_recipe.py --work /tmp/a2f-bench-recipe [--epochs 8]

Settings (each changes one key of the ``tiny`` config; CPU runs cannot show bf16 or GPU batching speed):
``ours`` (batch 8, length-bucketed), ``batch1`` (train.batch_size=1, the paper's), ``ids_all``
(model.identities=all: untrained rows for unseen val subjects instead of the pivot), ``flame_p0``
(train.flame_param_weight=0, the paper's FLAME loss without a parameter term).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SETTINGS = {"ours": [], "batch1": ["train.batch_size=1"], "ids_all": ["model.identities=all"],
            "flame_p0": ["train.flame_param_weight=0.0"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/a2f-bench-recipe"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--datasets", default="D1,D3,D5")
    ap.add_argument("--only", default=",".join(SETTINGS))
    a = ap.parse_args()
    sys.path.insert(0, str(HERE.parent.parent))
    import torch

    from a2fbench.prepare import prepare_dataset
    from a2fbench.registry import get_spec
    from a2fbench.sources.synth import synth_dataset
    from a2fbench.spaces.pca import fit_dataset
    from unitalker.model.config import load_config
    from unitalker.train.loop import train

    torch.set_num_threads(1)
    ds = a.datasets.split(",")
    data = a.work / "data"
    if not data.is_dir():
        for d in ds:
            synth_dataset(get_spec(d), a.work / "raw", size="tiny", seed=0, progress=False)
            prepare_dataset(get_spec(d), a.work / "raw", data, progress=False)
            if d in ("D0", "D1", "D2"):
                fit_dataset(d, data, components=16, progress=False)
    out = {}
    for name in a.only.split(","):
        run = a.work / name
        shutil.rmtree(run, ignore_errors=True)
        cfg = load_config("tiny", ["train.threads=1", f"train.epochs={a.epochs}", *SETTINGS[name]])
        t = time.perf_counter()
        train(data, ds, run, cfg, progress=False)
        secs = time.perf_counter() - t
        with open(run / "val.csv") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) == a.epochs]
        out[name] = {"seconds": round(secs, 1), **{r["dataset"]: round(float(r["ratio"]), 3) for r in rows}}
        print(name, out[name], file=sys.stderr)
    print(json.dumps({"epochs": a.epochs, "datasets": ds, "loadavg": os.getloadavg(), "runs": out}, indent=1))


if __name__ == "__main__":
    main()
