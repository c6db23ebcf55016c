"""What every output needs to know about a dataset (its "head"), and the motion files a user hands in.

:class:`Head`: the prepared store's space and converter, fps, faces (store ``mesh/faces``, a ``--mesh`` file,
or the frontal triangulation of :mod:`.topology`), a template to frame the camera on, and the units of an
error. :func:`collect_inputs`: INPUT as one ``.npy``, a predictions folder (``<seq_id>.npy``), or an ``infer``
output (``<stem>/<dataset>.npy`` + ``meta.json``, or a folder of those). :class:`Frames`: a clip as a lazy
sequence of (V, 3) vertex frames, converted from parameters block by block, so a clip of any length is never
held whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..errors import OutputError
from ..registry import Space, all_specs, get_space, get_spec, space_channels
from ..scoring.predictions import CONDITION_SEP, read_header
from ..spaces import converter
from ..store import Dataset, open_dataset
from ..store.templates import Template, choose_template
from ..util.fsutil import read_json
from ..util.guard import show
from .topology import FALLBACK_NOTE, frontal_triangulation

#: frames read (and converted) at a time
BLOCK = 128
#: vertex units -> (factor to the unit shown, unit shown) for error colour bars
_TO_MM = {"m": (1000.0, "mm"), "cm": (10.0, "mm"), "mm": (1.0, "mm")}


@dataclass
class Head:
    """A prepared dataset seen by the outputs (see module doc). Open with :func:`open_head`."""

    ds: Dataset
    space: Space
    conv: Any  # numpy converter of a parameter space, None for vertex spaces
    faces: np.ndarray
    faces_note: Optional[str]  # None when the faces are the published topology
    n_vertices: int
    fps: float
    error_scale: float
    error_units: str
    _templates: dict = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.ds.id

    @property
    def channels(self) -> Optional[list[str]]:
        return space_channels(self.space)

    def template(self, seq_id: Optional[str] = None, given: Optional[Template] = None) -> np.ndarray:
        """(V, 3) neutral, in vertices, chosen by :func:`a2fbench.store.templates.choose_template`: ``given`` (the
        template an input was made on), else ``seq_id``'s subject; with neither (an input that is no sequence of the
        store and carries no template) the store's first subject, which only frames the camera."""
        if given is None:
            subject = self.ds[seq_id].subject if seq_id in self.ds else self.ds.subjects[0]
            key = f"subject:{subject}"
        else:
            subject, key = None, f"{given.source}:{given.detail}"
        if key not in self._templates:
            t = np.asarray(choose_template(self.ds, subject=subject, given=given).values, np.float64)
            self._templates[key] = self.to_vertices(t[None])[0]
        return self._templates[key]

    def to_vertices(self, block: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(n, D) motion rows of this space -> (n, V, 3) vertices of ``dtype``."""
        b = np.asarray(block)
        if self.conv is None:
            return b.reshape(len(b), -1, 3).astype(dtype, copy=False)
        return self.conv.to_vertices(b.astype(np.float64)).astype(dtype, copy=False)

    def close(self) -> None:
        self.ds.close()


def error_units(vertex_units: str, kind: str) -> tuple[float, str]:
    """(factor, unit) in which distances of a space are shown: millimetres when the coordinates have a length
    unit, else the coordinates' own unit (BIWI's area-normalised units, a basis of unknown units)."""
    if vertex_units in _TO_MM:
        return _TO_MM[vertex_units]
    if kind == "blendshape":
        return 1.0, "basis units"
    return 1.0, vertex_units.replace("_", " ") + " units"


def open_head(data: str | os.PathLike, dataset: str, mesh: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Head:
    """The head of a prepared dataset. ``mesh``: ``(vertices, faces)`` of a ``--mesh`` file, used instead of the
    store's faces (checked: same vertex count)."""
    ds = open_dataset(data, get_spec(dataset).id)
    card = ds.card
    space = get_space(card["space"])
    conv = converter(space, ds.space_arrays()) if not space.is_vertex else None
    V = int(card["n_vertices"])
    if mesh is not None:
        if len(mesh[0]) != V:
            ds.close()
            raise OutputError(f"--mesh: expected the {V}-vertex topology of {ds.id} ({space.name}), found "
                              f"{len(mesh[0])} vertices; pass the dataset's own mesh file")
        faces = np.asarray(mesh[1], np.int64)
    else:
        faces = ds.faces()
    scale, label = error_units(str(card.get("vertex_units") or card.get("units") or ""), space.kind)
    head = Head(ds, space, conv, faces if faces is not None else np.zeros((0, 3), np.int64), None, V,
                float(card["fps"]), scale, label)
    if faces is None:
        head.faces = frontal_triangulation(head.template())
        head.faces_note = f"{ds.id}: {FALLBACK_NOTE}; {card.get('mesh', {}).get('note', 'no mesh in the store')}"
    return head


