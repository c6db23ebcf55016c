"""``unitalker infer``'s arguments, checked before anything heavy loads (no torch import, no weights read).

A missing audio file, an unknown head or identity, a ``--template`` of the wrong topology or an output path in
the way is refused in about a second (the checkpoint's metadata is read, not its tensors), instead of after the
model has loaded (12-18 s on a busy 2-core machine). :func:`plan_infer` returns what it checked, for
:func:`.predict.infer` to use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import a2fbench
from a2fbench.errors import A2FBenchError, ConfigError, RawDataError
from a2fbench.registry import did_you_mean, get_space
from a2fbench.sources.audio import read_audio
from a2fbench.sources.meshes import read_template_file
from a2fbench.store.templates import Template
from a2fbench.util.constants import SAMPLE_RATE
from a2fbench.util.guard import check_apart, check_output, show

from ..model import checkpoint as ck
from ..model.identity import IdentityTable

MIN_SECONDS = 0.5


class AudioInputError(RawDataError):
    """An input audio file cannot be animated (empty, too short, unreadable)."""


@dataclass
class InferPlan:
    """What :func:`plan_infer` checked: clip stem -> audio file, the heads (checkpoint entries), identity row,
    the user's template (or None), the output folder and the checkpoint's metadata."""

    stems: dict[str, Path]
    targets: list[dict]
    row: int
    template: Optional[Template]
    out: Path
    meta: dict


def plan_infer(checkpoint: str | os.PathLike, audio_files: Sequence[str | os.PathLike], out: str | os.PathLike,
               heads: str = "all", identity: str = "pivot",
               template: Optional[str | os.PathLike] = None, force: bool = False) -> InferPlan:
    """Check every argument of ``infer`` that can be checked without the model; raise one line on the first
    mistake. Audio files are checked for existence here and decoded later (before anything is written)."""
    if not audio_files:
        raise AudioInputError("expected at least one audio file to animate, found none; pass AUDIO...")
    stems: dict[str, Path] = {}
    for f in audio_files:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(f).stem) or "audio"
        if stem in stems:
            raise AudioInputError(f"{f}: two inputs share the name {stem!r} ({stems[stem]}); rename one")
        if not Path(f).is_file():
            raise AudioInputError(f"{f}: expected an audio file to animate, found "
                                  f"{'a folder' if Path(f).is_dir() else 'nothing'}; check the path")
        stems[stem] = Path(f)
    meta = ck.read_meta(checkpoint)  # heads and identities, without the weights
    targets = list(meta["datasets"]) if heads == "all" else [head_for(meta, h.strip()) for h in heads.split(",")
                                                              if h.strip()]
    if not targets:
        raise ConfigError(f"--heads: expected 'all' or dataset ids (e.g. D1,D3), found {heads!r}")
    row = IdentityTable(meta["model_spec"]["identities"]).lookup(identity)
    own = user_template(template, targets) if template is not None else None
    inputs = [checkpoint, *audio_files, template]
    out = check_apart(out, inputs)
    if out.exists() and not out.is_dir():
        raise AudioInputError(f"--out {show(out)}: expected a folder (OUT/<audio name>/), found a file; choose "
                              "another path")
    for stem in stems:  # an earlier clip folder is replaced only with --force
        check_output(out / stem, inputs, force=force)
    return InferPlan(stems, targets, row, own, out, meta)


def head_for(meta: dict, dataset: str) -> dict:
    """The checkpoint's entry for a dataset id/alias or a space name (raises with the known heads); ``meta``: the
    checkpoint's metadata (``Loaded.meta`` or :func:`checkpoint.read_meta`: no weights needed)."""
    spaces = [h["space"] for h in meta["model_spec"]["heads"]]
    datasets = meta["datasets"]
    if dataset in spaces:
        for d in datasets:
            if d["space"] == dataset:
                return d
    try:
        spec = a2fbench.get_spec(dataset)
    except A2FBenchError:
        spec = None
    if spec is not None:
        if spec.space not in spaces:
            raise ConfigError(f"unknown head: the checkpoint has no head for {spec.id}'s space {spec.space!r} (its "
                              f"heads: {', '.join(spaces)}); fine-tune one with `unitalker finetune --from CKPT "
                              f"--datasets {spec.id} ...`")
        for d in datasets:
            if d["id"] == spec.id:
                return d
        return {"id": spec.id, "space": spec.space, "fps": None, "scale": float(spec.unitalker.scale)}
    names = [d["id"] for d in datasets] + spaces
    aliases = {a: d["id"] for d in datasets for a in a2fbench.get_spec(d["id"]).aliases}
    raise ConfigError(f"unknown head {dataset!r}{did_you_mean(dataset, names + list(aliases))}; expected a dataset "
                      f"id or space of the checkpoint: {', '.join(names)}")


def read_input_audio(path: str | os.PathLike) -> np.ndarray:
    """Mono 16 kHz float32 of any common format; empty or under 0.5 s is an error naming the file."""

    x = read_audio(path)
    if x.size == 0:
        raise AudioInputError(f"{path}: expected audio to animate, found an empty file (0 samples); pass a clip of "
                              f"at least {MIN_SECONDS} s")
    secs = x.size / SAMPLE_RATE
    if secs < MIN_SECONDS:
        raise AudioInputError(f"{path}: expected at least {MIN_SECONDS} s of audio (UniTalker's shortest training "
                              f"clip), found {secs:.3f} s; pad it with silence or pass a longer clip")
    if not np.isfinite(x).all():
        raise AudioInputError(f"{path}: expected finite audio samples, found NaN or inf; re-encode the file")
    return x


def user_template(path: str | os.PathLike, targets: list[dict]) -> Template:
    """The --template mesh (native units, (D,)) for the one vertex head asked for."""
    verts = [d for d in targets if get_space(d["space"]).is_vertex]
    if len(targets) != 1 or len(verts) != 1:
        raise ConfigError(f"--template: expected exactly one vertex head (e.g. --heads D1), found "
                          f"{', '.join(d['id'] for d in targets) or 'none'}; pick the head whose topology the mesh has")
    sp = get_space(verts[0]["space"])
    return read_template_file(path, int(sp.n_vertices or 0), f"{sp.name}, the {verts[0]['id']} head")
