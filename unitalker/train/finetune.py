"""Fine-tuning: loading a checkpoint into a model with other heads or another identity count, as the
official ``load_ckpt`` does, and the config a fine-tuning run starts from."""

from __future__ import annotations

import torch

from a2fbench.errors import ConfigError

from ..model import checkpoint as ck
from ..model.config import load_config
from ..model.model import UniTalker


def transfer(model: UniTalker, meta: dict, state: dict[str, torch.Tensor], reinit_decoder: bool) -> list[str]:
    """Fine-tuning load (UniTalker ``load_ckpt``): non-strict; heads of new spaces stay zero; when the identity
    count differs every row becomes the checkpoint's pivot row; ``reinit_decoder`` keeps only the encoder."""
    own = model.state_dict()
    notes = []
    new = {}
    for k, v in state.items():
        if k not in own:
            continue
        if reinit_decoder and not k.startswith("encoder."):
            continue
        if k == "identity.weight":
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            notes.append(f"{k} kept fresh (shape {tuple(v.shape)} -> {tuple(own[k].shape)})")
            continue
        new[k] = v
    if not reinit_decoder and "identity.weight" in state:
        w = state["identity.weight"]
        if w.shape == own["identity.weight"].shape:
            new["identity.weight"] = w
        else:
            new["identity.weight"] = w[-1:].expand_as(own["identity.weight"]).clone()
            notes.append(f"identity: {w.shape[0]} -> {own['identity.weight'].shape[0]} rows, all set to the pivot row")
    model.load_state_dict(new, strict=False)
    loaded_heads = {k.split(".")[1] for k in new if k.startswith("heads.")}
    for space in model.heads:
        if space not in loaded_heads:
            notes.append(f"head {space}: new, zero-initialised")
    return notes


def limit_trainable(model: UniTalker, trainable: str) -> None:
    """``train.trainable``: freeze every parameter outside the named groups (``encoder``, ``decoder``, ``identity``,
    ``heads``; ``all`` leaves the phase's choice alone). The paper's few-parameter adaptation trains
    ``heads,identity`` only."""
    groups = {g.strip() for g in str(trainable).split(",")}
    if "all" in groups:
        return
    for name, p in model.named_parameters():
        if name.split(".", 1)[0] not in groups:
            p.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"train.trainable={trainable}: expected some parameters to train in this phase, found none "
                          "(the encoder is frozen during the warm-up epochs); add a group or set train.warmup_epochs=0")


def finetune_config(init_from: str, overrides: list[str]) -> dict:
    """The checkpoint's config with ``key=value`` overrides (the architecture may not change)."""
    meta = ck.read_meta(init_from)  # the config only: the trainer reads the weights
    cfg = load_config(None, overrides, base=meta["config"])
    ck.check_compatible(meta["config"], cfg, f"finetune from {init_from}")
    return cfg
