"""The sidecar of an ``unitalker infer`` output: what infer knew, for render and export to use.

An infer output is one folder per clip, ``OUT/<clip>/``, holding:

* ``<D>.npy``: the motion under head ``D`` (T, dim) in the dataset's native units;
* ``<D>.template.npz``: the neutral template that motion was built on (key ``template``, (dim,) float64),
  whether it came from ``--template``, the identity's own template or the dataset's mean template;
* ``audio.wav``: the clip's audio as the model heard it (mono, 16 kHz, 16-bit PCM);
* ``infer.json``: this record (fields in docs/outputs.md, "infer outputs"):
  ``{"schema": 1, "made_by": "unitalker infer", "audio": {"file", "source", "sample_rate", "seconds"},
  "checkpoint", "identity", "identity_row", "created", "heads": {D: {"file", "space", "fps", "frames", "shape",
  "template": {"file", "source", "detail"}}}}``.

``render`` and ``export`` read it whenever INPUT is such a folder or a ``<D>.npy`` inside one: the video gets the
clip's sound and the export is built on the template the motion was made on (not the store's). Folders written
before the sidecar (``meta.json``, audio path only) are still read for their audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import OutputError
from ..store.templates import Template
from ..util.fsutil import atomic_path, read_json, write_json

SIDECAR = "infer.json"
LEGACY = "meta.json"
AUDIO_FILE = "audio.wav"
SCHEMA = 1


def template_file(head_id: str) -> str:
    return f"{head_id}.template.npz"


def write_template(folder: Path, head_id: str, template: Template) -> dict:
    """Save the template a head's motion was built on beside it; returns its record for the sidecar."""
    with atomic_path(folder / template_file(head_id)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, template=np.asarray(template.values, np.float64).reshape(-1))
    return {"file": template_file(head_id), **template.record()}


def write_sidecar(folder: Path, record: dict[str, Any]) -> Path:
    """Write ``folder/infer.json`` (atomically) with the schema and maker stamped in."""
    target = folder / SIDECAR
    write_json(target, {"schema": SCHEMA, "made_by": "unitalker infer", **record})
    return target


def is_infer_folder(folder: Path) -> bool:
    return (folder / SIDECAR).is_file() or (folder / LEGACY).is_file()


@dataclass
class ClipSidecar:
    """What an infer folder's sidecar says about one head's motion file."""

    folder: Path
    audio: Optional[Path]           # the clip's audio: the folder's copy, else the original file if still there
    template: Optional[Template]    # the template the motion was built on (None: an older folder without it)


def _read(folder: Path) -> Optional[dict]:
    """The folder's sidecar (or older ``meta.json``); None where it has neither. One present but malformed, too deep
    or too large is one line (:func:`~a2fbench.util.fsutil.read_json`), never silently skipped."""
    for name in (SIDECAR, LEGACY):
        try:
            d = read_json(folder / name, what=f"the {name} `unitalker infer` wrote", error=OutputError)
        except FileNotFoundError:
            continue
        return d if isinstance(d, dict) else None
    return None


def for_motion(npy: Path) -> Optional[ClipSidecar]:
    """The sidecar facts for ``<folder>/<D>.npy`` when ``<folder>`` is an infer output, else None. A template file
    the sidecar names but that is missing or damaged is an error (silently using the store's template instead is
    what the sidecar exists to prevent)."""
    folder = npy.parent
    rec = _read(folder)
    if rec is None:
        return None
    audio = None
    a = rec.get("audio")
    if isinstance(a, dict):
        own = folder / str(a.get("file") or "")
        src = Path(str(a.get("source") or ""))
        audio = own if a.get("file") and own.is_file() else (src if a.get("source") and src.is_file() else None)
    elif isinstance(a, str) and Path(a).is_file():  # the older meta.json: the audio's path only
        audio = Path(a)
    template = None
    head = (rec.get("heads") or {}).get(npy.stem) if isinstance(rec.get("heads"), dict) else None
    t = head.get("template") if isinstance(head, dict) else None
    if isinstance(t, dict) and t.get("file"):
        try:
            with np.load(folder / str(t["file"]), allow_pickle=False) as z:
                values = np.asarray(z["template"], np.float64).reshape(-1)
            template = Template(values, str(t.get("source") or "file"), str(t.get("detail") or folder / t["file"]))
        except (OSError, ValueError, KeyError) as e:
            raise OutputError(f"{folder / SIDECAR} names {t['file']} as the template {npy.name} was made on, found "
                              f"{'nothing' if isinstance(e, FileNotFoundError) else 'an unreadable file'}; run "
                              "`unitalker infer` again, or delete the sidecar to use the store's template") from None
    return ClipSidecar(folder, audio, template)
