"""What a raw folder holds once read, and the checked loaders every layout shares.

Takes: native files (``.npy`` motion, ``templates.pkl``, audio). Gives: :class:`RawData` (items with lazy
motion and audio loaders, templates, the layout's own split if any) and one-line errors that name the file:
missing audio, wrong vertex count, wrong dtype, truncated or object ``.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import RawDataError
from ..registry import DatasetSpec, get_space
from ..util import safepickle
from .audio import read_audio

AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")
#: written by ``a2fbench synth`` into every stand-in folder; ``prepare`` records it in the card, so a score on
#: synthetic data never passes for one on the real dataset
SYNTH_MARKER = ".a2fbench-synth.json"


@dataclass
class RawItem:
    id: str
    subject: str
    fps: float
    load_motion: Callable[[], np.ndarray]  # (T, D) at native fps, source dtype (may be a memmap view)
    load_audio: Callable[[], np.ndarray]  # mono float32 at 16 kHz
    files: list[Path]
    split: Optional[str] = None
    #: input files whose sha256 the loaders take from the bytes they read anyway (into ``digests``, path ->
    #: hex), so that ``prepare`` does not read them a second time to hash them
    hashed: list[Path] = field(default_factory=list)
    digests: dict[Path, str] = field(default_factory=dict)


@dataclass
class RawData:
    layout: str
    items: list[RawItem]
    templates: dict[str, np.ndarray]  # subject -> (D,)
    inputs: list[Path]
    dropped: list[dict] = field(default_factory=list)
    split_source: Optional[str] = None


# ---------------------------------------------------------------------------------------------- helpers
def load_motion_npy(path: Path, dim: int, dtypes: tuple[str, ...] | None = None) -> np.ndarray:
    """A (T, D) motion array from .npy, memory-mapped, shape/dtype-checked; (T, V, 3) is flattened.

    ``dtypes``: the accepted floating dtypes (the manifest's ``accepted_dtypes``); None accepts any float.
    """
    if not path.is_file():
        raise RawDataError(f"{path}: expected a motion .npy, found nothing; restore the file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        msg = str(e)
        what = "an object (pickled) array" if "pickle" in msg.lower() or "object" in msg.lower() else f"a truncated or corrupt file ({msg})"
        raise RawDataError(f"{path}: expected a numeric .npy array, found {what}; re-download or re-export it") from None
    except Exception as e:  # noqa: BLE001
        raise RawDataError(f"{path}: expected a numeric .npy array, found an unreadable file ({e}); re-download it") from None
    if not np.issubdtype(arr.dtype, np.floating) or (dtypes and arr.dtype.name not in dtypes):
        want = " or ".join(dtypes) if dtypes else "floating-point"
        raise RawDataError(f"{path}: expected {want} motion, found dtype {arr.dtype}; re-export it as the source "
                           "ships it (see `a2fbench info`)")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        v = f" ({dim // 3} vertices x 3)" if dim % 3 == 0 and dim > 100 else ""
        raise RawDataError(f"{path}: expected motion shaped (T, {dim}){v}, found {arr.shape}; check the dataset "
                           "and its preprocessing")
    return arr


def load_templates_pkl(path: Path, dim: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise RawDataError(f"{path}: expected the subject templates (templates.pkl), found nothing; restore it")
    d = safepickle.load(path)
    if not isinstance(d, dict):
        raise RawDataError(f"{path}: expected a dict subject -> (V, 3) template, found {type(d).__name__}")
    out = {}
    for k, v in d.items():
        a = np.asarray(v)
        if a.size != dim or not np.issubdtype(a.dtype, np.floating):
            raise RawDataError(f"{path}: expected template {k!r} with {dim} floats, found shape {a.shape} {a.dtype}")
        out[str(k)] = a.reshape(-1)
    return out


def find_audio(folder: Path, stem: str) -> Optional[Path]:
    for ext in AUDIO_EXT:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def subject_of(spec: DatasetSpec, seq_id: str) -> Optional[str]:
    parts = spec.parse_name(seq_id)
    return parts["subject"] if parts else None


def check_audio_header(path: Path) -> None:
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise RawDataError(f"{path}: expected a .npy of raw 16 kHz audio, found an unreadable file ({e})") from None
        if a.ndim not in (1, 2) or not np.issubdtype(a.dtype, np.number):
            raise RawDataError(f"{path}: expected 16 kHz samples shaped (N,) or (N, C), found {a.shape} {a.dtype}")
        return
    import soundfile as sf

    try:
        sf.info(str(path))
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        raise RawDataError(f"{path}: expected readable audio (wav/flac/ogg/mp3), found an unreadable file ({e})") from None


def paired_items(spec: DatasetSpec, files: list[Path], audio_folder: Callable[[Path], Path],
                 what: str) -> tuple[list[RawItem], list[dict], list[Path]]:
    """Items of a layout that pairs each motion ``<id>.npy`` with an audio file of the same stem (in the folder
    ``audio_folder(npy)``): names that do not match the manifest's pattern are dropped with a reason, a missing
    audio file is an error naming it. Returns (items, dropped, input files)."""

    dim = get_space(spec.space).dim
    items, dropped, inputs = [], [], []
    for f in files:
        sid = f.stem
        subj = subject_of(spec, sid)
        if subj is None:
            dropped.append({"id": sid, "reason": f"name does not match {spec.naming.pattern if spec.naming else ''}"})
            continue
        folder = audio_folder(f)
        wav = find_audio(folder, sid)
        if wav is None:
            raise RawDataError(f"{folder / (sid + '.wav')}: expected the audio of {what} {sid}, found nothing; restore "
                               f"it or remove the {what}'s .npy")
        items.append(RawItem(sid, subj, spec.fps_native, lambda f=f: load_motion_npy(f, dim, spec.accepted_dtypes),
                             lambda w=wav: read_audio(w), [f, wav]))
        inputs += [f, wav]
    return items, dropped, inputs
