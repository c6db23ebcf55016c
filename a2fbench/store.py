"""The prepared store: one self-describing HDF5 file per dataset, ``DATA/<id>/store.h5``.

Layout (every path below is inside ``store.h5``)::

    attrs: format_version, card (JSON), complete
    sequences/<seq_id>/motion   (T, D)  source dtype (BIWI float64), benchmark fps, absolute positions or params
    sequences/<seq_id>/audio    (N,)    float32 mono 16 kHz, N = round(T / fps * 16000)
    sequences/<seq_id>.attrs    subject, n_frames, source
    templates/<subject>         (D,)    neutral template, same space and units; the source's array and dtype
    regions/<set>/lips|upper    int64 vertex indices (vertex spaces and spaces that convert to vertices)
    splits/<name>               sequence ids, canonical order
    space/<key>                 converter arrays of a parameter space (blendshape basis, FLAME model)

One sequence is read without touching the others (h5py random access). ``card.json`` beside the file is a
copy of the card for humans. This module is the only one that knows these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .errors import StoreError
from .registry import DatasetSpec, get_spec

STORE_FORMAT = 1
STORE_FILE = "store.h5"
CARD_FILE = "card.json"
_STR = None  # h5py string dtype, created lazily


def _h5():
    import h5py

    return h5py


def store_dir(data: str | os.PathLike, spec: DatasetSpec) -> Path:
    return Path(data) / spec.id


def incomplete_dir(data: str | os.PathLike, spec: DatasetSpec) -> Path:
    return Path(data) / f".{spec.id}.incomplete"


# ------------------------------------------------------------------------------------------- reading
@dataclass
class Sequence:
    """One prepared sequence. ``audio`` and ``motion`` are read on first access."""

    id: str
    subject: str
    n_frames: int
    _ds: "Dataset" = field(repr=False)
    sample_rate: int = 16000

    @property
    def audio(self) -> np.ndarray:
        return self._ds._read(f"sequences/{self.id}/audio")

    @property
    def motion(self) -> np.ndarray:
        return self._ds._read(f"sequences/{self.id}/motion")

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Motion rows ``start:stop`` without reading the rest."""
        return self._ds._file()[f"sequences/{self.id}/motion"][start:stop]

    @property
    def motion_dtype(self) -> np.dtype:
        return self._ds._file()[f"sequences/{self.id}/motion"].dtype

    def frames_into(self, out: np.ndarray, start: int) -> np.ndarray:
        """Motion rows ``start:start + len(out)`` read into ``out`` (C-ordered, no new allocation); returns it."""
        n = out.shape[0]
        self._ds._file()[f"sequences/{self.id}/motion"].read_direct(out, np.s_[start:start + n], np.s_[0:n])
        return out

    @property
    def duration(self) -> float:
        return self.n_frames / float(self._ds.card["fps"])


