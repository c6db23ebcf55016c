"""Readers of the native raw layouts, keyed by the manifest's ``layouts`` names.

Each reader turns a raw folder into :class:`RawData`: a list of items (id, subject, native fps, lazy motion
and audio loaders, the files they come from), the subject templates, and the split the layout itself
carries (UniTalker release JSONs) if any. Readers know file layouts, never dataset names: the four layouts
cover D0..D7, and a new layout is one function plus one entry in :data:`READERS`.

Every check names the file: missing audio, wrong vertex count, wrong dtype, truncated or object ``.npy``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import safepickle
from .audio import read_audio, resample, to_mono_float
from .errors import RawDataError
from .registry import DatasetSpec, RegionSource, get_space, space_channels

AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class RawItem:
    id: str
    subject: str
    fps: float
    load_motion: Callable[[], np.ndarray]  # (T, D) at native fps, source dtype (may be a memmap view)
    load_audio: Callable[[], np.ndarray]  # mono float32 at 16 kHz
    files: list[Path]
    split: Optional[str] = None


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


def _find_audio(folder: Path, stem: str) -> Optional[Path]:
    for ext in AUDIO_EXT:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _subject(spec: DatasetSpec, seq_id: str) -> Optional[str]:
    parts = spec.parse_name(seq_id)
    return parts["subject"] if parts else None


# ---------------------------------------------------------------------------------------------- layouts
def read_vertices_npy(root: Path, spec: DatasetSpec) -> RawData:
    """CodeTalker / FaceFormer layout: ``vertices_npy/<id>.npy``, ``wav/<id>.wav``, ``templates.pkl``."""
    dim = get_space(spec.space).dim
    files = sorted((root / "vertices_npy").glob("*.npy"))
    if not files:
        raise RawDataError(f"{root / 'vertices_npy'}: expected <sequence>.npy files, found none; see `a2fbench info {spec.id}`")
    templates = load_templates_pkl(root / "templates.pkl", dim)
    items, dropped, inputs = [], [], [root / "templates.pkl"]
    for f in files:
        sid = f.stem
        subj = _subject(spec, sid)
        if subj is None:
            dropped.append({"id": sid, "reason": f"name does not match {spec.naming.pattern if spec.naming else ''}"})
            continue
        wav = _find_audio(root / "wav", sid)
        if wav is None:
            raise RawDataError(f"{root / 'wav' / (sid + '.wav')}: expected the audio of sequence {sid}, found nothing; "
                               "restore it or remove the sequence's .npy")
        items.append(RawItem(sid, subj, spec.fps_native, lambda f=f: load_motion_npy(f, dim, spec.accepted_dtypes),
                             lambda w=wav: read_audio(w), [f, wav]))
        inputs += [f, wav]
    return RawData("vertices_npy", items, templates, inputs, dropped)


def read_vocaset_release(root: Path, spec: DatasetSpec) -> RawData:
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


def read_clip_pairs(root: Path, spec: DatasetSpec) -> RawData:
    """3D-ETF style: ``<clip>.npy`` (T, P) beside ``<clip>.wav``, in any sub-folder."""
    dim = get_space(spec.space).dim
    files = sorted(p for p in root.rglob("*.npy") if "resources" not in p.relative_to(root).parts)
    items, dropped, inputs = [], [], []
    for f in files:
        sid = f.stem
        subj = _subject(spec, sid)
        if subj is None:
            dropped.append({"id": sid, "reason": f"name does not match {spec.naming.pattern if spec.naming else ''}"})
            continue
        wav = _find_audio(f.parent, sid)
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


def read_unitalker_release(root: Path, spec: DatasetSpec) -> RawData:
    """UniTalker data release: ``{train,val,test}.json`` + files + ``id_template.npy``."""
    dim = get_space(spec.space).dim
    tpath = root / "id_template.npy"
    try:
        id_tmpl = np.load(tpath, allow_pickle=False)
    except FileNotFoundError:
        raise RawDataError(f"{tpath}: expected the release's id_template.npy, found nothing; restore it") from None
    except ValueError as e:
        raise RawDataError(f"{tpath}: expected a numeric array, found a corrupt file ({e})") from None
    id_tmpl = id_tmpl.reshape(id_tmpl.shape[0], -1)
    if id_tmpl.shape[1] != dim:
        raise RawDataError(f"{tpath}: expected rows of {dim} values, found {id_tmpl.shape}")
    items, inputs, dropped = [], [tpath], []
    templates: dict[str, np.ndarray] = {}
    id_list: Optional[list] = None
    for split in dict.fromkeys(["train", "val", "test", *spec.split_names]):
        jpath = root / f"{split}.json"
        if not jpath.is_file():
            continue
        try:
            meta = json.loads(jpath.read_text())
            ids = [str(x) for x in meta["info"]["id_list"]]
            data = meta["data"]
        except Exception as e:  # noqa: BLE001
            raise RawDataError(f"{jpath}: expected {{'info': {{'id_list': [...]}}, 'data': [...]}}, found {e!r}") from None
        if id_list is not None and ids != id_list:
            raise RawDataError(f"{jpath}: expected the same id_list in every split JSON, found a different one")
        id_list = ids
        if len(ids) > id_tmpl.shape[0]:
            raise RawDataError(f"{tpath}: expected at least {len(ids)} rows (id_list), found {id_tmpl.shape[0]}")
        inputs.append(jpath)
        for e in data:
            try:
                apath, mpath, lid = root / e["audio_path"], root / e["annot_path"], int(e["id"])
                fps = float(e.get("fps", spec.fps_native))
            except Exception:  # noqa: BLE001
                raise RawDataError(f"{jpath}: expected entries with annot_path, audio_path, id, fps; found {e!r}") from None
            if not 0 <= lid < len(ids):
                raise RawDataError(f"{jpath}: entry {e['annot_path']} has id {lid} outside id_list (0..{len(ids) - 1})")
            if not apath.is_file():
                raise RawDataError(f"{apath}: expected the audio of {e['annot_path']}, found nothing; restore it")
            subj = ids[lid]
            templates[subj] = id_tmpl[lid]
            sid = Path(e["annot_path"]).stem
            if not mpath.is_file():
                raise RawDataError(f"{mpath}: expected the annotation listed in {jpath.name}, found nothing; restore it")
            items.append(RawItem(sid, subj, fps, lambda m=mpath: load_motion_npy(m, dim, spec.accepted_dtypes),
                                 lambda a=apath: read_audio(a), [mpath, apath], split=split))
            inputs += [mpath, apath]
    if id_list is None:
        raise RawDataError(f"{root}: expected train.json / val.json / test.json, found none")
    return RawData("unitalker_release", items, templates, inputs, dropped, split_source="release_json")


READERS: dict[str, Callable[[Path, DatasetSpec], RawData]] = {
    "unitalker_release": read_unitalker_release,
    "vocaset_release": read_vocaset_release,
    "vertices_npy": read_vertices_npy,
    "clip_pairs": read_clip_pairs,
}

_DETECT: dict[str, Callable[[Path, DatasetSpec], bool]] = {
    "unitalker_release": lambda r, spec: any((r / f"{s}.json").is_file()
                                             for s in dict.fromkeys(["train", "val", "test", *spec.split_names])),
    "vocaset_release": lambda r, spec: (r / "data_verts.npy").is_file(),
    "vertices_npy": lambda r, spec: (r / "vertices_npy").is_dir(),
    "clip_pairs": lambda r, spec: any(True for p in r.rglob("*.npy") if "resources" not in p.relative_to(r).parts),
}


def _check_audio_header(path: Path) -> None:
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


def check_structure(root: Path, spec: DatasetSpec, progress: bool = False) -> dict:
    """Check a raw folder without preparing it: layout, names, pairing, templates, and every motion and audio
    header (shape and dtype), reading no sample data. Returns a summary; raises :class:`RawDataError`."""
    from tqdm.auto import tqdm

    layout = detect_layout(root, spec)
    raw = READERS[layout](root, spec)
    seen: set[Path] = set()
    for it in tqdm(raw.items, desc=f"check {spec.id}", unit="seq", disable=not progress, leave=False):
        m = it.load_motion()
        del m
        for f in it.files[1:]:
            if f.suffix.lower() in (*AUDIO_EXT, ".npy") and f not in seen:
                _check_audio_header(f)
                seen.add(f)
    from .spaces import n_vertices, read_space_files

    space = get_space(spec.space)
    arrays = read_space_files(space, root)
    rs = spec.regions.sets[spec.regions.default]
    regions = {w: int(load_region(root, getattr(rs, w), n_vertices(space, arrays), arrays, spec).size)
               for w in ("lips", "upper")}
    return {"layout": layout, "sequences": len(raw.items), "subjects": len({i.subject for i in raw.items}),
            "regions": regions, "dropped": raw.dropped}


def detect_layout(root: Path, spec: DatasetSpec) -> str:
    """The most specific of the manifest's layouts present in ``root``."""
    if not root.is_dir():
        raise RawDataError(f"expected the raw {spec.id} folder at {root}, found nothing; run `a2fbench download "
                           f"{spec.id}` (or `a2fbench synth {spec.id}`) first")
    for name in READERS:
        if name in spec.layouts and _DETECT[name](root, spec):
            return name
    raise RawDataError(f"{root}: expected one of the {spec.id} layouts ({', '.join(spec.layouts)}), found none of "
                       f"their files; see `a2fbench info {spec.id}`")


