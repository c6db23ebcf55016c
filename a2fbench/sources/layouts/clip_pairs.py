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
from ..audio import write_wav
from ..raw import RawData, paired_items

NAME = "clip_pairs"


def detect(root: Path, spec: DatasetSpec) -> bool:
    return any(True for p in root.rglob("*.npy") if "resources" not in p.relative_to(root).parts)


def read(root: Path, spec: DatasetSpec) -> RawData:
    """3D-ETF style: ``<clip>.npy`` (T, P) beside ``<clip>.wav``, in any sub-folder."""
    dim = get_space(spec.space).dim
    files = sorted(p for p in root.rglob("*.npy") if "resources" not in p.relative_to(root).parts)
    items, dropped, inputs = paired_items(spec, files, lambda f: f.parent, "clip")
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
