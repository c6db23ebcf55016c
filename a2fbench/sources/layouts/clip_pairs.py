"""Layout ``clip_pairs``: 3D-ETF style ``<clip>.npy`` (T, P) beside ``<clip>.wav``, in any sub-folder; the
templates are zeros (parameters are absolute).

Takes: a raw folder (or, for the stand-in, a generator and sequence plans). Gives: :class:`RawData` (``read``),
the files in this layout (``write``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RawDataError
from ...registry import DatasetSpec, get_space
from ..audio import read_audio, write_wav
from ..raw import RawData, RawItem, find_audio, load_motion_npy, subject_of

NAME = "clip_pairs"


def detect(root: Path, spec: DatasetSpec) -> bool:
    return any(True for p in root.rglob("*.npy") if "resources" not in p.relative_to(root).parts)


def read(root: Path, spec: DatasetSpec) -> RawData:
    """3D-ETF style: ``<clip>.npy`` (T, P) beside ``<clip>.wav``, in any sub-folder."""
    dim = get_space(spec.space).dim
    files = sorted(p for p in root.rglob("*.npy") if "resources" not in p.relative_to(root).parts)
    items, dropped, inputs = [], [], []
    for f in files:
        sid = f.stem
        subj = subject_of(spec, sid)
        if subj is None:
            dropped.append({"id": sid, "reason": f"name does not match {spec.naming.pattern if spec.naming else ''}"})
            continue
        wav = find_audio(f.parent, sid)
        if wav is None:
            raise RawDataError(f"{f.with_suffix('.wav')}: expected the audio of clip {sid}, found nothing; restore it "
                               "or remove the clip's .npy")
        items.append(RawItem(sid, subj, spec.fps_native, lambda f=f: load_motion_npy(f, dim, spec.accepted_dtypes),
                             lambda w=wav: read_audio(w), [f, wav]))
        inputs += [f, wav]
    if not items:
        raise RawDataError(f"{root}: expected <clip>.npy + <clip>.wav pairs, found none; see `a2fbench info {spec.id}`")
    templates = {s: np.zeros(dim, np.float32) for s in sorted({i.subject for i in items})}
    return RawData("clip_pairs", items, templates, inputs, dropped)


def write(gen: Any, root: Path, plans: list, bar: Any) -> None:
    for p in plans:
        audio, coefs, _ = gen.sequence(p)
        np.save(root / f"{p.id}.npy", gen.params(p, coefs))
        write_wav(root / f"{p.id}.wav", audio, gen.spec.synth.audio_rate)
        bar.update(1)
