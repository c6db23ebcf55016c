"""The predictions folder: names, shapes, validation and an atomic writer.

A folder ``PRED/`` holds one ``.npy`` per sequence of the evaluated split:

* ``<seq_id>.npy``, or
* ``<seq_id>_condition_<subject>.npy`` (FaceFormer / CodeTalker naming; the training subject whose style was used), or
* ``<seq_id>_condition_<subject>_<k>.npy`` (FaceDiffuser with ``--num_samples`` > 1: sample k of one run);
* any of these behind a model prefix, ``<model>_<...>.npy`` (FaceDiffuser's ``--model``; ``prefix``).

Which files count (``docs/metrics.md``, "Predictions"): a plain ``<seq_id>.npy`` if present; otherwise, for a
sequence of a training subject (seen: BIWI Test-A), its own condition, which must be there; for any other
subject (unseen: BIWI Test-B, VOCASET test), one file per training subject, and the sequence is scored as the
mean over them, as CodeTalker predicts them. A condition that names no training subject is an error. Samples
``_<k>`` are runs: every sequence has the same ones and each run is scored whole. A plain file together with
condition files, or sample files together with files without an index, for the same sequence are errors.

Arrays: ``(T, 3V)`` or ``(T, V, 3)`` vertices in the dataset's units, or ``(T, P)`` parameters for a parameter
space (converted to vertices with the space's converter, like the ground truth). Any float dtype; loaded with
``allow_pickle=False``. Every problem is an :class:`~a2fbench.errors.PredictionError` naming the file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import PredictionError
from ..util.fsutil import read_json, write_json, write_npy
from ..util.guard import show

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
    """The provenance record of a predictions folder, or None (absent: it is optional); a record that is there
    but malformed, oversized or nested too deep is one line (:func:`~a2fbench.util.fsutil.read_json`)."""
    p = Path(pred_dir) / PROVENANCE_FILE
    try:
        d = read_json(p, what="the predictions record its maker wrote (delete it to evaluate without it)",
                      error=PredictionError)
    except (FileNotFoundError, IsADirectoryError):
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
    sample: Optional[int] = None  # FaceDiffuser's sample index k of ``_condition_<subject>_<k>``

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
    files: dict[str, list[PredFile]]  # seq_id -> the files that count (1, or one per condition and sample)
    ignored: list[str] = field(default_factory=list)
    samples: list[Optional[int]] = field(default_factory=lambda: [None])  # the runs' sample indices
    prefix: Optional[str] = None

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
            size = os.fstat(f.fileno()).st_size
    except (ValueError, OSError, EOFError) as e:
        raise PredictionError(f"{show(path)}: expected a NumPy .npy file, found an unreadable one ({show(e)}); "
                              "save predictions with numpy.save") from None
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    need = int(offset) + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if not dtype.hasobject and size < need:  # truncated: the header promises more than the body holds
        raise PredictionError(f"{show(path)}: expected {need - offset} bytes of data for shape {shape} {dtype}, found "
                              f"{size - offset} (a truncated file); copy or save it again")
    return shape, bool(fortran), dtype, int(offset)


def _shorten(names: Sequence[str], n: int = 5) -> str:
    s = ", ".join(names[:n])
    return s + (f" and {len(names) - n} more" if len(names) > n else "")


def parse_condition(rest: str, known: Sequence[str]) -> Optional[tuple[str, Optional[int]]]:
    """``<subject>`` or ``<subject>_<k>`` (a FaceDiffuser sample) -> (subject, k or None); None if the subject
    is not in ``known`` (an exact subject name wins over a sample reading).

    >>> parse_condition("F2", ["F2", "M3"]), parse_condition("F2_3", ["F2"]), parse_condition("banana", ["F2"])
    (('F2', None), ('F2', 3), None)
    """
    if rest in known:
        return rest, None
    m = _SAMPLE.fullmatch(rest)
    if m and m.group(1) in known:
        return m.group(1), int(m.group(2))
    return None


_SAMPLE = re.compile(r"(.+)_(\d+)")


def scan(pred_dir: str | os.PathLike, seq_ids: Sequence[str], subjects: dict[str, str], *, n_vertices: int,
         n_params: Optional[int] = None, ignore_extra: bool = False, what: str = "the split",
         training_subjects: Optional[Sequence[str]] = None, prefix: Optional[str] = None,
         skip: Sequence[str] = ()) -> PredictionSet:
    """Match a predictions folder to the sequences ``seq_ids`` and check every header (no data read).

    ``subjects`` maps sequence id -> subject. ``training_subjects``: the subjects a condition may name (default:
    those of ``subjects``); a sequence of one of them is *seen* and scored under its own condition, any other
    under every training-subject condition (averaged). ``prefix``: a model name every file starts with
    (FaceDiffuser's ``<model>_<seq>_condition_<subj>.npy``). ``n_params``: width of a parameter space (None for
    vertex spaces). ``skip``: sequences of the split the protocol leaves out; their files may be there or not,
    and are not read. Raises :class:`PredictionError` (one line) on any mismatch. See the module doc for the rules.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise PredictionError(f"expected a predictions folder at {root}, found "
                              f"{'a file' if root.exists() else 'nothing'}; pass the folder of <seq_id>.npy files")
    known = list(dict.fromkeys(training_subjects if training_subjects is not None else subjects.values()))
    hidden, others, npys = [], [], []
    for p in sorted(root.iterdir()):
        if p.name == PROVENANCE_FILE:
            continue  # the folder's own record (write_provenance): read by evaluate, nothing to warn about
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
    plain, conds, extra = _match(root, npys, set(seq_ids) | set(skip), known, prefix)
    chosen: dict[str, list[tuple[Path, Optional[str], Optional[int]]]] = {}
    missing = []
    for sid in seq_ids:
        c = conds.get(sid, {})
        if sid in plain and c:
            raise PredictionError(f"{root}: both {plain[sid].name} and {len(c)} {sid}{CONDITION_SEP}*.npy files; "
                                  "expected one kind per sequence; remove one")
        if sid in plain:
            chosen[sid] = [(plain[sid], None, None)]
        elif not c:
            missing.append(sid)
        else:
            chosen[sid], ignored = _choose(root, sid, subjects[sid], c, known)
            extra += ignored
    if missing:
        raise PredictionError(f"{root}: missing predictions for {len(missing)} of {len(seq_ids)} sequences of {what}: "
                              f"{_shorten(missing)}; expected <seq_id>.npy or <seq_id>{CONDITION_SEP}<subject>.npy")
    samples = _check_samples(root, chosen)
    if extra:
        if not ignore_extra:
            raise PredictionError(f"{root}: {len(extra)} files do not belong to {what}: {_shorten(sorted(extra))}; "
                                  "remove them or pass --ignore-extra")
        log.info("%s: ignoring %d files that do not belong to %s: %s", root, len(extra), what, _shorten(sorted(extra)))
    files = {sid: [_check_header(p, sid, cond, n_vertices, n_params, k) for p, cond, k in chosen[sid]]
             for sid in seq_ids}
    return PredictionSet(root, files, sorted(extra), samples, prefix)


