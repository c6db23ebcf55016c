"""``unitalker import-official`` / ``export-official``: a released UniTalker-B/-L ``.pt`` <-> one of our run folders.

Import: the ``.pt`` is read with ``torch.load(weights_only=True)`` (memory-mapped when it is a zip checkpoint, so a
1.2 GB file is not copied into memory) and refused if it needs anything but tensors; the architecture comes from
the tensor shapes (:mod:`unitalker.release.official`); the release folder gives the PCA bases, templates and subject
names (:mod:`unitalker.release.release`). Every key and shape is checked against the model that the shapes imply (built
on the ``meta`` device: no memory, no random init) before anything is written; the run folder appears whole or not
at all. Export: the reverse, as the official trainer saves (no ``pca_layer_dict``), identities laid out as its
identity table.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from a2fbench.errors import ConfigError, StoreError
from a2fbench.registry import get_space, get_spec
from a2fbench.util.fsutil import atomic_path, write_json
from a2fbench.util.guard import check_apart, make_parent, show

from ..model import checkpoint as ck
from . import official as of
from ..model.config import dump, load_config
from ..model.encoder import KNOWN_ARCH
from ..model.model import HeadSpec, ModelSpec, UniTalker
from .release import ReleaseDataset, check_folder, find_mouth_lists, read_dataset
from ..model.load import spec_to_meta

log = logging.getLogger(__name__)
TAG = ck.tag_for(0, 0)


class UnsafeCheckpointError(StoreError):
    """A checkpoint that needs more than tensors and plain containers to unpickle."""


def load_official(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a ``.pt``: ``weights_only=True`` (tensors and plain containers only; anything else is
    refused before it runs), memory-mapped for zip checkpoints."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise StoreError(f"expected a UniTalker checkpoint at {p}, found {'a folder' if p.exists() else 'nothing'}; "
                         "pass the downloaded UniTalker-B-D0-D7.pt or UniTalker-L-D0-D7.pt")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p))
    except pickle.UnpicklingError as e:
        what = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        raise UnsafeCheckpointError(f"{p}: expected a checkpoint of tensors only, found a pickle that needs "
                                    f"{what.group(1) if what else 'other objects'} to load; refused without running it "
                                    "(only use checkpoints from a source you trust)") from None
    except Exception as e:  # noqa: BLE001 - zip, EOF, OS and key errors all mean a damaged file
        first = str(e).splitlines()[0][:100] if str(e) else ""
        raise StoreError(f"{p}: expected a complete torch checkpoint, found a truncated or damaged file "
                         f"({type(e).__name__}: {first}); download it again") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StoreError(f"{p}: expected a state dict (a dict of tensors), found {type(obj).__name__}"
                         f"{' with non-tensor values' if isinstance(obj, dict) else ''}; pass the released .pt")
    for k, v in obj.items():  # NaN/inf weights would make every output of the run NaN: refuse at the door
        if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise StoreError(f"{p}: expected finite weights, found {n} NaN/inf value{'s' if n > 1 else ''} in tensor "
                             f"{show(k)} {tuple(v.shape)}; the checkpoint is damaged: download it again")
    return obj


def _check_keys(expected: dict[str, tuple], found: dict[str, tuple], where: str) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    bad = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} expected key(s) missing (e.g. {', '.join(missing[:2])})")
        if extra:
            parts.append(f"{len(extra)} unexpected key(s) found (e.g. {', '.join(extra[:2])})")
        if bad:
            parts.append(f"{bad[0]} shaped {tuple(found[bad[0]])}, expected {tuple(expected[bad[0]])}")
        raise of.LayoutError(f"{where}: expected the official UniTalker layout, found a state dict of another model: "
                             f"{'; '.join(parts)}")


def _import_config(enc_name: str, enc_cfg: dict, dec: dict, pca_dim: int) -> dict:
    base = load_config("unitalker-b" if enc_name.startswith("microsoft/wavlm") else "unitalker-l")
    m = base["model"]
    arch = {k: v for k, v in enc_cfg.items() if k != "model_type" and KNOWN_ARCH[enc_name].get(k) != v}
    m["encoder"]["arch"] = arch
    m["encoder"]["pretrained"] = not arch  # another size than the hub model: its weights come from the file
    dec = dict(dec)
    if "transformer" in dec:
        m["decoder"]["transformer"].update(dec.pop("transformer"))
    m["decoder"].update(dec)
    m["pca_dim"] = pca_dim
    return base


def import_official(ckpt: str | os.PathLike, release: str | os.PathLike, out: str | os.PathLike,
                    datasets: Optional[list[str]] = None) -> Path:
    """Write a run folder ``out`` (``checkpoints/e0000-b00000.safetensors``, ``config.yaml``, ``run.json``)."""
    t0 = time.perf_counter()
    out = check_apart(out, [ckpt, release])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "file" if out.is_file() else "folder"
        raise ConfigError(f"--out {show(out)}: expected a new run folder, found an existing {what}; choose another "
                          "path")
    rel = check_folder(Path(release))
    sd = load_official(ckpt)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    enc_name, enc_cfg, normalize = of.encoder_config(shapes)
    dec = of.decoder_config(shapes)
    if dec["type"] == "transformer" and "decoder.PPE.pe" in shapes:
        dec["transformer"]["period"] = of.ppe_period(sd["decoder.PPE.pe"])
    widths = of.head_widths(shapes)
    n_rows = shapes["decoder.learnable_style_emb.weight"][0]
    ds_ids = of.datasets_for(widths, n_rows, datasets)
    spaces = {d: get_spec(d).space for d in ds_ids}
    space_of_annot = {of.ANNOT_TYPES[d]: spaces[d] for d in ds_ids}
    for annot in widths:
        if annot not in space_of_annot:
            raise of.LayoutError(f"expected heads of {', '.join(ds_ids)}, found an extra head {annot!r}; name the "
                                 "training datasets with --datasets")
    pca_k = {spaces[d]: widths[of.ANNOT_TYPES[d]] for d in ds_ids if get_space(spaces[d]).is_vertex}
    rels: list[ReleaseDataset] = [read_dataset(rel, d, of.ANNOT_TYPES[d], pca_k.get(spaces[d])) for d in ds_ids]
    mouths = find_mouth_lists(rel, ds_ids)  # carried into the run: paper mode scores on them (evaluate reads them)
    heads: dict[str, HeadSpec] = {}
    for d, r in zip(ds_ids, rels):
        sp = spaces[d]
        if sp not in heads:
            heads[sp] = HeadSpec(sp, get_space(sp).dim, r.pca)
        elif r.pca is not None and heads[sp].pca is None:
            heads[sp] = HeadSpec(sp, get_space(sp).dim, r.pca)
    keys = [f"{r.id}/{n}" for r in rels for n in r.names]
    spec = ModelSpec(list(heads.values()), n_rows, keys)
    cfg = _import_config(enc_name, enc_cfg, dec, max(pca_k.values(), default=int(load_config()["model"]["pca_dim"])))
    saved_enc = {"config": dict(enc_cfg), "normalize": normalize}
    with torch.device("meta"):  # the keys and shapes of the model these tensors imply, without allocating it
        placeholder = ModelSpec([HeadSpec(h.space, h.dim, None if h.pca is None else
                                          {"components": np.zeros((h.pca["components"].shape[0], 0), np.float32),
                                           "mean": np.zeros(0, np.float32)}) for h in spec.heads], n_rows, keys)
        model = UniTalker(cfg, placeholder, saved_encoder=saved_enc)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved_enc["config"] = model.encoder.saved()["config"]
    annot_of_space = {s: a for a, s in space_of_annot.items()}
    spelling = of.weight_norm_spelling(sd)
    expected = {of.spell_weight_norm(of.to_official(k, annot_of_space), spelling): s for k, s in ours.items()
                if of.to_official(k, annot_of_space) is not None}
    found = {k: s for k, s in shapes.items() if k != "decoder.PPE.pe"}
    _check_keys(expected, found, str(ckpt))
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for k, v in sd.items():
        mine = of.from_official(of.spell_weight_norm(k, "parametrizations"), space_of_annot)
        if mine is not None:
            mine = of.spell_weight_norm(mine, of.weight_norm_spelling(ours))
            ptr = v.untyped_storage().data_ptr()
            shared = ptr in storages  # safetensors refuses tensors that share memory: copy those few
            storages.add(ptr)
            tensors[mine] = v.clone() if shared else (v if v.is_contiguous() else v.contiguous())
    for sp, h in heads.items():
        if h.pca is not None:
            tensors[f"heads.{sp}.components"] = torch.from_numpy(h.pca["components"])
            tensors[f"heads.{sp}.mean"] = torch.from_numpy(h.pca["mean"])
    aux: dict[str, torch.Tensor] = {}
    for r in rels:
        for n, t in zip(r.names, r.templates):
            aux[f"template.{r.id}/{n}"] = torch.from_numpy(t)
        aux[f"template_mean.{r.id}"] = torch.from_numpy(r.templates.astype(np.float64).mean(0).astype(np.float32))
    source = str(Path(ckpt).expanduser().resolve())
    meta = ck.jsonable({
        "config": cfg, "model_spec": spec_to_meta(spec), "encoder": saved_enc,
        "datasets": [{"id": d, "space": spaces[d], "fps": float(get_spec(d).fps),
                      "scale": float(get_spec(d).unitalker.scale), "n_train": None} for d in ds_ids],
        "git_sha": ck.git_sha(), "epoch": 0, "batch": 0, "step": 0, "init_from": source,
        "official": {"source": source, "release": str(rel.resolve()), "weight_norm": spelling,
                     "encoder": enc_name, "annot_types": annot_of_space,
                     "id_lists": {r.id: r.id_list for r in rels if r.id_list},
                     "mouth_lists": {d: {"file": f"resources/{m.path.name}", "sha256": m.sha256,
                                         "n": int(m.indices.size), "source": str(m.path.resolve())}
                                     for d, m in mouths.items()}},
        "a2fbench_version": __import__("a2fbench").__version__, "torch": torch.__version__})
    with atomic_path(out, is_dir=True) as tmp:
        ck.write_weights(tmp, TAG, tensors, aux, meta)
        ck.write_latest(tmp, TAG)
        (tmp / "config.yaml").write_text(dump(cfg))
        for m in mouths.values():  # the bytes whose digest is recorded (D1 and D5 share one file)
            (tmp / "resources").mkdir(exist_ok=True)
            (tmp / "resources" / m.path.name).write_bytes(m.data)
        write_json(tmp / "run.json", {"datasets": ds_ids, "data": None, "init_from": source, "git_sha": ck.git_sha(),
                                      "imported": {"release": str(rel.resolve()), "encoder": enc_name,
                                                   "decoder": cfg["model"]["decoder"]["type"]},
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    log.info("imported %s (%s, %s decoder, %d tensors, %d identities, heads %s) -> %s in %.1f s", Path(ckpt).name,
             enc_name, cfg["model"]["decoder"]["type"], len(sd), n_rows, ", ".join(widths), out,
             time.perf_counter() - t0)
    if mouths:
        log.info("UniTalker mouth lists from the release folder, carried into the run: %s",
                 ", ".join(f"{d} {m.path.name}" for d, m in mouths.items()))
    return out


# ------------------------------------------------------------------------------------------- export
def export_official(run: str | os.PathLike, out: str | os.PathLike, weight_norm: Optional[str] = None) -> Path:
    """Write ``out`` (.pt): our checkpoint in the official key layout (see module doc)."""
    meta, state, _ = ck.read(run)
    cfg = meta["config"]
    dec = cfg["model"]["decoder"]
    if dec["type"] == "transformer" and int(dec["transformer"]["heads"]) != 4:
        raise ConfigError(f"{meta['path']}: expected the official transformer decoder's 4 heads, found "
                          f"{dec['transformer']['heads']}; the official code cannot load this model")
    ds_ids = [d["id"] for d in meta["datasets"]]
    annot_of_space: dict[str, str] = {}
    for d in meta["datasets"]:
        if d["id"] not in of.ANNOT_TYPES:
            raise ConfigError(f"{meta['path']}: expected UniTalker's datasets ({', '.join(of.DATASETS)}), found "
                              f"{d['id']}, which has no official annotation type")
        annot_of_space.setdefault(d["space"], of.ANNOT_TYPES[d["id"]])
    official = meta.get("official") or {}
    spelling = weight_norm or official.get("weight_norm") or "parametrizations"
    rows = of.identity_rows(list(meta["model_spec"]["identities"]), ds_ids, official.get("id_lists") or {})
    sd: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        o = of.to_official(k, annot_of_space)
        if o is None:
            continue
        if k == "identity.weight":
            pivot = v.shape[0] - 1
            v = v[torch.tensor([pivot if r is None else r for r in rows] + [pivot])].clone()
        sd[of.spell_weight_norm(o, spelling)] = v
    if dec["type"] == "transformer":
        sd["decoder.PPE.pe"] = of.ppe_buffer(int(dec["transformer"]["period"]), int(dec["hidden"]))
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {show(out)}: expected a .pt file path, found a folder; name the file (e.g. "
                          f"{show(out)}/model.pt)")
    make_parent(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:  # open() here: an OSError is one line, not torch's
        torch.save(sd, fh)
    unfilled = sum(r is None for r in rows)
    log.info("exported %s -> %s (%d tensors; official dataset list %s; %d identity rows%s)", meta["path"], out, len(sd),
             ",".join(ds_ids), len(rows) + 1, f", {unfilled} of them new (the pivot row)" if unfilled else "")
    return out