# --------------------------------------------------------------------------------------------- inputs
@dataclass
class InputItem:
    """One motion file to render or export."""

    name: str  # output name (sequence id, or infer stem)
    path: Path
    seq_id: Optional[str]  # the store sequence it predicts, when the name says so
    audio: Optional[Path] = None  # infer outputs: the audio that was animated


def collect_inputs(src: str | os.PathLike, head: Head) -> tuple[list[InputItem], bool]:
    """(items, one_file) for INPUT: a ``.npy`` file, a predictions folder, an ``infer`` stem folder (``meta.json``
    + ``<dataset>.npy``) or a folder of those. ``one_file``: the output is a file, not a folder."""
    p = Path(src)
    if p.is_file():
        if p.suffix != ".npy":
            raise OutputError(f"{p}: expected a .npy motion file or a folder of them, found a {p.suffix or 'plain'} "
                              "file")
        return [_item(p.stem, p, head)], True
    if not p.is_dir():
        raise OutputError(f"{p}: expected a .npy file, a predictions folder or an infer output folder, found nothing")
    if (p / "meta.json").is_file():
        return [_infer_item(p, head)], False
    stems = sorted(d for d in p.iterdir() if d.is_dir() and (d / "meta.json").is_file())
    if stems:
        return [_infer_item(d, head) for d in stems], False
    npys = sorted(f for f in p.iterdir() if f.suffix == ".npy" and f.is_file() and not f.name.startswith("."))
    if not npys:
        raise OutputError(f"{p}: expected .npy motion files or infer output folders (meta.json), found none")
    return [_item(f.stem, f, head) for f in npys], False


def _item(stem: str, path: Path, head: Head) -> InputItem:
    sid = stem.rsplit(CONDITION_SEP, 1)[0] if CONDITION_SEP in stem else stem
    return InputItem(stem, path, sid if sid in head.ds else None)


def _infer_item(folder: Path, head: Head) -> InputItem:
    f = folder / f"{head.id}.npy"
    if not f.is_file():
        have = sorted(x.stem for x in folder.glob("*.npy"))
        raise OutputError(f"{folder}: expected {f.name} (the {head.id} head of `unitalker infer`), found "
                          f"{', '.join(have) or 'no heads'}; infer with --heads {head.id} or pick --dataset among "
                          "those")
    try:
        meta = read_json(folder / "meta.json", what="the meta.json `unitalker infer` wrote", error=OutputError)
    except OSError:
        meta = {}
    audio = Path(meta["audio"]) if isinstance(meta.get("audio"), str) else None
    return InputItem(folder.name, f, None, audio if audio is not None and audio.is_file() else None)


def _spaces_with(n_vertices: int) -> list[str]:
    """Dataset ids whose topology has ``n_vertices`` (vertex spaces), for a did-you-mean."""
    return [s.id for s in all_specs() if get_space(s.space).is_vertex and get_space(s.space).n_vertices == n_vertices]


