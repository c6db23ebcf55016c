"""Training and fine-tuning: one readable loop.

Order of events (UniTalker ``train.py`` / ``train_eval_loop.py``, with batching):

1. Open the training datasets, build the identity table (training subjects + pivot) and one head per output
   space (PCA heads for vertex spaces), build the network (or load a checkpoint to fine-tune, or resume a run).
2. Per epoch: phase 0 (epochs < ``train.warmup_epochs``) trains the decoder, identities and heads with the
   encoder frozen; phase 1 trains everything except the CNN feature extractor. The Adam optimiser is
   re-created when the phase changes (its state reset), as the reference does.
3. Before the first step: every clip's targets, and a frozen CNN's features (:mod:`unitalker.train.featcache`),
   computed once; then the loader (workers fork after that, with no store open).
4. Per batch (:mod:`unitalker.train.step`): the step's RNGs are seeded from (seed, epoch, batch, rank), so a resumed
   run draws the same pivot swaps, dropout masks and SpecAugment masks; identities are swapped for the pivot
   with probability ``train.pivot_prob``; bf16 autocast on CUDA; loss of Eq. 2 (:mod:`unitalker.model.loss`); fused
   Adam step; the step's loss reaches the log one step later (no host read inside a step).
5. After each epoch: validation LVE per dataset (native units, pooled over frames; with its static-template
   ratio), a checkpoint, a line in ``RUN/val.csv``. Every step goes to ``RUN/log.csv``.

A killed run resumes from its latest checkpoint when the same command is run again, and ends with the same
weights as an uninterrupted run (tests/test_unitalker_train.py). Under torchrun, ranks take disjoint batches
and DDP averages gradients; rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from a2fbench.errors import ConfigError, StoreError
from a2fbench.util.constants import SAMPLE_RATE
from a2fbench.util.fsutil import atomic_path, read_json, write_json
from a2fbench.util.progress import bar as progress_bar

from ..model import checkpoint as ck
from . import featcache
from .assemble import aux_templates, build_heads, datasets_meta, flatten, run_identities, seed_step
from .batches import BucketBatchSampler, collate, worker_init
from ..model.config import dump, with_defaults
from .data import ClipSet, IdentityTable, open_sources
from .finetune import limit_trainable
from ..model.loss import Eq2Loss, torch_converter
from ..model.model import ModelSpec, UniTalker
from ..model.load import load_for_finetune, load_for_resume, spec_to_meta
from ..model.runtime import barrier, check_ranks_in_sync, set_threads, setup_distributed
from .step import DeviceBatches, StepLog, make_optimizer, train_step
from .validate import Validator

log = logging.getLogger(__name__)

# Keys a resumed run may change (they do not change what is computed).
RESUME_FREE = ("train.epochs", "train.device", "train.threads", "data.num_workers", "train.checkpoint_every_steps",
               "train.keep_checkpoints", "train.cache_features", "train.static_shapes")
LOG_FIELDS = ["epoch", "batch", "step", "phase", "loss", "rec", "pca", "param", "lr", "clips", "audio_seconds",
              "seconds", "data_wait"]


# ------------------------------------------------------------------------------------------ training
class Trainer:
    def __init__(self, data: str | Path, datasets: list[str], out: str | Path, cfg: dict, *,
                 init_from: Optional[str] = None, reinit_decoder: bool = False, progress: bool = True,
                 max_steps: Optional[int] = None):
        self.data, self.out, self.cfg = Path(data), Path(out), cfg
        self.datasets = [str(d) for d in datasets]
        self.progress = progress
        self.max_steps = max_steps  # stop after this many optimizer steps in this process (tests, benchmarks)
        self.step_context: Any = contextlib.nullcontext  # wraps each step (benchmarks count its operations)
        self.dist, self.device = setup_distributed(cfg["train"]["device"])
        resume_tag = self._check_run_dir()
        seed_step(int(cfg["train"]["seed"]), 10**9, 0, 0)  # initial weights: a function of the seed
        self.sources = open_sources(self.data, self.datasets, cfg)
        resume_meta = resume_state = None
        if resume_tag:
            ckpt = self.out / ck.CKPT_DIR / f"{resume_tag}.safetensors"
            resume_state = ck.read_state(ckpt)
            if resume_state is None:
                raise StoreError(f"{ckpt}: expected its .state.pt beside it to resume, found none; use a new --out")
            self.model, resume_meta, spec = load_for_resume(ckpt, cfg)
            self.idt = IdentityTable(spec.identities)
            self.init_from = resume_meta.get("init_from")
            log.info("resuming %s from %s (epoch %d, step %d)", self.out, resume_tag, resume_state["epoch"],
                     resume_state["step"])
        else:
            self.idt = run_identities(self.sources, cfg)

            def make_spec(reuse: dict) -> ModelSpec:
                return ModelSpec(build_heads(self.data, self.sources, cfg, reuse or None), self.idt.n_rows, self.idt.keys)

            self.init_from = None
            if init_from:
                self.model, spec, notes, self.init_from = load_for_finetune(init_from, cfg, make_spec, reinit_decoder)
                for note in notes:
                    log.info("finetune: %s", note)
            else:
                spec = make_spec({})
                self.model = UniTalker(cfg, spec)
        self.spec = spec
        self.model.to(self.device)
        if cfg["train"]["compile"]:
            self.model.encoder.hf.encoder.compile(dynamic=True)
        scales: dict[str, float] = {}
        convs: dict[str, Any] = {}
        for s in self.sources:
            if s.space not in convs:
                scales[s.space] = s.scale
                convs[s.space] = torch_converter(s.space, s.ds.space_arrays())
        dims = {h.space: h.dim for h in spec.heads}
        self.loss_fn = Eq2Loss.from_config(convs, scales, dims, cfg["train"]).to(self.device)
        self.aux = aux_templates(self.sources, self.idt)
        pca = {sp: (h.components.cpu().numpy(), h.mean.cpu().numpy()) for sp, h in self.model.heads.items() if h.is_pca}
        self.clips = ClipSet(self.sources, self.idt, cfg, self.model.encoder.normalize, pca=pca)
        self.sampler = BucketBatchSampler(self.clips, cfg["train"]["batch_size"], cfg["train"]["bucket_factor"],
                                          cfg["train"]["seed"], self.dist.rank, self.dist.world,
                                          repeats=[s.duplicate for s in self.sources])
        self.validator = Validator(self.data, self.datasets, cfg, self.idt, self.model.encoder.normalize) \
            if self.dist.main else None
        self.state = resume_state or {"epoch": 0, "batch": 0, "step": 0, "phase": -1, "best": None, "best_tag": None}
        if self.device.type == "cpu":
            # auto (0) picks the free cores (runtime.auto_threads); a resumed run keeps its first count, since
            # torch's parallel reductions can round differently with another number of threads
            want = int(cfg["train"]["threads"]) or int(self.state.get("cpu_threads") or 0)
            self.state["cpu_threads"] = set_threads(want)
            log.info("training on %d CPU thread(s)", self.state["cpu_threads"])
        self._resume_optimizer = resume_state["optimizer"] if resume_state else None
        if resume_state:
            ck.set_rng_state(resume_state["rng"])
        n_all = sum(p.numel() for p in self.model.parameters())
        n_enc = sum(p.numel() for p in self.model.encoder.parameters())
        log.info("UniTalker: %.2f M parameters (encoder %.2f M), %d identities + pivot, heads %s, %d training clips "
                 "(%s), device %s%s", n_all / 1e6, n_enc / 1e6, len(self.idt.keys),
                 ", ".join(h.space + (f" (PCA {h.pca['components'].shape[0]})" if h.pca is not None else "")
                           for h in spec.heads),
                 len(self.clips), ", ".join(f"{s.spec.id} {len(s.ids)}x{s.duplicate}" for s in self.sources),
                 self.device, f", {self.dist.world} ranks" if self.dist.world > 1 else "")

    # ---- run folder
    def _check_run_dir(self) -> Optional[str]:
        cfg_file = self.out / "config.yaml"
        tag = ck.latest_tag(self.out) if self.out.is_dir() else None
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out}: expected a run folder, found a file; choose another path")
        if self.out.is_dir() and not cfg_file.is_file() and any(self.out.iterdir()):
            raise ConfigError(f"--out {self.out}: expected a new folder or an earlier run to resume, found other "
                              "files; choose an empty or new folder")
        if not cfg_file.is_file():
            return None

        old = with_defaults(yaml.safe_load(cfg_file.read_text()))
        run = read_json(self.out / "run.json", what="the run record `unitalker train` wrote", error=ConfigError) \
            if (self.out / "run.json").is_file() else {}
        if run.get("datasets") and run["datasets"] != self.datasets:
            raise ConfigError(f"--out {self.out}: this run trains {','.join(run['datasets'])}, found "
                              f"--datasets {','.join(self.datasets)}; use the same datasets to resume or a new --out")
        ck.check_compatible(old, self.cfg, f"--out {self.out} (resuming)")
        a, b = flatten(old), flatten(self.cfg)
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUME_FREE]
        if diff:
            k = diff[0]
            raise ConfigError(f"--out {self.out}: expected the config this run was started with, found {k}: "
                              f"{a.get(k)!r} -> {b.get(k)!r}; rerun with the same config to resume, or use a new --out")
        if tag is None:
            log.info("%s: no checkpoint yet; starting over", self.out)
        return tag

    def _write_run_files(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(dump(self.cfg))
        write_json(self.out / "run.json", {"datasets": self.datasets, "data": str(self.data.resolve()),
                                           "init_from": self.init_from, "git_sha": ck.git_sha(),
                                           "world_size": self.dist.world, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})

    # ---- phases
    def _set_phase(self, phase: int) -> None:
        enc = self.model.encoder
        for p in enc.parameters():
            p.requires_grad_(phase == 1)
        if phase == 1 and self.cfg["model"]["encoder"]["freeze_feature_extractor"]:
            enc.freeze_feature_extractor()
        limit_trainable(self.model, self.cfg["train"]["trainable"])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, float(self.cfg["train"]["lr"]))
        self.net: torch.nn.Module = self.model
        if self.dist.world > 1:
            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           find_unused_parameters=True)

    def lr_at(self, epoch: int, batch: int, n_batches: int) -> float:
        """``train.lr``, constant (UniTalker) or on a cosine from ``lr`` to ``lr x lr_final`` over the run."""
        tc = self.cfg["train"]
        lr = float(tc["lr"])
        warm = int(tc["lr_warmup_steps"])
        if warm > 0:  # linear ramp over the first steps of each phase (the encoder's first updates)
            lr *= min(1.0, (self.state["step"] - self.state.get("phase_step0", 0) + 1) / warm)
        if tc["lr_schedule"] == "constant":
            return lr
        t = (epoch + batch / max(n_batches, 1)) / max(int(tc["epochs"]), 1)
        lo = lr * float(tc["lr_final"])
        return lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * min(t, 1.0)))

    def phase_of(self, epoch: int) -> int:
        return 0 if epoch < int(self.cfg["train"]["warmup_epochs"]) else 1

    # ---- checkpoints
    def _meta(self, epoch: int, batch: int) -> dict:
        return ck.jsonable({"config": self.cfg, "model_spec": spec_to_meta(self.spec), "encoder": self.model.encoder.saved(),
                            "datasets": [d for d in datasets_meta(self.sources)], "git_sha": ck.git_sha(),
                            "epoch": epoch, "batch": batch, "step": self.state["step"], "init_from": self.init_from,
                            "a2fbench_version": __import__("a2fbench").__version__, "torch": torch.__version__})

    def save(self, epoch: int, batch: int, best: Optional[str] = None) -> str:
        tag = ck.tag_for(epoch, batch)
        self.state.update({"epoch": epoch, "batch": batch})
        state = {**self.state, "optimizer": self.opt.state_dict(), "rng": ck.rng_state()}
        ck.save(self.out, tag, self.model, self._meta(epoch, batch), self.aux, state,
                keep=int(self.cfg["train"]["keep_checkpoints"]), best=best)
        return tag

    # ---- logs
    def _open_log(self) -> Any:
        path = self.out / "log.csv"
        rows = []
        if path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= int(self.state["step"])]
        with open(path, "w", newline="") as f:  # drop rows past the resumed checkpoint
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
        f = open(path, "a", newline="")
        return f, csv.DictWriter(f, fieldnames=LOG_FIELDS)

    def _val_log(self, epoch: int, res: dict) -> None:
        path = self.out / "val.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "step", "dataset", "LVE", "static_LVE", "ratio"])
            for d, r in res.items():
                w.writerow([epoch, self.state["step"], d, f"{r['LVE']:.6e}", f"{r['static']:.6e}", f"{r['ratio']:.4f}"])

    # ---- the loop
    def _loader(self) -> Any:
        """One loader for the run (persistent workers keep no state between epochs but their start-up).

        Targets are computed here, once, before any worker starts; the frozen CNN's features too when they
        are cached (then items carry no audio). Store handles are closed first, so no open HDF5 file crosses
        the fork: workers (and later validation) reopen their own."""
        tc, workers = self.cfg["train"], int(self.cfg["data"]["num_workers"])
        self.buckets = self.device.type == "cuda" and bool(tc["static_shapes"])
        self.clips.precompute_targets(self.progress and self.dist.main)
        self.cache = None
        if featcache.applies(self.cfg):
            dtype = torch.bfloat16 if self.device.type == "cuda" and tc["amp"] == "bf16" else torch.float32
            self.cache = featcache.FeatureCache.build(self.model.encoder, self.clips, self.device, dtype,
                                                      self.progress and self.dist.main)
            self.clips.load_audio = False
        if workers:
            for s in self.sources + (self.validator.sources if self.validator is not None else []):
                s.ds.close()
        cuda = self.device.type == "cuda"
        if cuda:  # with bucketed shapes (collate) cuDNN tunes each shape once; with free lengths, every batch
            torch.backends.cudnn.benchmark = self.buckets
        return torch.utils.data.DataLoader(self.clips, batch_sampler=self.sampler, num_workers=workers,
                                           collate_fn=functools.partial(collate, buckets=self.buckets),
                                           persistent_workers=workers > 0, pin_memory=cuda,
                                           worker_init_fn=worker_init if workers else None)

    def fit(self) -> Path:
        tc = self.cfg["train"]
        logw = None
        if self.dist.main:
            if self.state["step"] == 0 and self.state["epoch"] == 0 and self.state["batch"] == 0:
                self._write_run_files()
            logf, logw = self._open_log()
        barrier(self.dist)
        epochs = int(tc["epochs"])
        amp_on = self.device.type == "cuda" and tc["amp"] == "bf16"
        every = int(tc["checkpoint_every_steps"])
        loader = self._loader()
        steps_here = 0
        last = None
        epoch = int(self.state["epoch"])

        steplog = StepLog((lambda row: (logw.writerow(row), logf.flush())) if self.dist.main else None)
        while epoch < epochs:
            phase = self.phase_of(epoch)
            if phase != self.state["phase"] or not hasattr(self, "opt"):
                self._set_phase(phase)
                if self._resume_optimizer is not None and phase == self.state["phase"]:
                    self.opt.load_state_dict(self._resume_optimizer)
                self._resume_optimizer = None
                if phase != self.state["phase"]:
                    self.state["phase_step0"] = self.state["step"]
                self.state["phase"] = phase
            skip = int(self.state["batch"]) if epoch == int(self.state["epoch"]) else 0
            self.sampler.set_epoch(epoch, skip)
            self.model.train()
            n_batches = len(self.sampler) + skip
            bar = progress_bar(total=n_batches, initial=skip, desc=f"epoch {epoch + 1}/{epochs}",
                               show=self.progress and self.dist.main, unit="batch", leave=False)
            t_epoch, audio_s = time.perf_counter(), 0.0
            steplog.losses = []
            t_prev = time.perf_counter()
            batches = DeviceBatches(loader, self.device, seed=int(tc["seed"]), epoch=epoch, rank=self.dist.rank,
                                    pivot_prob=float(tc["pivot_prob"]), pivot=self.idt.pivot, skip=skip,
                                    cache=self.cache, buckets=self.buckets,
                                    feature_lengths=self.model.encoder.feature_lengths)
            for b, (x, batch, wait) in enumerate(batches, start=skip):
                seed_step(int(tc["seed"]), epoch, b, self.dist.rank)  # dropout, SpecAugment, LayerDrop
                lr = self.lr_at(epoch, b, n_batches)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                with self.step_context():
                    loss, parts = train_step(self.net, self.loss_fn, self.opt, x, amp=amp_on,
                                             grad_clip=float(tc["grad_clip"]), params=self.params)
                self.state["step"] += 1
                steps_here += 1
                secs = float(batch["n_samples"].sum()) / SAMPLE_RATE
                audio_s += secs
                steplog.push(loss, parts, {"epoch": epoch, "batch": b, "step": self.state["step"], "phase": phase,
                                           "lr": f"{lr:.4e}", "clips": len(batch["n_frames"]),
                                           "audio_seconds": f"{secs:.3f}", "data_wait": f"{wait:.4f}",
                                           "seconds": f"{time.perf_counter() - t_prev:.4f}"})
                t_prev = time.perf_counter()  # per-step wall time includes loading the next batch
                bar.update(1)
                done_epoch = b + 1 == n_batches
                if every and self.state["step"] % every == 0 and not done_epoch:
                    steplog.flush()
                    if self.dist.main:
                        last = self.save(epoch, b + 1)
                    barrier(self.dist)
                if self.max_steps is not None and steps_here >= self.max_steps:
                    steplog.flush()
                    bar.close()
                    if self.dist.main:
                        logf.close()
                    return self.out
            steplog.flush()
            bar.close()
            dt = time.perf_counter() - t_epoch
            epoch += 1
            if self.dist.main:
                losses = steplog.losses
                msg = f"epoch {epoch}/{epochs}: loss {np.mean(losses) if losses else float('nan'):.4e}, " \
                      f"{audio_s / max(dt, 1e-9) * self.dist.world:.1f} audio-s/s"
                best = None
                if self.validator is not None and (epoch % int(tc["val_every_epochs"]) == 0 or epoch == epochs):
                    res = self.validator(self.model, self.device, tc["amp"])
                    self._val_log(epoch, res)
                    if res:
                        msg += "; val LVE " + ", ".join(f"{d} {r['LVE']:.3e} ({r['ratio']:.2f}x static)"
                                                        for d, r in res.items())
                        score = float(np.nanmean([r["ratio"] for r in res.values()]))
                        if self.state["best"] is None or score < self.state["best"]:
                            self.state["best"] = score
                            best = self.state["best_tag"] = ck.tag_for(epoch, 0)
                log.info(msg)
                last = self.save(epoch, 0, best=best)
            barrier(self.dist)
        if self.dist.main:
            logf.close()
        if self.dist.world > 1:
            check_ranks_in_sync(self.model, self.device)
        return self.out / ck.CKPT_DIR / f"{last or ck.latest_tag(self.out)}.safetensors"


def train(data: str | Path, datasets: list[str], out: str | Path, cfg: dict, **kw: Any) -> Path:
    t = Trainer(data, datasets, out, cfg, **kw)
    try:
        return t.fit()
    finally:
        for s in t.sources:
            s.ds.close()


