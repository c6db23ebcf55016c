"""The predictions folder: names, shapes, validation and an atomic writer.

A folder ``PRED/`` holds one ``.npy`` per sequence of the evaluated split:

* ``<seq_id>.npy``, or
* ``<seq_id>_condition_<subject>.npy`` (FaceFormer / CodeTalker naming; the subject whose style was used).

Which files count (``docs/metrics.md``, "Predictions"): a plain ``<seq_id>.npy`` if present; otherwise the
own-subject condition ``<seq_id>_condition_<its subject>.npy`` (Test-A, seen subjects); otherwise, for an unseen
subject (BIWI Test-B, VOCASET test), every condition present, and the sequence is scored as the mean over its
conditions. A plain file together with condition files for the same sequence is ambiguous and an error.

Arrays: ``(T, 3V)`` or ``(T, V, 3)`` vertices in the dataset's units, or ``(T, P)`` parameters for a parameter
space (converted to vertices with the space's converter, like the ground truth). Any float dtype; loaded with
``allow_pickle=False``. Every problem is an :class:`~a2fbench.errors.PredictionError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import PredictionError
from ..util.fsutil import write_json, write_npy

log = logging.getLogger("a2fbench.predictions")

CONDITION_SEP = "_condition_"
#: optional, written beside the predictions by the tool that made them (``unitalker predict``): what made them
PROVENANCE_FILE = ".a2fbench-predictions.json"
_SAFE_ID = re.compile(r"^[^/\\\x00]+$")


def prediction_name(seq_id: str, condition: Optional[str] = None) -> str:
    """File name of a prediction: ``<seq_id>.npy`` or ``<seq_id>_condition_<condition>.npy``."""
    return f"{seq_id}{CONDITION_SEP}{condition}.npy" if condition else f"{seq_id}.npy"


def write_prediction(pred_dir: str | os.PathLike, seq_id: str, array: np.ndarray,
                     condition: Optional[str] = None) -> Path:
    """Write one prediction atomically as ``PRED/<seq_id>.npy`` (or the ``_condition_`` name); returns the path.

    ``array``: ``(T, 3V)``, ``(T, V, 3)`` or ``(T, P)``, finite floats; torch tensors are accepted.
    """
    if not _SAFE_ID.match(seq_id) or seq_id.startswith(".") or (condition and not _SAFE_ID.match(condition)):
        raise PredictionError(f"expected a sequence id usable as a file name, found {seq_id!r}")
    if hasattr(array, "detach"):  # torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.dtype.kind != "f":
        raise PredictionError(f"{seq_id}: expected a float array, found dtype {a.dtype}")
    if a.ndim not in (2, 3) or a.shape[0] == 0 or (a.ndim == 3 and a.shape[2] != 3):
        raise PredictionError(f"{seq_id}: expected (T, D) or (T, V, 3) with T > 0, found shape {a.shape}")
    if not np.isfinite(a).all():
        raise PredictionError(f"{seq_id}: expected finite values, found NaN or inf; fix the model output")
    target = Path(pred_dir) / prediction_name(seq_id, condition)
    write_npy(target, a)
    return target


def write_provenance(pred_dir: str | os.PathLike, **info: Any) -> Path:
    """Record what made a predictions folder (``method``, ``checkpoint``, ...): ``PRED/.a2fbench-predictions.json``.
    ``evaluate`` copies it into the results (``predictions.source``); ``scan`` ignores it (hidden)."""
    target = Path(pred_dir) / PROVENANCE_FILE
    write_json(target, {k: v for k, v in info.items() if v is not None})
    return target


def read_provenance(pred_dir: str | os.PathLike) -> Optional[dict]:
    """The provenance record of a predictions folder, or None (absent or unreadable: it is optional)."""
    p = Path(pred_dir) / PROVENANCE_FILE
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


# ------------------------------------------------------------------------------------------- reading
@dataclass
class PredFile:
    """One prediction file, its header already checked."""

    path: Path
    seq_id: str
    condition: Optional[str]
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data
    kind: str = "vertices"  # or "parameters"

    @property
    def n_frames(self) -> int:
        return int(self.shape[0])

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])


@dataclass
class PredictionSet:
    """The files to score, per sequence in split order, plus what was ignored."""

    root: Path
    files: dict[str, list[PredFile]]  # seq_id -> the files that count (1, or one per condition)
    ignored: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return sum(len(v) for v in self.files.values())


def read_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of an ``.npy`` file, without reading its data."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise PredictionError(f"{path}: expected a NumPy .npy file, found an unreadable one ({e}); "
                              "save predictions with numpy.save") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), int(offset)


def _shorten(names: Sequence[str], n: int = 5) -> str:
    s = ", ".join(names[:n])
    return s + (f" and {len(names) - n} more" if len(names) > n else "")


def scan(pred_dir: str | os.PathLike, seq_ids: Sequence[str], subjects: dict[str, str], *, n_vertices: int,
         n_params: Optional[int] = None, ignore_extra: bool = False, what: str = "the split") -> PredictionSet:
    """Match a predictions folder to the sequences ``seq_ids`` and check every header (no data read).

    ``subjects`` maps sequence id -> subject (own-subject conditions). ``n_params``: width of a parameter
    space (None for vertex spaces). Raises :class:`PredictionError` (one line) on any mismatch.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise PredictionError(f"expected a predictions folder at {root}, found "
                              f"{'a file' if root.exists() else 'nothing'}; pass the folder of <seq_id>.npy files")
    hidden, others, npys = [], [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            hidden.append(p.name)
        elif p.suffix == ".npy" and p.is_file():
            npys.append(p)
        else:
            others.append(p.name + ("/" if p.is_dir() else ""))
    if hidden:
        log.info("%s: ignoring %d hidden entries (%s)", root, len(hidden), _shorten(hidden, 3))
    if others:
        raise PredictionError(f"{root}: expected only .npy files, found {len(others)} other entries "
                              f"({_shorten(others)}); move them out of the predictions folder")
    if not npys:
        raise PredictionError(f"{root}: expected one .npy per sequence of {what} ({len(seq_ids)} sequences, e.g. "
                              f"{prediction_name(seq_ids[0]) if seq_ids else '<seq_id>.npy'}), found an empty folder")
    wanted = set(seq_ids)
    plain: dict[str, Path] = {}
    conds: dict[str, dict[str, Path]] = {}
    extra: list[str] = []
    for p in npys:
        stem = p.name[:-4]
        if stem in wanted:
            plain[stem] = p
        elif CONDITION_SEP in stem and stem.rsplit(CONDITION_SEP, 1)[0] in wanted:
            sid, cond = stem.rsplit(CONDITION_SEP, 1)
            conds.setdefault(sid, {})[cond] = p
        else:
            extra.append(p.name)
    chosen: dict[str, list[tuple[Path, Optional[str]]]] = {}
    missing = []
    for sid in seq_ids:
        c = conds.get(sid, {})
        if sid in plain and c:
            raise PredictionError(f"{root}: both {sid}.npy and {len(c)} {sid}{CONDITION_SEP}*.npy files; expected "
                                  "one kind per sequence; remove one")
        if sid in plain:
            chosen[sid] = [(plain[sid], None)]
        elif subjects.get(sid) in c:
            own = subjects[sid]
            chosen[sid] = [(c[own], own)]
            extra += [c[k].name for k in sorted(c) if k != own]
        elif c:
            chosen[sid] = [(c[k], k) for k in sorted(c)]
        else:
            missing.append(sid)
    if missing:
        raise PredictionError(f"{root}: missing predictions for {len(missing)} of {len(seq_ids)} sequences of {what}: "
                              f"{_shorten(missing)}; expected <seq_id>.npy or <seq_id>{CONDITION_SEP}<subject>.npy")
    if extra:
        if not ignore_extra:
            raise PredictionError(f"{root}: {len(extra)} files do not belong to {what}: {_shorten(sorted(extra))}; "
                                  "remove them or pass --ignore-extra")
        log.info("%s: ignoring %d files that do not belong to %s: %s", root, len(extra), what, _shorten(sorted(extra)))
    files = {sid: [_check_header(p, sid, cond, n_vertices, n_params) for p, cond in chosen[sid]] for sid in seq_ids}
    return PredictionSet(root, files, sorted(extra))


def _check_header(path: Path, sid: str, cond: Optional[str], n_vertices: int, n_params: Optional[int]) -> PredFile:
    shape, fortran, dtype, offset = read_header(path)
    if dtype.hasobject:
        raise PredictionError(f"{path}: expected a numeric float array, found an object array (pickled Python "
                              "objects are not loaded); save a float32/float64 ndarray")
    if dtype.kind != "f":
        raise PredictionError(f"{path}: expected a float array, found dtype {dtype}; save float32 or float64")
    V = n_vertices
    want = f"(T, {3 * V}) or (T, {V}, 3)" + (f" vertices or (T, {n_params}) parameters" if n_params else "")
    if len(shape) == 2 and shape[1] == 3 * V or len(shape) == 3 and shape[1:] == (V, 3):
        kind = "vertices"
    elif n_params and len(shape) == 2 and shape[1] == n_params:
        kind = "parameters"
    else:
        found_v = ""
        if len(shape) == 3 and shape[2] == 3:
            found_v = f" ({shape[1]} vertices, expected V={V})"
        elif len(shape) == 2 and shape[1] % 3 == 0 and shape[1] != n_params:
            found_v = f" ({shape[1] // 3} vertices if xyz-flattened, expected V={V})"
        if len(shape) == 2 and shape[0] in (3 * V, n_params) and shape[1] not in (3 * V, n_params):
            found_v = f": frames on the second axis; it looks transposed, save array.T ({shape[1]}, {shape[0]})"
        elif len(shape) == 3 and shape[0] == V and shape[1] == 3:
            found_v = f": it looks like (V, 3, T); save array.transpose(2, 0, 1), shaped ({shape[2]}, {V}, 3)"
        raise PredictionError(f"{path}: expected shape {want}, found {shape}{found_v}")
    if shape[0] == 0:
        raise PredictionError(f"{path}: expected at least one frame, found an empty array")
    return PredFile(path, sid, cond, shape, dtype, fortran, offset, kind)


