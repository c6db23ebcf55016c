"""Loading a model: the one place that reads a checkpoint, resolves its config and builds the network once.

* :func:`load_model`: for inference (``predict``, ``infer``, ``bench``, the quickstart): weights loaded, eval mode.
* :func:`load_for_finetune`: a fine-tuning run's model, the checkpoint's weights transferred as the official
  ``load_ckpt`` does (:func:`transfer`).
* :func:`load_for_resume`: an interrupted run's model, to go on training.
* :func:`spec_from_meta` / :func:`spec_to_meta`: a checkpoint's ``model_spec`` metadata <-> :class:`ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import checkpoint as ck
from .config import with_defaults
from .identity import IdentityTable
from .model import HeadSpec, ModelSpec, UniTalker


@dataclass
class Loaded:
    model: UniTalker
    cfg: dict
    meta: dict
    aux: dict
    identities: IdentityTable

    @property
    def datasets(self) -> list[dict]:
        return self.meta["datasets"]


def spec_from_meta(meta: dict) -> ModelSpec:
    heads = []
    for h in meta["model_spec"]["heads"]:
        pca = None
        if h.get("pca_k"):
            pca = {"components": torch.zeros(h["pca_k"], h["dim"]).numpy(), "mean": torch.zeros(h["dim"]).numpy()}
        heads.append(HeadSpec(h["space"], int(h["dim"]), pca))
    ids = list(meta["model_spec"]["identities"])
    return ModelSpec(heads, len(ids) + 1, ids)


def spec_to_meta(spec: ModelSpec) -> dict:
    return {"heads": [{"space": h.space, "dim": h.dim,
                       "pca_k": (int(h.pca["components"].shape[0]) if h.pca is not None else None)} for h in spec.heads],
            "identities": list(spec.identities)}


def load_model(path: Any, device: torch.device | str = "cpu", attention: Optional[str] = None,
               config: Optional[dict] = None) -> Loaded:
    """A model from a checkpoint file or run folder, weights loaded, in eval mode.

    ``config``: when given (``bench --checkpoint X --config Y``), it must describe the same architecture.
    """
    meta, state, aux = ck.read(path)
    cfg = meta["config"] = with_defaults(meta["config"])
    if config is not None:
        ck.check_compatible(cfg, config, f"{meta['path']} vs the given config")
    spec = spec_from_meta(meta)
    model = UniTalker(cfg, spec, attention=attention, saved_encoder=meta["encoder"])
    ck.load_weights(model, state, meta["path"])
    model.to(device).eval()
    return Loaded(model, cfg, meta, aux, IdentityTable(spec.identities))


def load_for_resume(ckpt: Path, cfg: dict) -> tuple[UniTalker, dict, ModelSpec]:
    """The model of an interrupted run at checkpoint ``ckpt``, built with the run's ``cfg`` (train mode kept)."""
    meta, state, _ = ck.read(ckpt)
    spec = spec_from_meta(meta)
    model = UniTalker(cfg, spec, saved_encoder=meta["encoder"])
    ck.load_weights(model, state, str(ckpt))
    return model, meta, spec


def load_for_finetune(init_from: str, cfg: dict, make_spec: Callable[[dict[str, HeadSpec]], ModelSpec],
                      reinit_decoder: bool) -> tuple[UniTalker, ModelSpec, list[str], str]:
    """A fine-tuning run's model: the checkpoint ``init_from`` read once, its architecture checked against ``cfg``,
    the new run's spec made by ``make_spec(reusable PCA heads of the checkpoint)`` (none with ``reinit_decoder``),
    the model built once and the checkpoint's weights transferred (:func:`transfer`).

    Returns (model, spec, notes on what was not transferred, the checkpoint's resolved path)."""
    meta, state, _ = ck.read(init_from)
    ck.check_compatible(meta["config"], cfg, f"finetune from {init_from}")
    reuse = {} if reinit_decoder else {h.space: h for h in spec_from_meta(meta).heads if h.pca is not None}
    spec = make_spec(reuse)
    model = UniTalker(cfg, spec, saved_encoder=meta["encoder"])
    notes = transfer(model, meta, state, reinit_decoder)
    return model, spec, notes, str(ck.resolve(init_from))


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

