"""Training data: several prepared datasets at once, in UniTalker's scaled units, batched by length.

* Each dataset's motion and templates are multiplied by its ``unitalker.scale`` (manifest) on load, as
  UniTalker's ``DataItem`` does; the PCA of a vertex space is converted to the same units. Predictions are
  divided back (:mod:`unitalker.infer.predict`).
* One epoch visits every training clip of dataset d ``duplicate[d]`` times (the config's ``data.duplicate``,
  the paper's 10,5,4,1,1,1,1,1), shuffled; val/test are not repeated.
* Batches (length-bucketed, deterministic in (seed, epoch)) and padding: :mod:`unitalker.train.batches`.
* Audio and motion are aligned as UniTalker's ``DataItem.truncate`` does: each clip is cut to
  ``min(recording s, motion s, data.max_seconds)`` (``a2fbench.store.common_length``: motion frames and audio
  samples by Python ``round``), so a recording that runs past the motion is cut to it and a motion that runs
  past its recording is cut to the recording. Training clips under ``data.min_seconds`` are skipped and each
  one is logged (validation clips never are).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import a2fbench
from a2fbench.errors import ConfigError, StoreError
from a2fbench.registry import DatasetSpec, get_space, get_spec
from a2fbench.spaces import pca as _pca
from a2fbench.spaces.pca import pca_path
from a2fbench.store.templates import choose_template
from a2fbench.util.progress import bar as progress_bar

from .batches import BucketBatchSampler, collate, eval_batches  # noqa: F401  (re-exported: their old home)
from ..model.encoder import normalize_audio
from ..model.identity import IdentityTable

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- PCA
def load_pca(data: str | Path, spec: DatasetSpec, k: int) -> dict:
    """The dataset's PCA (``a2fbench pca``), truncated to ``k`` components, in UniTalker's scaled units.

    ``a2fbench pca`` fits motion - template of the training split in the dataset's native units (its ``meta``
    says so; ``scaled_by`` when it was rescaled). Components are unit vectors, so scaling only touches the mean.
    A file without ``meta`` is a UniTalker release file, fitted in UniTalker's scaled units already.
    """

    if not pca_path(data, spec.id).is_file():
        raise StoreError(f"expected the PCA of {spec.id} at {pca_path(data, spec.id)} (its vertex head decodes "
                         f"through it), found nothing; run `a2fbench pca {spec.id} --data {data}` or set model.pca=false")
    p = _pca.load_for(data, spec.id)
    comps, mean = np.asarray(p.components), np.asarray(p.mean, np.float64)
    D = get_space(spec.space).dim
    if comps.ndim != 2 or comps.shape[1] != D or mean.shape != (D,):
        raise StoreError(f"{pca_path(data, spec.id)}: expected components (K, {D}) and mean ({D},), found "
                         f"{comps.shape} and {mean.shape}; re-run `a2fbench pca {spec.id} --data {data}`")
    s = float(spec.unitalker.scale)
    if p.meta:
        mean = mean * (s / float(p.meta.get("scaled_by", 1.0)))
    else:
        log.info("%s: pca.npz has no a2fbench metadata; taking it as a UniTalker release file (scaled units)", spec.id)
    k = min(int(k), comps.shape[0], D)
    return {"components": comps[:k].astype(np.float32), "mean": mean.astype(np.float32)}


# ------------------------------------------------------------------------------------------ sources
@dataclass
class Source:
    """One training dataset: its store, scale, head space and the clip ids used."""

    spec: DatasetSpec
    ds: Any  # a2fbench store Dataset
    ids: list[str]
    duplicate: int
    scale: float
    space: str
    fps: float
    _templates: dict = field(default_factory=dict)

    def template(self, subject: str) -> np.ndarray:
        """Scaled float32 template (D,)."""
        t = self._templates.get(subject)
        if t is None:
            t = (np.asarray(choose_template(self.ds, subject=subject).values, np.float64) * self.scale).astype(np.float32)
            self._templates[subject] = t
        return t


#: the paper's ``duplicate_list`` 10,5,4,1,1,1,1,1 (D0..D7): a recipe choice, so it lives in the config
PAPER_DUPLICATE = {"D0": 10, "D1": 5, "D2": 4}


def duplicates(cfg: dict, specs: list[DatasetSpec]) -> list[int]:
    """Passes over each training dataset's clips per epoch: ``data.duplicate`` as a mapping (absent: 1) or a list
    in dataset order."""
    dup = cfg["data"]["duplicate"]
    if dup == "manifest":  # configs saved before 0.2 named the manifests, which then held the paper's list
        dup = PAPER_DUPLICATE
    if isinstance(dup, dict):
        return [int(dup.get(s.id, 1)) for s in specs]
    if len(dup) != len(specs):
        raise ConfigError(f"data.duplicate: expected one repetition count per training dataset ({len(specs)}: "
                          f"{', '.join(s.id for s in specs)}), found {len(dup)}; give a list of {len(specs)} or a mapping such as {{D0: 10}}")
    return [int(x) for x in dup]


def select_fraction(ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded subset of ``ceil(fraction * n)`` clips (at least one), kept in canonical order."""
    if fraction >= 1.0:
        return list(ids)
    n = max(1, math.ceil(fraction * len(ids)))
    keep = set(np.random.default_rng([seed, 12345]).permutation(len(ids))[:n].tolist())
    return [sid for i, sid in enumerate(ids) if i in keep]


