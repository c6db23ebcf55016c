"""Checkpoints: ``RUN/checkpoints/<tag>.safetensors`` (+ ``<tag>.state.pt`` for resuming) and ``RUN/checkpoints/latest``.

* ``<tag>.safetensors``: the model's weights and buffers (PCA bases included) plus ``aux.*`` tensors (per-subject
  templates, in scaled units, for ``infer``); its metadata carries the resolved config, the model spec
  (heads, identities, training datasets), the transformers encoder config, the git sha, epoch and step. It is
  self-contained: ``predict`` and ``infer`` need nothing else.
* ``<tag>.state.pt``: optimizer state, training position (epoch, batch in epoch, global step, phase), RNG states
  and the best validation score; read with ``torch.load(weights_only=True)``.
* ``latest``: the newest tag, written last (atomically), so a run killed mid-write resumes from the previous one.

Tags are ``e<epoch>-b<batch>`` (``e0003-b00000`` = the end of epoch 2). A run folder keeps the newest
``train.keep_checkpoints`` tags and the best-validation one (``best``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from safetensors import safe_open

from a2fbench.errors import ConfigError, StoreError
from a2fbench.util.fsutil import atomic_path

from .config import arch_diff

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that move tensors: reading a checkpoint's metadata (``read_meta``, which
# ``unitalker infer`` does to check its arguments before the model loads) costs no torch import (4 s on a busy
# 2-core machine).
log = logging.getLogger(__name__)
FORMAT = "a2fbench-unitalker/1"
CKPT_DIR = "checkpoints"


def git_sha() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=5)
        sha = r.stdout.strip() if r.returncode == 0 else ""
        if sha:
            d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
            return sha + ("-dirty" if d.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def tag_for(epoch: int, batch: int) -> str:
    return f"e{epoch:04d}-b{batch:05d}"


def rng_state() -> dict:
    import torch

    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
          "numpy": np.random.get_state()[1].astype(np.int64).tolist()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    random.setstate((3, tuple(st["python"]), None))
    np.random.set_state(("MT19937", np.asarray(st["numpy"], dtype=np.uint32), 624, 0, 0.0))


def save(run: Path, tag: str, model: torch.nn.Module, meta: dict, aux: dict[str, torch.Tensor],
         state: Optional[dict], keep: int = 2, best: Optional[str] = None) -> Path:
    """Write one checkpoint atomically (weights, then state, then the ``latest`` pointer)."""
    import torch

    d = Path(run) / CKPT_DIR
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    target = write_weights(run, tag, tensors, aux, meta)
    if state is not None:
        with atomic_path(d / f"{tag}.state.pt") as tmp:
            torch.save(state, tmp)
    write_latest(run, tag)
    if best:
        with atomic_path(d / "best") as tmp:
            tmp.write_text(best + "\n")
    _prune(d, keep)
    return target


def write_weights(run: Path, tag: str, tensors: dict[str, torch.Tensor], aux: dict[str, torch.Tensor],
                  meta: dict) -> Path:
    """``RUN/checkpoints/<tag>.safetensors`` (atomically): model tensors, ``aux.*`` tensors, JSON metadata.
    safetensors writes each tensor from its own memory (no copy of the whole file is made)."""
    from safetensors.torch import save_file

    d = Path(run) / CKPT_DIR
    d.mkdir(parents=True, exist_ok=True)
    tensors = dict(tensors)
    tensors.update({f"aux.{k}": v.detach().to("cpu").contiguous() for k, v in aux.items()})
    md = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    target = d / f"{tag}.safetensors"
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=md)
    return target


def write_latest(run: Path, tag: str) -> None:
    with atomic_path(Path(run) / CKPT_DIR / "latest") as tmp:
        tmp.write_text(tag + "\n")


def _prune(d: Path, keep: int) -> None:
    tags = sorted(p.name[: -len(".safetensors")] for p in d.glob("e*-b*.safetensors"))
    protect = {_read_pointer(d / "latest"), _read_pointer(d / "best")}
    for t in tags[: max(0, len(tags) - max(1, keep))]:
        if t in protect:
            continue
        for suffix in (".safetensors", ".state.pt"):
            p = d / f"{t}{suffix}"
            if p.exists():
                p.unlink()


def _read_pointer(p: Path) -> Optional[str]:
    try:
        return p.read_text().strip() or None
    except OSError:
        return None


def latest_tag(run: Path) -> Optional[str]:
    d = Path(run) / CKPT_DIR
    tag = _read_pointer(d / "latest")
    if tag and (d / f"{tag}.safetensors").is_file():
        return tag
    tags = sorted(p.name[: -len(".safetensors")] for p in d.glob("e*-b*.safetensors"))
    return tags[-1] if tags else None


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its latest checkpoint) -> the ``.safetensors`` path."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            hint = (f"; for an official UniTalker .pt run `unitalker import-official {p.name} --release DIR --out RUN` "
                    "first" if p.suffix == ".pt" else "")
            raise StoreError(f"{p}: expected a UniTalker checkpoint (.safetensors) or a run folder, found another "
                             f"file; pass RUN or RUN/checkpoints/<tag>.safetensors{hint}")
        return p
    if p.is_dir():
        for run in (p, p.parent) if p.name == CKPT_DIR else (p,):
            tag = latest_tag(run)
            if tag:
                return run / CKPT_DIR / f"{tag}.safetensors"
        raise StoreError(f"{p}: expected a run folder holding checkpoints/<tag>.safetensors, found none; train "
                         "first (`unitalker train ... --out RUN`) or pass a checkpoint file")
    raise StoreError(f"expected a checkpoint file or run folder at {p}, found nothing; check the path")


def read(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(metadata, model state dict, aux tensors) of a checkpoint file."""

    meta, tensors = _open(path, tensors=True)
    state = {k: v for k, v in tensors.items() if not k.startswith("aux.")}
    aux = {k[4:]: v for k, v in tensors.items() if k.startswith("aux.")}
    return meta, state, aux