class Frames:
    """A motion file as a sequence of (V, 3) frames (``len``, ``[t]``) of ``dtype`` (float32 to draw, float64 to
    export), read and converted in blocks of ``block`` rows (memory-mapped ``.npy``: a long clip is never
    loaded whole)."""

    def __init__(self, rows: Any, head: Head, kind: str, block: Optional[int] = None, n: Optional[int] = None,
                 source: str = "motion", dtype: Any = np.float32):
        self.rows, self.head, self.kind, self.block, self.source = rows, head, kind, block or BLOCK, source
        self.dtype = dtype
        self.n = len(rows) if n is None else n
        self._cache: tuple[int, Optional[np.ndarray]] = (-1, None)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, t: int) -> np.ndarray:
        if not -self.n <= t < self.n:
            raise IndexError(t)
        t %= self.n
        return self.block_at(t // self.block)[t % self.block]

    def block_at(self, b: int) -> np.ndarray:
        """Frames ``b * block`` to ``(b + 1) * block`` (fewer at the end) as (n, V, 3) float32."""
        if self._cache[0] != b:
            rows = np.asarray(self.rows[b * self.block:min((b + 1) * self.block, self.n)])
            rows = self._finite(rows.reshape(len(rows), -1), b * self.block)
            self._cache = (b, self.head.to_vertices(rows, self.dtype) if self.kind == "parameters"
                           else rows.reshape(len(rows), -1, 3).astype(self.dtype))
        return self._cache[1]  # type: ignore[return-value]

    def blocks(self) -> Iterator[np.ndarray]:
        """The clip as consecutive (n, V, 3) blocks."""
        for b in range((self.n + self.block - 1) // self.block):
            yield self.block_at(b)

    def rows_array(self) -> np.ndarray:
        """All rows (T, D) in memory (parameters, or flattened vertices), finite or refused."""
        return self._finite(np.asarray(self.rows[: self.n]).reshape(self.n, -1), 0)

    def _finite(self, rows: np.ndarray, first: int) -> np.ndarray:
        """``rows`` (frames ``first``...), or one line naming the source and the first frame with NaN or inf."""
        if not np.isfinite(rows).all():
            bad = first + int(np.argwhere(~np.isfinite(rows))[0][0])
            raise OutputError(f"{show(self.source)}: expected finite motion, found NaN or inf at frame {bad}; fix the "
                              "model output")
        return rows

    def all(self) -> np.ndarray:
        """All frames (T, V, 3) in memory (exports that need the whole clip)."""
        return np.concatenate(list(self.blocks())) if self.n else np.zeros((0, self.head.n_vertices, 3), self.dtype)

    def truncated(self, n: int) -> "Frames":
        return Frames(self.rows, self.head, self.kind, self.block, min(n, self.n), self.source, self.dtype)


def load_frames(item: InputItem, head: Head, dtype: Any = np.float32) -> Frames:
    """The item's motion as :class:`Frames`; one line naming the file when its shape fits no head of the dataset."""
    shape, fortran, dtype, _ = read_header(item.path)
    V, P = head.n_vertices, (None if head.space.is_vertex else head.space.n_params)
    if dtype.kind != "f" or dtype.hasobject:
        raise OutputError(f"{item.path}: expected float motion, found dtype {dtype}; save float32 or float64")
    kind = None
    if (len(shape) == 2 and shape[1] == 3 * V) or (len(shape) == 3 and shape[1:] == (V, 3)):
        kind = "vertices"
    elif P is not None and len(shape) == 2 and shape[1] == P:
        kind = "parameters"
    if kind is None or shape[0] == 0:
        want = f"(T, {3 * V}) or (T, {V}, 3) vertices" + (f" or (T, {P}) {head.space.name} parameters" if P else "")
        found_v = shape[1] if len(shape) == 3 else (shape[1] // 3 if len(shape) == 2 and shape[1] % 3 == 0 else None)
        hint = ""
        if found_v:
            others = [d for d in _spaces_with(int(found_v)) if d != head.id]
            hint = (f" ({found_v} vertices: the topology of {', '.join(others)}; pass --dataset {others[0]})" if others
                    else f" ({found_v} vertices: no head of {head.id} or of any dataset has that topology)")
        raise OutputError(f"{item.path}: expected {want} for {head.id}, found shape {shape}{hint}")
    rows = np.load(item.path, mmap_mode=None if fortran else "r", allow_pickle=False)
    return Frames(rows, head, kind, source=str(item.path), dtype=dtype)


def gt_frames(head: Head, seq_id: str) -> Frames:
    """The ground truth of a store sequence, read from the store block by block."""
    seq = head.ds[seq_id]
    reader = _StoreRows(seq)
    kind = "vertices" if head.space.is_vertex else "parameters"
    return Frames(reader, head, kind, n=seq.n_frames, source=f"{head.id} {seq_id}")


class _StoreRows:
    """``rows[a:b]`` of a store sequence (h5py slicing: only those rows are read)."""

    def __init__(self, seq: Any):
        self.seq = seq

    def __len__(self) -> int:
        return int(self.seq.n_frames)

    def __getitem__(self, s: slice) -> np.ndarray:
        a, b, _ = s.indices(len(self))
        return self.seq.frames(a, b)


AudioReader = Callable[[Path], np.ndarray]
