"""UniTalker training throughput: our setting beside the reference setting, same code, same data, one run.

* ours: batches of ``--batch`` clips with length bucketing and padding masks, SDPA attention, bf16 autocast on
  CUDA;
* reference: the paper's setting, batch 1, fp32, transformers' eager attention (the same code otherwise).

Both train the same model (``--config``, random init; the warm-up epoch is skipped so the encoder trains) on
the same prepared stand-ins for a fixed number of optimizer steps; throughput is audio seconds consumed per
wall second over the steps after ``--skip`` warm-up steps (data loading included). The projected wall time of
100 epochs of A2F-Bench uses the full-size stand-ins' training audio x the paper's duplicate list (from the
manifests' synth plans), divided by the measured throughput.

    flock /tmp/a2f-heavy.lock python benchmarks/bench_unitalker_train.py --config tiny --data DATA
    python benchmarks/bench_unitalker_train.py --config unitalker-b --device cuda --steps 60 --batch 16
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch


def full_epoch_audio_seconds() -> float:
    """Σ over D0..D7 of full-size training seconds x the paper's per-dataset repetition (data.duplicate)."""
    from a2fbench.registry import all_specs
    from a2fbench.sources.synth import plan
    from unitalker.data import PAPER_DUPLICATE

    total = 0.0
    for spec in all_specs():
        secs = sum(p.seconds for p in plan(spec, "full") if p.split == "train")
        if spec.splits.rule == "subject_hash":  # split assigned by prepare: count the training share
            secs *= float(spec.splits.fractions.get("train", 0.8))
        total += secs * int(PAPER_DUPLICATE.get(spec.id, 1))
    return total


def run_setting(data: Path, datasets: list[str], config: str, overrides: list[str], steps: int, skip: int,
                work: Path) -> dict:
    from unitalker.config import load_config
    from unitalker.train import Trainer

    cfg = load_config(config, ["model.encoder.pretrained=false", "train.warmup_epochs=0", "train.epochs=100000",
                               "train.val_every_epochs=100000", *overrides])
    out = work / f"run-{len(list(work.iterdir()))}"
    t = Trainer(data, datasets, out, cfg, progress=False, max_steps=steps)
    t.fit()
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))[skip:]
    audio = sum(float(r["audio_seconds"]) for r in rows)
    wall = sum(float(r["seconds"]) for r in rows)
    for s in t.sources:
        s.ds.close()
    return {"overrides": overrides, "steps_timed": len(rows), "clips": sum(int(r["clips"]) for r in rows),
            "audio_seconds": round(audio, 2), "wall_seconds": round(wall, 3), "audio_s_per_s": audio / wall,
            "device": str(t.device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="prepared stand-ins (default: synthesize small ones)")
    ap.add_argument("--datasets", default="D0..D7")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps of our setting")
    ap.add_argument("--ref-steps", type=int, default=None, help="steps of the reference (default: steps x batch / 4)")
    ap.add_argument("--skip", type=int, default=3, help="untimed first steps")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from a2fbench import resolve
    from unitalker.runtime import device_name, select_device

    dev = select_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_ut_"))
    try:
        data = a.data
        if data is None:
            from a2fbench.prepare import prepare_dataset
            from a2fbench.sources.synth import synth_dataset
            from a2fbench.spaces.pca import fit_dataset

            data = work / "data"
            for spec in resolve("D0..D7"):
                synth_dataset(spec, work / "raw", size="small", progress=False)
                prepare_dataset(spec, work / "raw", data, progress=False)
            for d in ("D0", "D1", "D2"):
                fit_dataset(d, data, components=16, progress=False)
        datasets = [s.id for s in resolve(a.datasets)]
        (work / "runs").mkdir()
        common = [f"train.device={a.device}"]
        ours = run_setting(data, datasets, a.config, common + [f"train.batch_size={a.batch}", "train.amp=bf16",
                                                                "model.encoder.attention=sdpa"],
                           a.steps, a.skip, work / "runs")
        ref_steps = a.ref_steps or max(a.skip + 10, a.steps * a.batch // 4)
        ref = run_setting(data, datasets, a.config, common + ["train.batch_size=1", "train.amp=none",
                                                               "model.encoder.attention=eager"],
                          ref_steps, a.skip, work / "runs")
        epoch = full_epoch_audio_seconds()
        rep = {"machine": device_name(dev), "config": a.config, "datasets": datasets, "data": str(a.data or "small"),
               "ours": ours, "reference": ref, "speedup": ours["audio_s_per_s"] / ref["audio_s_per_s"],
               "full_epoch_audio_hours": epoch / 3600,
               "projected_100_epochs_hours": {"ours": 100 * epoch / ours["audio_s_per_s"] / 3600,
                                              "reference": 100 * epoch / ref["audio_s_per_s"] / 3600},
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(rep, indent=1))
        if a.json:
            a.json.write_text(json.dumps(rep, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