def read_meta(path: str | os.PathLike) -> dict:
    """A checkpoint file's metadata (config, model spec, ...) as :func:`read` gives it, without reading the tensors."""
    return _open(path, tensors=False)[0]


def _open(path: str | os.PathLike, tensors: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata with ``path``, all tensors if ``tensors`` else {}), the file's format checked."""
    p = resolve(path)
    try:
        with safe_open(str(p), framework="pt" if tensors else "numpy") as f:  # "numpy": no torch import
            md = f.metadata() or {}
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise StoreError(f"{p}: expected a readable safetensors checkpoint, found a damaged file ({e}); use "
                         "another checkpoint of the run") from None
    if md.get("format") != FORMAT:
        raise StoreError(f"{p}: expected a checkpoint written by `unitalker train` (format {FORMAT}), found "
                         f"{md.get('format')!r}; for UniTalker's released .pt run `unitalker import-official` first")
    meta = {k: json.loads(v) for k, v in md.items() if k != "format"}
    meta["path"] = str(p)
    return meta, out


def read_state(ckpt: Path) -> Optional[dict]:
    p = Path(str(ckpt)[: -len(".safetensors")] + ".state.pt")
    if not p.is_file():
        return None
    import torch

    return torch.load(p, map_location="cpu", weights_only=True)


def check_compatible(a: dict, b: dict, what: str) -> None:
    diff = arch_diff(a, b)
    if diff:
        raise ConfigError(f"{what}: expected the same architecture, found a checkpoint from another config "
                          f"({'; '.join(diff[:3])}); use the checkpoint's own config, or a new --out")


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strict load with one clear line when the checkpoint does not fit the model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        first = (f"{bad[0]} shaped {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}" if bad else
                 f"missing {missing[0]}" if missing else f"unexpected {extra[0]}")
        raise ConfigError(f"{where}: expected weights matching its config, found a checkpoint from another config "
                          f"({len(missing)} missing, {len(extra)} unexpected, {len(bad)} mis-shaped: {first})")
    model.load_state_dict(state, strict=True)


def jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))