def open_sources(data: str | Path, datasets: list[str], cfg: dict, split: str = "train") -> list[Source]:
    specs = [get_spec(d) for d in datasets]
    dups = duplicates(cfg, specs)
    out = []
    for spec, dup in zip(specs, dups):
        ds = a2fbench.open_dataset(data, spec.id)
        ids = ds.split(split) if split in ds.split_names else []
        if split == "train":
            if not ids:
                raise StoreError(f"{spec.id} has no training sequences; expected a non-empty train split in {data}")
            ids = select_fraction(ids, float(cfg["data"]["fraction"]), int(cfg["train"]["seed"]))
        out.append(Source(spec, ds, ids, dup, float(spec.unitalker.scale), spec.space, float(ds.card["fps"])))
    return out


def identity_table(sources: list[Source]) -> IdentityTable:
    keys: list[str] = []
    for s in sources:
        seen = set()
        for sid in s.ids:
            subj = s.ds[sid].subject
            if subj not in seen:
                seen.add(subj)
                keys.append(f"{s.spec.id}/{subj}")
    return IdentityTable(keys)


# --------------------------------------------------------------------------------------------- clips
class ClipSet(torch.utils.data.Dataset):
    """(source, clip) pairs -> dict(audio, target, identity, ...) in scaled units.

    Targets: for a space with a PCA head (``pca[space] = (components (k, D), mean (D,))``) the clip's PCA
    coefficients ``z = (G - template - mean) C'`` (T, k) and the squared norm of what the PCA leaves out
    ``r2`` (T,), so the vertex loss needs no (T, D) tensor (``loss.py``); otherwise the motion (T, D) and the
    template (D,). PCA and parameter targets are computed once per clip and kept in memory (small):
    :meth:`precompute_targets` computes them all in this process before loader workers start, so workers
    inherit them (fork) instead of each recomputing its own copy with a BLAS pool per worker.
    ``load_audio = False`` (the frozen CNN's features are cached, :mod:`unitalker.train.featcache`): items carry no
    audio, only its length.
    """

    def __init__(self, sources: list[Source], ids: IdentityTable, cfg: dict, normalize: bool, split: str = "train",
                 pca: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None):
        self.sources = sources
        self.idt = ids
        self.normalize = normalize
        self.pca = pca or {}
        self.max_s = float(cfg["data"]["max_seconds"])
        min_s = float(cfg["data"]["min_seconds"])
        self.items: list[tuple[int, str]] = []
        self.frames: list[int] = []
        self.samples: list[int] = []
        self._cache: dict[int, dict] = {}
        self.load_audio = True
        n_cut = n_audio_cut = n_motion_cut = 0
        for si, s in enumerate(sources):
            for sid in s.ids:
                seq = s.ds[sid]
                # UniTalker's DataItem.truncate: both cut to the shorter of motion and recording, and to max_s
                dur = min(seq.audio_seconds, seq.motion_seconds, self.max_s)
                if split == "train" and dur < min_s:  # the minimum applies to training only
                    log.warning("skipping %s %s: %.2f s is under data.min_seconds=%.2f s", s.spec.id, sid, dur, min_s)
                    continue
                n, n_audio = seq.common_length(self.max_s)
                n_cut += min(seq.audio_seconds, seq.motion_seconds) > self.max_s
                n_motion_cut += seq.audio_seconds < min(seq.motion_seconds, self.max_s)
                n_audio_cut += seq.motion_seconds < min(seq.audio_seconds, self.max_s)
                self.items.append((si, sid))
                self.frames.append(n)
                self.samples.append(n_audio)
        if n_cut:
            log.info("%d %s clips are longer than data.max_seconds=%.0f s and are cut to it", n_cut, split, self.max_s)
        if n_motion_cut or n_audio_cut:
            log.info("%s: %d clips' motion cut to a shorter recording, %d recordings cut to a shorter motion "
                     "(UniTalker aligns audio and motion by the shorter)", split, n_motion_cut, n_audio_cut)

    def __len__(self) -> int:
        return len(self.items)

    def seconds(self, i: int) -> float:
        si, _ = self.items[i]
        return self.frames[i] / self.sources[si].fps

    def precompute_targets(self, progress: bool = False) -> None:
        """Every clip's targets, computed now in this process (float64 projections with the full BLAS pool)."""
        bar = progress_bar(total=len(self), desc="targets", show=progress, unit="clip", leave=False)
        for i in range(len(self)):
            self._targets(i)
            bar.update(1)
        bar.close()

    def _targets(self, i: int) -> dict:
        if i in self._cache:
            return self._cache[i]
        si, sid = self.items[i]
        s = self.sources[si]
        seq = s.ds[sid]
        T = self.frames[i]
        motion = np.asarray(seq.frames(0, T) if T < seq.n_frames else seq.motion, np.float64) * s.scale
        tmpl = s.template(seq.subject)
        if s.space in self.pca:
            C, mean = self.pca[s.space]
            x = motion - tmpl.astype(np.float64) - mean.astype(np.float64)
            z = x @ C.astype(np.float64).T
            r2 = np.maximum((x * x).sum(1) - (z * z).sum(1), 0.0)
            out = {"z": torch.from_numpy(z.astype(np.float32)), "r2": torch.from_numpy(r2.astype(np.float32))}
            self._cache[i] = out
        else:
            out = {"motion": torch.from_numpy(motion.astype(np.float32)), "template": torch.from_numpy(tmpl)}
            if motion.shape[1] <= 4096:  # parameter spaces: small, keep
                self._cache[i] = out
        return out

    def __getitem__(self, i: int) -> dict:
        si, sid = self.items[i]
        s = self.sources[si]
        seq = s.ds[sid]
        T = self.frames[i]
        a = None
        if self.load_audio:
            audio = np.asarray(seq.audio, np.float32)[:self.samples[i]]  # the recording as far as the motion goes
            a = torch.from_numpy(np.ascontiguousarray(audio))
            if self.normalize:
                a = normalize_audio(a)
        row = self.idt.row(s.spec.id, seq.subject)
        return {
            "audio": a,
            "n_samples": self.samples[i],
            "n_frames": T,
            "index": i,
            "target": self._targets(i),
            "identity": self.idt.pivot if row is None else row,
            "space": s.space,
            "dataset": s.spec.id,
            "seq_id": sid,
            "subject": seq.subject,
            "source": si,
        }
