"""PCA of a prepared vertex dataset: its training motion minus the subject template, streamed from the
store, fitted and written to ``DATA/<id>/pca.npz``; and reading it back checked against the store.

Takes: a prepared store. Gives: ``pca.npz`` (:func:`fit_dataset`) and a :class:`~.model.PCA` that matches the
store (:func:`load_for`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ... import __version__
from ...errors import SpaceError, StoreError
from ...registry import get_space, get_spec
from ...store import STORE_FILE, open_dataset, store_dir
from ...store.templates import choose_template
from .algorithm import fit
from .fileformat import PCA_FILE, load, save
from .model import DEFAULT_BLOCK_ROWS, DEFAULT_COMPONENTS, DEFAULT_PASSES, PCA

log = logging.getLogger("a2fbench.pca")

class DatasetSource:
    """Training motion minus the subject template, read from the store in blocks of ``block_rows`` rows
    (several short sequences fill one block; a long one spans several). The yielded array is reused: it is
    valid until the next one is requested (copy it to keep it)."""

    def __init__(self, ds: Any, split: str = "train", block_rows: int = DEFAULT_BLOCK_ROWS):
        self.ds = ds
        self.split = split
        self.ids = ds.split(split)
        self.dim = int(ds.card["dim"])
        self.n_rows = sum(ds[s].n_frames for s in self.ids)
        self.block_rows = block_rows
        self.name = f"{ds.id} {split}"
        self._templates: dict[str, np.ndarray] = {}

    def template(self, subject: str) -> np.ndarray:
        if subject not in self._templates:
            self._templates[subject] = np.asarray(choose_template(self.ds, subject=subject).values, np.float64)
        return self._templates[subject]

    def blocks(self) -> Iterator[np.ndarray]:
        ra = Readahead(self.ds.path / STORE_FILE, self.n_rows)
        try:
            yield from self._blocks(ra)
        finally:
            ra.stop()

    def _blocks(self, ra: "Readahead") -> Iterator[np.ndarray]:
        # One reused buffer, filled in place by the store (fresh multi-MB arrays cost a page fault per 4 KiB on
        # first touch).
        buf = np.empty((self.block_rows, self.dim))
        n = 0
        for sid in self.ids:
            seq = self.ds[sid]
            tm = self.template(seq.subject)
            ra.consumed(seq.n_frames)
            a = 0
            while a < seq.n_frames:
                b = min(seq.n_frames, a + self.block_rows - n)
                piece = seq.frames_into(buf[n:n + (b - a)], a)
                piece -= tm
                n += b - a
                a = b
                if n == self.block_rows:
                    yield buf
                    n = 0
        if n:
            yield buf[:n]

    def locate_nonfinite(self) -> str:
        """Which sequence and frame hold the first NaN/inf (slow; only called on error)."""
        for sid in self.ids:
            m = np.asarray(self.ds[sid].motion)
            bad = np.flatnonzero(~np.isfinite(m).all(axis=1))
            if len(bad):
                return f"sequence {sid} frame {int(bad[0])}"
        return "a frame"


class Readahead:
    """Warms the page cache ahead of h5py: a thread reads the store file front to back in 8 MiB ``pread``s,
    staying ``ahead`` bytes beyond the share of the file consumed so far.

    Stores written before motion was stored contiguously hold one chunk per BIWI frame (560 KB), which h5py
    reads one at a time and a virtual disk serves at about 0.45 GB/s; large sequential reads run at 2+ GB/s,
    after which h5py reads from memory. Contiguous stores are read in large pieces anyway; this still keeps
    the disk busy while the GEMMs run. The store is written
    sequence by sequence in split order, so file position tracks the reading order; if it did not, this only
    wastes some reads. Page cache is not process memory. Disable with ``A2FBENCH_READAHEAD=0``.
    """

    def __init__(self, path: Path, total_rows: int, ahead: int = 1 << 30):
        self.path, self.total, self.ahead = path, max(int(total_rows), 1), ahead
        self.done_rows = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if os.environ.get("A2FBENCH_READAHEAD", "1") != "0" and Path(path).is_file():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def consumed(self, rows: int) -> None:
        """Called as the reader reaches each sequence (rows about to be read)."""
        self.done_rows += rows

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            buf = bytearray(8 << 20)
            pos = 0
            while pos < size and not self._stop.is_set():
                target = size * min(1.0, self.done_rows / self.total) + self.ahead
                if pos >= target:
                    self._stop.wait(0.005)
                    continue
                n = os.preadv(fd, [buf], pos)
                if n <= 0:
                    break
                pos += n
        except OSError:
            pass
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def pca_path(data: str | os.PathLike, dataset: str) -> Path:
    return store_dir(data, get_spec(dataset)) / PCA_FILE


def check_dataset(ds: Any) -> None:
    """PCA is for vertex spaces; one clear line otherwise."""
    space = get_space(ds.card["space"])
    if not space.is_vertex:
        raise SpaceError(f"expected a vertex dataset for PCA (D0..D2), found {ds.id} in {space.name}, a "
                         f"{space.kind} parameter space of {space.dim} values: UniTalker predicts its parameters "
                         "directly, without PCA; leave it out of `a2fbench pca`")


def fit_dataset(dataset: str, data: str | os.PathLike, components: int = DEFAULT_COMPONENTS, device: str = "cpu",
                seed: int = 0, *, split: str = "train", passes: int = DEFAULT_PASSES,
                oversample: Optional[int] = None, block_rows: int = DEFAULT_BLOCK_ROWS, progress: bool = True,
                out: Optional[str | os.PathLike] = None) -> Path:
    """Fit the PCA of a prepared vertex dataset and write ``DATA/<id>/pca.npz`` atomically; returns its path."""
    ds = open_dataset(data, dataset)
    try:
        check_dataset(ds)
        src = DatasetSource(ds, split, block_rows)
        if src.n_rows == 0:
            raise SpaceError(f"{ds.id}: expected frames in split {split!r}, found none; prepare the split first")
        p = fit(src, components, device=device, seed=seed, oversample=oversample, passes=passes, progress=progress,
                spill_dir=ds.path)
        card = ds.card
        p.meta.update({"dataset": ds.id, "space": card["space"], "fingerprint": card.get("fingerprint"),
                       "split": split, "units": card.get("units"), "data": "motion - template(subject), mean removed",
                       "unitalker_scale": ds.spec.unitalker.scale, "a2fbench_version": __version__,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "synthetic": bool(card.get("synthetic", False))})
        target = Path(out) if out is not None else ds.path / PCA_FILE
    finally:
        ds.close()
    save(p, target)
    log.debug("%s: %d components explain %.6f of the %s variance (%d frames x %d) -> %s", dataset, p.n_components,
             p.meta["explained_variance"], split, p.n_samples, p.dim, target)
    return target


def load_for(data: str | os.PathLike, dataset: str) -> PCA:
    """The PCA of a prepared dataset, checked against the store's fingerprint (stale -> one clear line)."""
    ds = open_dataset(data, dataset)
    fp = ds.card.get("fingerprint")
    path = ds.path / PCA_FILE
    ds.close()
    if not path.is_file():
        raise StoreError(f"expected {path}, found nothing; run `a2fbench pca {dataset} --data {data}`")
    p = load(path)
    got = p.meta.get("fingerprint")
    if got is not None and fp is not None and got != fp:
        raise StoreError(f"{path}: stale PCA: fitted on store {got[:19]}..., the store is now {fp[:19]}...; re-run "
                         f"`a2fbench pca {dataset} --data {data}`")
    return p
