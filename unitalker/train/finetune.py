"""Fine-tuning: the config a fine-tuning run starts from, and which parameter groups it trains (the weights are
loaded by :func:`unitalker.model.load.load_for_finetune`)."""

from __future__ import annotations

from a2fbench.errors import ConfigError

from ..model import checkpoint as ck
from ..model.config import load_config
from ..model.model import UniTalker


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
