"""Layout ``vertices_npy``: CodeTalker / FaceFormer processing (BIWI, VOCASET processed, Multiface in MeshTalk
topology): ``vertices_npy/<id>.npy`` (T, 3V), ``wav/<id>.wav``, ``templates.pkl`` {subject: (V, 3)}.

Takes: a raw folder (or, for the stand-in, a generator and sequence plans). Gives: :class:`RawData` (``read``),
the files in this layout (``write``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RawDataError
from ...registry import DatasetSpec, get_space
from ..audio import write_wav
from ..raw import (
    RawData,
    load_templates_pkl,
    paired_items,
)

NAME = "vertices_npy"


def detect(root: Path, spec: DatasetSpec) -> bool:
    return (root / "vertices_npy").is_dir()


def read(root: Path, spec: DatasetSpec) -> RawData:
    """CodeTalker / FaceFormer layout: ``vertices_npy/<id>.npy``, ``wav/<id>.wav``, ``templates.pkl``."""
    dim = get_space(spec.space).dim
    files = sorted((root / "vertices_npy").glob("*.npy"))
    if not files:
        raise RawDataError(f"{root / 'vertices_npy'}: expected <sequence>.npy files, found none; see `a2fbench info {spec.id}`")
    templates = load_templates_pkl(root / "templates.pkl", dim)
    items, dropped, inputs = paired_items(spec, files, lambda f: root / "wav", "sequence")
    inputs.insert(0, root / "templates.pkl")
    return RawData("vertices_npy", items, templates, inputs, dropped)


def write(gen: Any, root: Path, plans: list, bar: Any) -> None:
    (root / "vertices_npy").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    templates = {}
    for p in plans:
        audio, coefs, _ = gen.sequence(p)
        np.save(root / "vertices_npy" / f"{p.id}.npy", gen.vertices(p, coefs))
        write_wav(root / "wav" / f"{p.id}.wav", audio, gen.spec.synth.audio_rate)
        templates[p.subject] = gen.template(p.subject).astype(np.dtype(gen.spec.dtype))
        bar.update(1)
    with open(root / "templates.pkl", "wb") as fh:
        pickle.dump(templates, fh, protocol=2)
