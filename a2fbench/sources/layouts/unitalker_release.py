"""Layout ``unitalker_release``: the UniTalker data release: ``{train,val,test}.json`` ({info: {id_list},
data: [{annot_path, audio_path, id, fps, ...}]}), the files they list and ``id_template.npy`` (one row per id).

Takes: a raw folder (or, for the stand-in, a generator and sequence plans). Gives: :class:`RawData` (``read``,
with the release's own split), the files in this layout (``write``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...errors import RawDataError
from ...registry import DatasetSpec, get_space
from ...util.constants import SAMPLE_RATE
from ...util.fsutil import read_json
from ..audio import read_audio, resample, write_wav
from ..raw import RawData, RawItem, load_motion_npy

NAME = "unitalker_release"


def detect(root: Path, spec: DatasetSpec) -> bool:
    return any((root / f"{s}.json").is_file() for s in dict.fromkeys(["train", "val", "test", *spec.split_names]))


def read(root: Path, spec: DatasetSpec) -> RawData:
    """UniTalker data release: ``{train,val,test}.json`` + files + ``id_template.npy``."""
    dim = get_space(spec.space).dim
    tpath = root / "id_template.npy"
    try:
        id_tmpl = np.load(tpath, allow_pickle=False)
    except FileNotFoundError:
        raise RawDataError(f"{tpath}: expected the release's id_template.npy, found nothing; restore it") from None
    except (ValueError, EOFError) as e:
        raise RawDataError(f"{tpath}: expected a numeric array, found a corrupt file ({e})") from None
    if id_tmpl.dtype.kind not in "fiu" or not np.isfinite(id_tmpl).all():
        raise RawDataError(f"{tpath}: expected finite numeric templates, found NaN, inf or non-numbers; restore the "
                           "release file")
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
            meta = read_json(jpath, what="a UniTalker release split JSON", error=RawDataError)
            ids = [str(x) for x in meta["info"]["id_list"]]
            data = meta["data"]
        except RawDataError:
            raise
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


def write(gen: Any, root: Path, plans: list, bar: Any) -> None:
    subjects = list(dict.fromkeys(p.subject for p in plans))
    ids = {s: i for i, s in enumerate(subjects)}
    entries: dict[str, list] = {s: [] for s in gen.spec.split_names}
    sums: dict[str, list] = {s: [] for s in subjects}
    for p in plans:
        split = p.split or "train"
        (root / split).mkdir(parents=True, exist_ok=True)
        audio, coefs, _ = gen.sequence(p)
        motion = gen.params(p, coefs) if not gen.space.is_vertex else gen.vertices(p, coefs)
        np.save(root / split / f"{p.id}.npy", motion)
        sums[p.subject].append(motion)
        if gen.spec.synth.audio_format == "npy":
            apath = f"{split}/{p.id}_audio.npy"
            np.save(root / apath, resample(audio, gen.spec.synth.audio_rate, SAMPLE_RATE))
        else:
            apath = f"{split}/{p.id}.wav"
            write_wav(root / apath, audio, gen.spec.synth.audio_rate)
        entries[split].append({"annot_type": gen.spec.space, "annot_path": f"{split}/{p.id}.npy",
                               "audio_path": apath, "id": ids[p.subject], "fps": int(gen.spec.fps_native),
                               "dataset": gen.spec.id})
        bar.update(1)
    for split, data in entries.items():
        with open(root / f"{split}.json", "w") as fh:
            json.dump({"info": {"id_list": subjects}, "data": data}, fh, indent=1)
    tmpl = np.stack([np.concatenate(sums[s]).mean(0) for s in subjects]).astype(np.float32)
    np.save(root / "id_template.npy", tmpl)
