"""UniTalker training throughput on realistic clip lengths: our setting beside the reference setting, one run.

* ours: batches of ``--batch`` clips with length bucketing and padding masks, SDPA attention, bf16 autocast,
  the frozen CNN's features cached once, static shapes and fused Adam on CUDA, ``--workers`` loader workers;
* reference: the paper's setting, batch 1, fp32, transformers' eager attention, no feature cache, no static
  shapes, no workers (the same code otherwise).

Clip lengths follow the full-size stand-ins' training set: every training clip of D0..D7 at full size (the
synth plans; D3's split assigned as prepare does), repeated by the paper's duplicate list, cut at 20 s. The
benchmark draws ``--clips`` of them; each is a clip of the prepared (small) stand-ins of the same dataset, its
audio and targets tiled to the drawn length, so the heads, spaces and loader are the real ones.

Both settings train the same model (``--config``, random init, encoder unfrozen: the warm-up epoch is skipped)
for ``--epochs`` passes over their clips; the first pass is not timed (cuDNN tunes each new shape, caches
fill). Throughput is audio seconds per wall second over the timed steps, data loading included. Anatomy, on
steps after the timed ones: data wait per step (time blocked on the loader), operations dispatched per step
(a proxy for kernel launches; ``benchmarks/anatomy.py``), host reads per step; on CUDA also kernels launched,
GPU busy fraction (torch.profiler) and syncs per step. Projection: 100 epochs of A2F-Bench = 100 x the
full-size training audio x duplicates / the measured throughput.

    flock /tmp/a2f-heavy.lock python benchmarks/bench_unitalker_train.py --config tiny --device cpu --workers 0,2
    python benchmarks/bench_unitalker_train.py --configs unitalker-b,unitalker-l --device cuda --json OUT.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from a2fbench.store import UNITALKER_MAX_SECONDS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anatomy import StepInstruments  # noqa: E402  (the benchmark's own helper, beside it)

DUPLICATE = {"D0": 10, "D1": 5, "D2": 4}


def full_size_training_clips(max_seconds: float = UNITALKER_MAX_SECONDS) -> list[tuple[str, float]]:
    """(dataset, seconds) of every full-size training clip, repeated by the paper's duplicate list, cut."""
    from a2fbench.registry import all_specs, assign_splits
    from a2fbench.sources.synth.plan import plan

    out = []
    for spec in all_specs():
        ps = plan(spec, "full")
        if spec.splits.rule == "subject_hash":
            got, _, _ = assign_splits(spec, ps)
            train = set(got.get("train", []))
            ps = [p for p in ps if p.id in train]
        else:
            ps = [p for p in ps if p.split == "train"]
        out += [(spec.id, min(p.seconds, max_seconds)) for p in ps for _ in range(DUPLICATE.get(spec.id, 1))]
    return out


def realistic_clips(base, n: int, seed: int):
    """``n`` clips of ``base`` (a ClipSet) tiled to lengths drawn from :func:`full_size_training_clips`."""
    from unitalker.train.data import ClipSet

    class Tiled(ClipSet):
        def _targets(self, i: int) -> dict:
            if i not in self._cache:
                j = self.base_of[i]
                t = base._targets(j)
                idx = torch.arange(self.frames[i]) % base.frames[j]
                self._cache[i] = {k: (v if k == "template" else v[idx]) for k, v in t.items()}
            return self._cache[i]

    pool = full_size_training_clips(base.max_s)
    rng = np.random.default_rng(seed)
    by_ds: dict[str, list[int]] = {}
    for j, (si, _) in enumerate(base.items):
        by_ds.setdefault(base.sources[si].spec.id, []).append(j)
    pool = [(d, s) for d, s in pool if d in by_ds]
    out = Tiled.__new__(Tiled)
    out.__dict__.update(base.__dict__)
    out._cache, out.items, out.frames, out.base_of = {}, [], [], []
    for k, p in enumerate(rng.choice(len(pool), size=n, replace=True)):
        d, secs = pool[p]
        j = by_ds[d][k % len(by_ds[d])]
        si = base.items[j][0]
        out.items.append(base.items[j])
        out.frames.append(max(1, int(round(secs * base.sources[si].fps))))
        out.base_of.append(j)
    return out


