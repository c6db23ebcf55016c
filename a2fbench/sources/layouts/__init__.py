"""The native raw layouts, one module each, keyed by the manifest's ``layouts`` names.

Each layout module holds both directions of one file layout: ``read(root, spec) -> RawData`` (what ``prepare``
reads), ``write(gen, root, plans, bar)`` (the stand-in ``synth`` writes) and ``detect(root, spec)``. Layouts
know file layouts, never dataset names: five of them cover D0..D7, and a new layout is one module plus one
entry in :data:`LAYOUTS`.

Takes: a raw folder ``RAW/<id>/``. Gives: the layout present (:func:`detect_layout`), its reader and writer,
and a structure check that reads headers only (:func:`check_structure`).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ...errors import RawDataError
from ...registry import DatasetSpec, get_space
from ...spaces import n_vertices, read_space_files
from ...util.progress import bar as progress_bar
from ..raw import AUDIO_EXT, RawData, check_audio_header
from ..regions import load_region
from . import biwi_raw, clip_pairs, unitalker_release, vertices_npy, vocaset_release

#: in detection order: the most specific layout first. A folder holding both CodeTalker's processed outputs and
#: the raw BIWI corpus (CodeTalker's recipe writes them side by side) is read through the processed outputs, as
#: before the raw route existed; move ``vertices_npy/`` away to prepare from the raw corpus.
LAYOUTS: dict[str, ModuleType] = {m.NAME: m for m in (unitalker_release, vocaset_release, vertices_npy, biwi_raw,
                                                       clip_pairs)}


def read(layout: str, root: Path, spec: DatasetSpec) -> RawData:
    return LAYOUTS[layout].read(root, spec)


def detect_layout(root: Path, spec: DatasetSpec) -> str:
    """The most specific of the manifest's layouts present in ``root``."""
    if not root.is_dir():
        raise RawDataError(f"expected the raw {spec.id} folder at {root}, found nothing; run `a2fbench download "
                           f"{spec.id}` (or `a2fbench synth {spec.id}`) first")
    for name, mod in LAYOUTS.items():
        if name in spec.layouts and mod.detect(root, spec):
            return name
    raise RawDataError(f"{root}: expected one of the {spec.id} layouts ({', '.join(spec.layouts)}), found none of "
                       f"their files; see `a2fbench info {spec.id}`")


def check_structure(root: Path, spec: DatasetSpec, progress: bool = False) -> dict:
    """Check a raw folder without preparing it: layout, names, pairing, templates, and every motion and audio
    header (shape and dtype), reading no sample data. Returns a summary; raises :class:`RawDataError`."""
    layout = detect_layout(root, spec)
    raw = read(layout, root, spec)
    seen: set[Path] = set()
    for it in progress_bar(raw.items, desc=f"check {spec.id}", unit="seq", show=progress, leave=False):
        m = it.load_motion()
        del m
        for f in it.files[1:]:
            if f.suffix.lower() in (*AUDIO_EXT, ".npy") and f not in seen:
                check_audio_header(f)
                seen.add(f)
    space = get_space(spec.space)
    arrays = read_space_files(space, root)
    rs = spec.regions.sets[spec.regions.default]
    regions = {w: int(load_region(root, getattr(rs, w), n_vertices(space, arrays), arrays, spec).size)
               for w in ("lips", "upper")}
    return {"layout": layout, "sequences": len(raw.items), "subjects": len({i.subject for i in raw.items}),
            "regions": regions, "dropped": raw.dropped}