def _match(root: Path, npys: list[Path], wanted: set[str], known: list[str], prefix: Optional[str]
           ) -> tuple[dict[str, Path], dict[str, dict[tuple[str, Optional[int]], Path]], list[str]]:
    """Sort file names into plain files, condition files (per sequence: (subject, sample) -> path) and extras;
    a condition naming no training subject is an error."""
    plain: dict[str, Path] = {}
    conds: dict[str, dict[tuple[str, Optional[int]], Path]] = {}
    extra: list[str] = []
    lead = f"{prefix}_" if prefix else ""
    for p in npys:
        stem = p.name[:-4]
        if not stem.startswith(lead):
            extra.append(p.name)
            continue
        stem = stem[len(lead):]
        if stem in wanted:
            plain[stem] = p
            continue
        sid, _, rest = stem.rpartition(CONDITION_SEP)
        if not sid or sid not in wanted:
            extra.append(p.name)
            continue
        got = parse_condition(rest, known)
        if got is None:
            raise PredictionError(f"{p}: expected a condition that is a training subject ({_shorten(known, 8)}), "
                                  f"optionally with a sample index (_<k>), found {rest!r}; rename or remove the file")
        conds.setdefault(sid, {})[got] = p
    return plain, conds, extra


def _choose(root: Path, sid: str, subject: str, c: dict[tuple[str, Optional[int]], Path], known: list[str]
            ) -> tuple[list[tuple[Path, Optional[str], Optional[int]]], list[str]]:
    """The files that count for one sequence given only condition files, and the ones to ignore."""
    ks = sorted({k for _, k in c}, key=lambda k: -1 if k is None else k)
    if None in ks and len(ks) > 1:
        with_k = next(p for (_, k), p in c.items() if k is not None)
        without = next(p for (_, k), p in c.items() if k is None)
        raise PredictionError(f"{root}: expected either samples ({sid}{CONDITION_SEP}<subject>_<k>.npy) or one file "
                              f"per condition for {sid}, found both ({with_k.name} and {without.name}); remove one kind")
    if subject in known:  # a seen subject: its own condition, and only that one
        own = {k: p for (cond, k), p in c.items() if cond == subject}
        if not own:
            raise PredictionError(f"{root}: expected {prediction_name(sid, subject)} ({sid} is of training subject "
                                  f"{subject}, scored under its own condition), found only conditions "
                                  f"{_shorten(sorted({cond for cond, _ in c}))}; predict {sid} conditioned on {subject}")
        ignored = [p.name for (cond, _), p in c.items() if cond != subject]
        return [(own[k], subject, k) for k in ks if k in own], ignored
    present = {cond for cond, _ in c}
    lacking = [t for t in known if t not in present]
    if lacking:  # an unseen subject: the mean over every training-subject condition, as CodeTalker writes them
        raise PredictionError(f"{root}: expected one prediction of {sid} (unseen subject {subject}) per training "
                              f"subject ({len(known)}), found {len(present)}; missing "
                              f"{_shorten([prediction_name(sid, t) for t in lacking], 3)}")
    holes = [(t, k) for t in known for k in ks if (t, k) not in c]
    if holes:
        t, k = holes[0]
        raise PredictionError(f"{root}: expected every condition of {sid} with the same samples, found "
                              f"{prediction_name(sid, f'{t}_{k}')} missing; write every sample of every condition")
    return [(c[(t, k)], t, k) for k in ks for t in known], []


def _check_samples(root: Path, chosen: dict[str, list[tuple[Path, Optional[str], Optional[int]]]]
                   ) -> list[Optional[int]]:
    """The sample indices of the run (``[None]`` without samples); every sequence must have the same ones."""
    sets = {sid: tuple(sorted({k for _, _, k in v}, key=lambda k: -1 if k is None else k)) for sid, v in chosen.items()}
    first = next(iter(sets.values()), (None,))
    for sid, ks in sets.items():
        if ks != first:
            a = next(s for s, v in sets.items() if v == first)

            def say(v: tuple) -> str:
                return "no sample index" if v == (None,) else "samples " + ", ".join(f"_{k}" for k in v)

            raise PredictionError(f"{root}: expected the same samples for every sequence, found {say(first)} for {a} "
                                  f"but {say(ks)} for {sid}; score complete runs (FaceDiffuser --num_samples)")
    return list(first)


def _check_header(path: Path, sid: str, cond: Optional[str], n_vertices: int, n_params: Optional[int],
                  sample: Optional[int] = None) -> PredFile:
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
    return PredFile(path, sid, cond, shape, dtype, fortran, offset, kind, sample)


