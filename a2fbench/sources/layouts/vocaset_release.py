"""Layout ``vocaset_release``: the VOCASET training data as MPI ships it: ``data_verts.npy`` (N, V, 3),
``subj_seq_to_idx.pkl`` {subject: {sentence: {frame: row}}}, ``raw_audio_fixed.pkl`` {subject: {sentence:
{audio, sample_rate}}}, ``templates.pkl``.

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
from ...util import safepickle
from ..audio import resample, to_mono_float
from ..raw import RawData, RawItem, load_motion_npy, load_templates_pkl

NAME = "vocaset_release"
#: the layout of a corpus as its authors ship it (``a2fbench synth --layout raw``)
RAW_CORPUS = True


def detect(root: Path, spec: DatasetSpec) -> bool:
    return (root / "data_verts.npy").is_file()


def read(root: Path, spec: DatasetSpec) -> RawData:
    """VOCASET training data: ``data_verts.npy`` (N, V, 3), ``subj_seq_to_idx.pkl``, ``raw_audio_fixed.pkl``."""
    space = get_space(spec.space)
    dim = space.dim
    vpath = root / "data_verts.npy"
    n_rows = load_motion_npy(vpath, dim, spec.accepted_dtypes).shape[0]  # header check; the map is dropped
    idx = safepickle.load(root / "subj_seq_to_idx.pkl") if (root / "subj_seq_to_idx.pkl").is_file() else None
    if not isinstance(idx, dict):
        raise RawDataError(f"{root / 'subj_seq_to_idx.pkl'}: expected a dict subject -> sequence -> frame -> index, "
                           f"found {'nothing' if idx is None else type(idx).__name__}")
    apath = root / "raw_audio_fixed.pkl"
    if not apath.is_file():
        raise RawDataError(f"{apath}: expected the VOCASET audio pickle, found nothing; restore it")
    audio = safepickle.load(apath)
    templates = load_templates_pkl(root / "templates.pkl", dim)
    items, dropped = [], []
    for subj, seqs in idx.items():
        for seq, frames in seqs.items():
            sid = f"{subj}_{seq}"
            try:
                rows = np.array([frames[k] for k in sorted(frames)], dtype=np.int64)
            except Exception:  # noqa: BLE001
                raise RawDataError(f"{root / 'subj_seq_to_idx.pkl'}: expected frame -> index ints for {sid}") from None
            if rows.size == 0:
                dropped.append({"id": sid, "reason": "no frames in subj_seq_to_idx.pkl"})
                continue
            if rows.max() >= n_rows or rows.min() < 0:
                raise RawDataError(f"{vpath}: expected at least {rows.max() + 1} frames for {sid}, found "
                                   f"{n_rows}; the file is truncated or does not match subj_seq_to_idx.pkl")
            a = audio.get(subj, {}).get(seq) if isinstance(audio, dict) else None
            if not isinstance(a, dict) or "audio" not in a or "sample_rate" not in a:
                raise RawDataError(f"{apath}: expected audio and sample_rate for {sid}, found none; the audio pickle "
                                   "does not match the vertices")
            items.append(RawItem(sid, str(subj), spec.fps_native,
                                 lambda r=rows: _vocaset_rows(vpath, dim, spec.accepted_dtypes, r),
                                 lambda a=a: resample(to_mono_float(np.asarray(a["audio"])), int(a["sample_rate"])),
                                 [vpath, apath]))
    inputs = [vpath, apath, root / "subj_seq_to_idx.pkl", root / "templates.pkl"]
    return RawData("vocaset_release", items, templates, inputs, dropped)


def _vocaset_rows(vpath: Path, dim: int, dtypes: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """One sequence's frames of ``data_verts.npy``: a view of a map opened for this sequence only.

    A contiguous run of rows stays a lazy memmap view (decimation then reads only the frames it keeps); the
    map is released with the returned array, so resident memory never grows with the file.
    """
    verts = load_motion_npy(vpath, dim, dtypes)
    if rows.size > 1 and np.all(np.diff(rows) == 1):
        return verts[int(rows[0]): int(rows[-1]) + 1]
    return np.asarray(verts[rows])


def write(gen: Any, root: Path, plans: list, bar: Any) -> None:
    sr = gen.spec.synth.audio_rate
    V = gen.space.n_vertices or 0
    total = sum(int(round(p.seconds * gen.spec.fps_native)) for p in plans)
    verts = np.lib.format.open_memmap(root / "data_verts.npy", mode="w+", dtype=np.dtype(gen.spec.dtype),
                                      shape=(total, V, 3))
    idx: dict = {}
    audio_d: dict = {}
    templates = {}
    at = 0
    for p in plans:
        audio, coefs, _ = gen.sequence(p)
        m = gen.vertices(p, coefs).reshape(-1, V, 3)
        verts[at: at + len(m)] = m
        subj, seq = p.id.rsplit("_", 1)
        idx.setdefault(subj, {})[seq] = {f: at + f - 1 for f in range(1, len(m) + 1)}
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
        audio_d.setdefault(subj, {})[seq] = {"audio": pcm, "sample_rate": sr}
        templates[subj] = gen.template(subj).astype(np.dtype(gen.spec.dtype))
        at += len(m)
        bar.update(1)
    verts.flush()
    del verts
    for name, obj in (("subj_seq_to_idx.pkl", idx), ("raw_audio_fixed.pkl", audio_d), ("templates.pkl", templates)):
        with open(root / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
