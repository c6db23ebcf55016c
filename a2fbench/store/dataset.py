"""Reading the store: :func:`open_dataset` checks that a prepared dataset is complete and current and
returns a :class:`Dataset` (card, splits, lazily read sequences, templates, regions, converter arrays)."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import h5py
import numpy as np

from ..errors import StoreError
from ..registry import DatasetSpec, all_specs, get_spec
from ..util.constants import SAMPLE_RATE

#: 2: audio is the whole recording (any length), ``n_samples`` per sequence; 1: audio cut/padded to the motion
STORE_FORMAT = 2

#: UniTalker's longest clip (``DataItem.truncate``): the unitalker scoring protocol and training cut to it
UNITALKER_MAX_SECONDS = 20.0
UNITALKER_MIN_SECONDS = 0.5  # UniTalker's loader skips clips shorter than this after the cut (every split)


STORE_FILE = "store.h5"


CARD_FILE = "card.json"


def store_dir(data: str | os.PathLike, spec: DatasetSpec) -> Path:
    return Path(data) / spec.id


def incomplete_dir(data: str | os.PathLike, spec: DatasetSpec) -> Path:
    return Path(data) / f".{spec.id}.incomplete"


def common_length(n_frames: int, n_samples: int, fps: float, max_seconds: Optional[float] = None,
                  sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(motion frames, audio samples) of a clip cut as UniTalker's ``DataItem.truncate`` cuts it: to the shorter
    of the motion and the recording, and to ``max_seconds`` if given; ``round`` is Python's (ties to even).

    >>> common_length(100, 16000 * 5, 25.0)        # 4 s of motion, 5 s of audio: the audio is cut
    (100, 64000)
    >>> common_length(100, 16000 * 3, 25.0)        # 3 s of audio: the motion is cut
    (75, 48000)
    >>> common_length(1000, 16000 * 40, 25.0, 20.0)
    (500, 320000)
    """
    dur = min(n_samples / float(sample_rate), n_frames / float(fps))
    if max_seconds is not None:
        dur = min(dur, float(max_seconds))
    return min(n_frames, int(round(dur * fps))), min(n_samples, int(round(dur * sample_rate)))


@dataclass
class Sequence:
    """One prepared sequence. ``audio`` (the whole recording) and ``motion`` are read on first access.

    Audio and motion keep their own lengths: ``audio_seconds`` and ``motion_seconds`` may differ (a recording
    usually runs a little past the captured motion). :func:`common_length` gives the part both cover.
    """

    id: str
    subject: str
    n_frames: int
    _ds: "Dataset" = field(repr=False)
    sample_rate: int = SAMPLE_RATE
    n_samples: int = -1  # audio samples at ``sample_rate``

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
    def motion_seconds(self) -> float:
        """Length of the motion: ``n_frames / fps``."""
        return self.n_frames / float(self._ds.card["fps"])

    @property
    def audio_seconds(self) -> float:
        """Length of the recording: ``n_samples / 16000``."""
        return self.n_samples / float(self.sample_rate)

    @property
    def duration(self) -> float:
        """The sequence's length, which the motion defines (= :attr:`motion_seconds`)."""
        return self.motion_seconds

    def common_seconds(self, max_seconds: Optional[float] = None) -> float:
        """Seconds both audio and motion cover, at most ``max_seconds`` (UniTalker's ``DataItem`` duration)."""
        dur = min(self.audio_seconds, self.motion_seconds)
        return dur if max_seconds is None else min(dur, float(max_seconds))

    def common_length(self, max_seconds: Optional[float] = None) -> tuple[int, int]:
        """(frames, samples) both audio and motion cover, at most ``max_seconds`` (see :func:`common_length`)."""
        return common_length(self.n_frames, self.n_samples, float(self._ds.card["fps"]), max_seconds,
                             self.sample_rate)


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
            self._seq_meta[sid] = (str(g.attrs["subject"]), int(g.attrs["n_frames"]), int(g.attrs["n_samples"]))

    # h5py handles must not cross a fork: reopen in each process
    def _file(self) -> Any:
        if self._fh is None or self._pid != os.getpid():
            self._fh = h5py.File(self.path / STORE_FILE, "r")
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
            close = difflib.get_close_matches(seq_id, list(self._seq_meta), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StoreError(f"{self.spec.id} has no sequence {seq_id!r}{hint}")
        subj, n, n_samples = self._seq_meta[seq_id]
        return Sequence(seq_id, subj, n, self, n_samples=n_samples)

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

    def faces(self) -> Optional[np.ndarray]:
        """(F, 3) int64 triangles of the dataset's topology (``mesh/faces``), None when ``prepare`` had no mesh
        file (card ``mesh`` says why)."""
        f = self._file()
        return np.asarray(f["mesh/faces"][()], np.int64) if "mesh/faces" in f else None

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
        if incomplete_dir(data, spec).exists():
            raise StoreError(f"expected a prepared {spec.id} at {d}, found an interrupted prepare; run `a2fbench "
                             f"prepare {spec.id} --raw RAW --out {data}` again to resume it")
        if d.is_dir() and any(d.iterdir()):  # a folder of raw files passed where a prepared store is expected
            names = ", ".join(sorted(p.name for p in d.iterdir())[:3])
            raise StoreError(f"expected a prepared {spec.id} store ({STORE_FILE}) in {d}, found other files ({names}, "
                             f"...): raw files? Prepare them first: `a2fbench prepare {spec.id} --raw {data} --out "
                             "DATA`, then pass --data DATA")
        raise StoreError(f"expected a prepared {spec.id} at {d}, found nothing; run `a2fbench prepare {spec.id} "
                         f"--raw RAW --out {data}`")
    try:
        with h5py.File(f, "r") as h:
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
    out = {}
    for s in all_specs():
        try:
            open_dataset(data, s.id).close()
            out[s.id] = True
        except Exception:  # noqa: BLE001 - any failure means "not usable"
            out[s.id] = False
    return out