def run_setting(data: Path, datasets: list[str], config: str, overrides: list[str], clips: int, epochs: int,
                seed: int, work: Path, instruments: bool) -> dict:
    from unitalker.train.batches import BucketBatchSampler
    from unitalker.model.config import load_config
    from unitalker.train.loop import Trainer

    cfg = load_config(config, ["model.encoder.pretrained=false", "train.warmup_epochs=0", "train.epochs=100000",
                               "train.val_every_epochs=100000", *overrides])
    out = work / f"run-{len(list(work.iterdir()))}"
    t = Trainer(data, datasets, out, cfg, progress=False)
    t.save = lambda *a, **k: None  # no checkpoints between the timed epochs (-L's would write ~4 GB each)
    t.clips = realistic_clips(t.clips, clips, seed)
    tc = cfg["train"]
    t.sampler = BucketBatchSampler(t.clips, tc["batch_size"], tc["bucket_factor"], tc["seed"],
                                   repeats=[1] * len(t.sources))
    per_epoch = len(t.sampler)
    n_anat = 4 if instruments else 0
    inst = StepInstruments(t.device, start=epochs * per_epoch, n=n_anat)
    t.step_context = inst
    t.max_steps = epochs * per_epoch + inst.steps_needed
    t0 = time.perf_counter()
    t.fit()
    total = time.perf_counter() - t0
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    timed = rows[per_epoch: epochs * per_epoch]
    audio = sum(float(r["audio_seconds"]) for r in timed)
    wall = sum(float(r["seconds"]) for r in timed)
    for s in t.sources:
        s.ds.close()
    lens = np.array([t.clips.seconds(i) for i in range(len(t.clips))])
    res = {"overrides": overrides, "steps_timed": len(timed), "clips_per_step": float(np.mean([int(r["clips"]) for r in timed])),
           "mean_clip_seconds": round(float(lens.mean()), 2), "audio_seconds": round(audio, 2),
           "wall_seconds": round(wall, 3), "audio_s_per_s": audio / wall, "ms_per_step": 1e3 * wall / len(timed),
           "data_wait_ms_per_step": 1e3 * float(np.mean([float(r["data_wait"]) for r in timed])),
           "data_wait_fraction": sum(float(r["data_wait"]) for r in timed) / wall,
           "setup_and_untimed_seconds": round(total - wall, 1), "device": str(t.device),
           "feature_cache": None if t.cache is None else {"bytes": t.cache.nbytes, "where": str(t.cache.feats.device)},
           **inst.report()}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="prepared stand-ins (default: synthesize small ones)")
    ap.add_argument("--datasets", default="D0..D7")
    ap.add_argument("--configs", "--config", dest="configs", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--clips", type=int, default=256, help="clips of our setting (an epoch)")
    ap.add_argument("--ref-clips", type=int, default=48, help="clips of the reference setting (batch 1)")
    ap.add_argument("--epochs", type=int, default=3, help="passes over the clips; the first is not timed")
    ap.add_argument("--workers", default="2", help="loader workers of our setting, comma-separated to compare")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from a2fbench import resolve
    from unitalker.model.runtime import device_name, select_device

    dev = select_device(a.device)
    work = Path(tempfile.mkdtemp(prefix="bench_ut_"))
    load = os.getloadavg()[0]
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
        pool = full_size_training_clips()
        epoch_s = sum(s for _, s in pool)
        common = [f"train.device={a.device}"] + ([f"train.threads={a.threads}"] if a.threads else [])
        report = {"machine": device_name(dev), "datasets": datasets, "data": str(a.data or "small stand-ins"),
                  "full_size_epoch": {"clips": len(pool), "audio_hours": epoch_s / 3600,
                                      "mean_clip_seconds": epoch_s / len(pool)},
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "load_average_start": load,
                  "configs": {}}
        for config in a.configs.split(","):
            res: dict = {"ours": {}}
            for w in [int(x) for x in a.workers.split(",")]:
                res["ours"][f"workers={w}"] = run_setting(
                    data, datasets, config, common + [f"train.batch_size={a.batch}", "train.amp=bf16",
                                                      "model.encoder.attention=sdpa", f"data.num_workers={w}"],
                    a.clips, a.epochs, a.seed, work / "runs", True)
                print(config, f"ours workers={w}", json.dumps(res["ours"][f"workers={w}"]), flush=True)
            if not a.no_reference:
                res["reference"] = run_setting(
                    data, datasets, config, common + ["train.batch_size=1", "train.amp=none",
                                                      "model.encoder.attention=eager", "train.cache_features=false",
                                                      "train.static_shapes=false", "data.num_workers=0"],
                    a.ref_clips, 2, a.seed, work / "runs", False)
                print(config, "reference", json.dumps(res["reference"]), flush=True)
            best = max(res["ours"].values(), key=lambda r: r["audio_s_per_s"])
            res["projected_100_epochs_hours"] = {"ours": 100 * epoch_s / best["audio_s_per_s"] / 3600}
            if "reference" in res:
                res["speedup"] = best["audio_s_per_s"] / res["reference"]["audio_s_per_s"]
                res["projected_100_epochs_hours"]["reference"] = 100 * epoch_s / res["reference"]["audio_s_per_s"] / 3600
            report["configs"][config] = res
        report["load_average_end"] = os.getloadavg()[0]
        print(json.dumps(report, indent=1))
        print("\n| config | setting | audio-s/s | ms/step | data wait ms/step | ops/step | kernels/step | GPU busy | "
              "100 epochs |\n|---|---|---|---|---|---|---|---|---|")
        for config, res in report["configs"].items():
            settings = [(f"ours, {k}", v) for k, v in res["ours"].items()] + \
                ([("reference (batch 1, fp32)", res["reference"])] if "reference" in res else [])
            for name, r in settings:
                hours = 100 * epoch_s / r["audio_s_per_s"] / 3600
                print(f"| {config} | {name} | {r['audio_s_per_s']:.1f} | {r['ms_per_step']:.1f} | "
                      f"{r['data_wait_ms_per_step']:.1f} | {r.get('ops_per_step', float('nan')):.0f} | "
                      f"{r.get('kernels_per_step', float('nan')):.0f} | {r.get('gpu_busy_fraction', float('nan')):.2f} | "
                      f"{hours:.1f} h |")
        if a.json:
            a.json.write_text(json.dumps(report, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
