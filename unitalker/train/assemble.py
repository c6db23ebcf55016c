"""Assembling a run: the output heads of the training datasets (PCA heads for vertex spaces), the per-dataset
template means kept with the weights, the datasets' metadata, and the per-step seeds that make a resumed run
draw what an uninterrupted one would."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from a2fbench.registry import get_space

from ..model.config import free_form
from .data import IdentityTable, Source, identity_table, load_pca
from ..model.model import HeadSpec


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) and not free_form(p):
            out.update(flatten(v, p + "."))
        else:
            out[p] = v
    return out


def _step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1)[0])


def step_rng(seed: int, epoch: int, batch: int, rank: int) -> np.random.Generator:
    """The step's own generator (pivot swaps): independent of the global RNGs, so it can be drawn ahead."""
    return np.random.default_rng([seed, epoch, batch, rank, 1])


def seed_step(seed: int, epoch: int, batch: int, rank: int) -> None:
    """Seed the global RNGs (dropout, SpecAugment, LayerDrop) for one step (pivot swaps draw from :func:`step_rng`)."""
    s = _step_seed(seed, epoch, batch, rank)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def build_heads(data: str | Path, sources: list[Source], cfg: dict,
                reuse: Optional[dict[str, HeadSpec]] = None) -> list[HeadSpec]:
    """One head per output space, in dataset order; a vertex space's PCA is the first such dataset's."""
    heads: dict[str, HeadSpec] = {}
    for s in sources:
        if s.space in heads:
            continue
        if reuse and s.space in reuse:
            heads[s.space] = reuse[s.space]
            continue
        space = get_space(s.spec.space)
        pca = None
        if space.is_vertex and cfg["model"]["pca"]:
            pca = load_pca(data, s.spec, int(cfg["model"]["pca_dim"]))
        heads[s.space] = HeadSpec(s.space, space.dim, pca)
    return list(heads.values())


def run_identities(sources: list[Source], cfg: dict) -> IdentityTable:
    """``model.identities``: ``train``, a row per training subject (first seen); ``all``, a row per subject of each
    dataset's train, validation and test splits, in the store's order, dataset by dataset, as UniTalker's table
    (val/test subjects' rows train only if they also train). The pivot is last either way."""
    if cfg["model"]["identities"] == "train":
        return identity_table(sources)
    keys: list[str] = []
    for s in sources:
        splits = [x for x in ("train", cfg["data"]["val_split"], "test") if x in s.ds.split_names]
        seen = {s.ds[sid].subject for x in splits for sid in s.ds.split(x)}
        keys += [f"{s.spec.id}/{subj}" for subj in s.ds.subjects if subj in seen]
    return IdentityTable(keys)


def aux_templates(sources: list[Source], idt: IdentityTable) -> dict[str, torch.Tensor]:
    aux = {}
    for s in sources:
        ts = []
        for key in idt.keys:
            d, subj = key.split("/", 1)
            if d == s.spec.id:
                t = torch.from_numpy(s.template(subj))
                aux[f"template.{key}"] = t
                ts.append(t.double())
        if ts:
            aux[f"template_mean.{s.spec.id}"] = torch.stack(ts).mean(0).float()
    return aux


def datasets_meta(sources: list[Source]) -> list[dict]:
    return [{"id": s.spec.id, "space": s.space, "fps": s.fps, "scale": s.scale, "n_train": len(s.ids)} for s in sources]