class Dataset:
    """A prepared dataset (see module doc). Open with :func:`open_dataset`."""

    def __init__(self, path: Path, spec: DatasetSpec):
        self.path = path
        self.spec = spec
        self._fh: Any = None
        self._pid = -1
        f = self._file()
        self.card: dict = json.loads(f.attrs["card"])
        self._splits = {k: [s.decode() if isinstance(s, bytes) else str(s) for s in f["splits"][k][()]]
                        for k in f["splits"]}
        self._seq_meta = {}
        for sid, g in f["sequences"].items():
            self._seq_meta[sid] = (str(g.attrs["subject"]), int(g.attrs["n_frames"]))

    # h5py handles must not cross a fork: reopen in each process
    def _file(self) -> Any:
        if self._fh is None or self._pid != os.getpid():
            self._fh = _h5().File(self.path / STORE_FILE, "r")
            self._pid = os.getpid()
        return self._fh

    def _read(self, key: str) -> np.ndarray:
        try:
            return self._file()[key][()]
        except KeyError:
            raise StoreError(f"{self.path}: expected {key} in the store, found none; re-run `a2fbench prepare "
                             f"{self.spec.id}`") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __getstate__(self) -> dict:  # picklable for DataLoader workers
        st = dict(self.__dict__)
        st["_fh"] = None
        return st

    # ---- contract API
    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def split_names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> list[str]:
        """Sequence ids of a split, in canonical order."""
        if name not in self._splits:
            raise StoreError(f"{self.spec.id} has no split {name!r}; expected one of {', '.join(self._splits)}")
        return list(self._splits[name])

    def __getitem__(self, seq_id: str) -> Sequence:
        if seq_id not in self._seq_meta:
            import difflib

            close = difflib.get_close_matches(seq_id, list(self._seq_meta), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StoreError(f"{self.spec.id} has no sequence {seq_id!r}{hint}")
        subj, n = self._seq_meta[seq_id]
        return Sequence(seq_id, subj, n, self)

    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._seq_meta

    def __len__(self) -> int:
        return len(self._seq_meta)

    def __iter__(self) -> Iterator[str]:
        return iter(self._seq_meta)

    @property
    def ids(self) -> list[str]:
        return list(self._seq_meta)

    @property
    def subjects(self) -> list[str]:
        return list(self._file()["templates"])

    def template(self, subject: str) -> np.ndarray:
        """(D,) neutral template of ``subject``, same space, units and dtype as motion."""
        key = f"templates/{subject}"
        if key not in self._file():
            raise StoreError(f"{self.spec.id} has no template for subject {subject!r}; known: "
                             f"{', '.join(self.subjects[:10])}")
        return self._read(key)

    @property
    def region_sets(self) -> list[str]:
        return list(self._file()["regions"]) if "regions" in self._file() else []

    def regions_for(self, name: Optional[str] = None) -> dict[str, np.ndarray]:
        name = name or self.card.get("region_default")
        if name not in self.region_sets:
            raise StoreError(f"{self.spec.id} has no region set {name!r}; expected one of "
                             f"{', '.join(self.region_sets) or '(none)'}")
        g = self._file()["regions"][name]
        return {"lips": g["lips"][()], "upper": g["upper"][()]}

    @property
    def regions(self) -> dict[str, np.ndarray]:
        """{"lips": int array, "upper": int array} of the manifest's default region set."""
        return self.regions_for(None)

    def space_arrays(self) -> dict[str, Any]:
        """Converter data of a parameter space (empty for vertex spaces)."""
        f = self._file()
        if "space" not in f:
            return {}
        out: dict[str, Any] = {}
        for k, v in f["space"].items():
            out[k] = v[()]
        return out

    def to_hf(self, split: Optional[str] = None, cache_dir: Optional[str] = None) -> Any:
        """A Hugging Face ``datasets.Dataset`` of one split (or all sequences).

        Columns: ``id``, ``subject``, ``audio`` (float32, 16 kHz), ``motion`` ((T, D) in the store's dtype, so
        BIWI stays float64), ``n_frames``. The card (fps, units, fingerprint, splits) goes into the dataset's
        ``info.description`` as JSON. ``cache_dir``: where ``datasets`` writes its Arrow files.
        """
        try:
            import datasets
        except ImportError:
            raise StoreError("expected the `datasets` package for the Hugging Face export, found none; "
                             "pip install 'a2fbench[hf]'") from None
        ids = self.split(split) if split else self.ids

        dtype = str(self.card.get("dtype", "float32"))
        path, name = str(self.path / STORE_FILE), self.spec.id

        def gen(ids: list[str]) -> Iterator[dict]:  # reopens the store: the generator may run elsewhere
            ds = open_dataset(Path(path).parent.parent, name)
            for sid in ids:
                s = ds[sid]
                yield {"id": sid, "subject": s.subject, "audio": s.audio, "motion": s.motion.astype(dtype),
                       "n_frames": s.n_frames}
            ds.close()

        feats = datasets.Features({
            "id": datasets.Value("string"), "subject": datasets.Value("string"),
            "audio": datasets.Sequence(datasets.Value("float32")),
            "motion": datasets.Array2D(shape=(None, int(self.card["dim"])), dtype=dtype),
            "n_frames": datasets.Value("int32"),
        })
        import hashlib

        # the cache key is the store's content fingerprint, so a re-prepared store is never served stale
        fp = hashlib.sha256(json.dumps([self.card.get("fingerprint"), split, dtype, ids]).encode()).hexdigest()
        hf = datasets.Dataset.from_generator(gen, features=feats, gen_kwargs={"ids": ids}, cache_dir=cache_dir,
                                             fingerprint=fp[:32])
        hf.info.description = json.dumps({k: self.card.get(k) for k in (
            "id", "name", "space", "dim", "fps", "sample_rate", "units", "dtype", "version", "fingerprint",
            "synthetic")} | {"split": split or "all"})
        return hf


def open_dataset(data: str | os.PathLike, dataset: str) -> Dataset:
    """Open a prepared dataset, checking that it is complete and current.

    Raises :class:`~a2fbench.errors.StoreError` with the command to run when the store is absent, incomplete
    or was prepared by another store format or manifest version.
    """
    spec = get_spec(dataset)
    d = store_dir(data, spec)
    f = d / STORE_FILE
    if not f.is_file():
        partial = incomplete_dir(data, spec).exists()
        what = "an interrupted prepare" if partial else "nothing"
        raise StoreError(f"expected a prepared {spec.id} at {d}, found {what}; run `a2fbench prepare {spec.id} "
                         f"--raw RAW --out {data}`")
    try:
        with _h5().File(f, "r") as h:
            fmt = int(h.attrs.get("format_version", -1))
            complete = bool(h.attrs.get("complete", False))
            card = json.loads(h.attrs["card"]) if "card" in h.attrs else {}
    except OSError as e:
        raise StoreError(f"{f}: expected an HDF5 store, found an unreadable file ({e}); re-run `a2fbench prepare "
                         f"{spec.id}`") from None
    if not complete or fmt != STORE_FORMAT:
        raise StoreError(f"{f}: expected a complete store of format {STORE_FORMAT}, found format {fmt}"
                         f"{'' if complete else ' (incomplete)'}; re-run `a2fbench prepare {spec.id}`")
    if int(card.get("version", -1)) != spec.version:
        raise StoreError(f"{f}: stale store: prepared from manifest version {card.get('version')}, the manifest is "
                         f"now version {spec.version}; re-run `a2fbench prepare {spec.id}`")
    return Dataset(d, spec)


def list_prepared(data: str | os.PathLike) -> dict[str, bool]:
    """{dataset id: prepared and current?} for every registered dataset."""
    from .registry import all_specs

    out = {}
    for s in all_specs():
        try:
            open_dataset(data, s.id).close()
            out[s.id] = True
        except Exception:  # noqa: BLE001 - any failure means "not usable"
            out[s.id] = False
    return out


# ------------------------------------------------------------------------------------------- writing
class StoreWriter:
    """Builds ``store.h5`` in a work folder, one sequence at a time, resumable.

    A sequence group is marked ``done`` only after both arrays are written; on resume, groups without the
    mark are deleted and rewritten. ``plan`` fingerprints the inputs and options: a work folder built for
    another plan is discarded.
    """

    def __init__(self, work: Path, plan: str):
        h5py = _h5()
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / STORE_FILE
        self.f = None
        if self.path.exists():
            try:
                f = h5py.File(self.path, "a")
                if f.attrs.get("plan") == plan:
                    self.f = f
                else:
                    f.close()
            except OSError:
                pass
        if self.f is None:
            if self.path.exists():
                self.path.unlink()
            self.f = h5py.File(self.path, "w")
            self.f.attrs["plan"] = plan
            self.f.attrs["format_version"] = STORE_FORMAT
            self.f.attrs["complete"] = False
            self.f.create_group("sequences")
        seqs = self.f["sequences"]
        for sid in list(seqs):
            if not seqs[sid].attrs.get("done", False):
                del seqs[sid]

    def done(self, seq_id: str) -> bool:
        g = self.f["sequences"].get(seq_id)
        return g is not None and bool(g.attrs.get("done", False))

    def dtype(self) -> Optional[np.dtype]:
        """Motion dtype of the sequences already written (a resumed run keeps it), None if none yet."""
        for sid in self.f["sequences"]:
            return self.f["sequences"][sid]["motion"].dtype
        return None

    def meta(self, seq_id: str) -> dict:
        g = self.f["sequences"][seq_id]
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()}

    def add_sequence(self, seq_id: str, motion: np.ndarray, audio: np.ndarray, **attrs: Any) -> None:
        g = self.f["sequences"].create_group(seq_id)
        T, D = motion.shape
        # Contiguous, not chunked: the store is written once per sequence and read in runs of frames, which a
        # contiguous dataset serves as one read (D0 stand-in: 14 GB/s warm against 9.5 GB/s for one chunk per
        # BIWI frame; cold, one large read instead of one per frame). Stores written with chunks read the same.
        g.create_dataset("motion", data=motion)
        g.create_dataset("audio", data=np.asarray(audio, np.float32))
        for k, v in attrs.items():
            g.attrs[k] = v
        g.attrs["n_frames"] = T
        g.attrs["done"] = True
        self.f.flush()

    def put_group(self, name: str, arrays: dict[str, Any]) -> None:
        if name in self.f:
            del self.f[name]
        g = self.f.create_group(name)
        for k, v in arrays.items():
            if isinstance(v, dict):
                sub = g.create_group(k)
                for kk, vv in v.items():
                    sub.create_dataset(kk, data=vv)
            else:
                g.create_dataset(k, data=v)

    def put_splits(self, splits: dict[str, list[str]]) -> None:
        h5py = _h5()
        if "splits" in self.f:
            del self.f["splits"]
        g = self.f.create_group("splits")
        for k, ids in splits.items():
            g.create_dataset(k, data=np.array(ids, dtype=object), dtype=h5py.string_dtype())

    def drop_sequences_except(self, keep: set[str]) -> None:
        for sid in list(self.f["sequences"]):
            if sid not in keep:
                del self.f["sequences"][sid]

    def finalize(self, card: dict) -> None:
        self.f.attrs["card"] = json.dumps(card)
        self.f.attrs["complete"] = True
        self.f.close()

    def close(self) -> None:
        if self.f is not None and self.f.id.valid:
            self.f.close()