# ---------------------------------------------------------------------------------------------- regions
def load_region(root: Path, src: RegionSource, n_vertices: int, space_arrays: dict, spec: DatasetSpec) -> np.ndarray:
    """Vertex indices of one region, from a file in its published format."""
    p = root / src.file
    if src.format == "basis_channels":
        from .spaces import basis_region

        chans = space_channels(get_space(spec.space)) or []
        idx = basis_region(space_arrays, chans, src.channels, src.threshold or 0.1)
    else:
        if not p.is_file():
            raise RawDataError(f"{p}: expected the region file ({src.format}), found nothing; run `a2fbench download "
                               f"{spec.id}` or see `a2fbench info {spec.id}`")
        try:
            if src.format == "index_list":
                txt = p.read_text().replace(",", " ").split()
                idx = np.array([int(t) for t in txt], dtype=np.int64)
            elif src.format == "index_npy":
                idx = np.load(p, allow_pickle=False).astype(np.int64).reshape(-1)
            elif src.format == "weights":
                w = np.loadtxt(p, dtype=np.float64).reshape(-1)
                if w.size != n_vertices:
                    raise RawDataError(f"{p}: expected {n_vertices} weights (one per vertex), found {w.size}")
                idx = np.flatnonzero(w > (src.threshold if src.threshold is not None else 0.0)).astype(np.int64)
            elif src.format == "pickle_dict":
                d = safepickle.load(p)
                missing = [k for k in src.keys if k not in d]
                if missing:
                    raise RawDataError(f"{p}: expected keys {list(src.keys)}, missing {missing}")
                parts = [np.asarray(d[k], np.int64).reshape(-1) for k in src.keys]
                idx = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
            else:  # pragma: no cover - schema forbids
                raise RawDataError(f"unknown region format {src.format}")
        except RawDataError:
            raise
        except Exception as e:  # noqa: BLE001
            raise RawDataError(f"{p}: expected a {src.format} region file, found an unreadable one ({e})") from None
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n_vertices:
        raise RawDataError(f"{p}: expected vertex indices in 0..{n_vertices - 1}, found "
                           f"{'none' if idx.size == 0 else f'{idx.min()}..{idx.max()}'}; wrong topology?")
    return idx
