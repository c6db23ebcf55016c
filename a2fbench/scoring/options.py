"""What one evaluation takes from the dataset besides the arrays: the protocol's coordinate scale or
normalisation and default region set (from the manifest), region index files given on the command line
(``--region lips=FILE``), the training subjects a condition may name, and how many frames of each sequence a
protocol scores at most.

Takes: a prepared :class:`~a2fbench.store.Dataset` and a :class:`~.protocols.Protocol`. Gives: plain values
for :mod:`.evaluate`."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import A2FBenchError, StoreError
from .protocols import Protocol


@dataclass(frozen=True)
class ProtocolOptions:
    """The dataset-dependent settings of a protocol: coordinate scale of the lip terms (unitalker), FaceDiffuser's
    coordinate range (facediffuser_multiface) and the region set the protocol uses by default; and what this
    evaluation computes (``evaluate --metrics``): the metric-table metrics (None: the protocol's own set), the
    axes (:mod:`.metrics.axes`) and the mouth pair (upper, lower) they use. Forked workers receive it whole."""

    scale: float = 1.0
    coord_range: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None
    region_set: Optional[str] = None
    metrics: Optional[tuple[str, ...]] = None
    axes: tuple[str, ...] = ()
    mouth_pair: Optional[tuple[int, int]] = None


def protocol_options(spec: Any, proto: Protocol) -> ProtocolOptions:
    """The manifest's settings ``proto`` needs; a protocol the dataset cannot support is a one-line error."""
    scale = float(spec.unitalker.scale) if proto.scaled else 1.0
    if not proto.normalised:
        return ProtocolOptions(scale=scale)
    fd = getattr(spec, "facediffuser", None)
    if fd is None:
        raise A2FBenchError(f"protocol {proto.name}: expected a dataset whose manifest gives FaceDiffuser's coordinate "
                            f"normalisation (D2 Multiface), found {spec.id}; use --protocol facediffuser")
    return ProtocolOptions(scale, (tuple(fd.normalise.min), tuple(fd.normalise.max)), fd.regions)


def cap_frames(proto: Protocol, seq: Any) -> Optional[int]:
    """The most frames ``proto`` scores of a :class:`~a2fbench.store.Sequence` (None: no cap). ``unitalker``:
    what UniTalker's ``DataItem.truncate`` keeps, ``round(min(audio s, motion s, 20 s) * fps)``
    (:meth:`~a2fbench.store.Sequence.common_length`)."""
    return None if proto.max_seconds is None else seq.common_length(proto.max_seconds)[0]


def too_short(proto: Protocol, seq: Any) -> Optional[float]:
    """The seconds ``proto`` would score of a sequence when that is under its ``min_seconds`` (the sequence is
    then left out, as UniTalker's loader skips it), else None."""
    if proto.min_seconds is None:
        return None
    dur = seq.common_seconds(proto.max_seconds)
    return dur if dur < proto.min_seconds else None


def region_choice(proto: Protocol, available: list[str], asked: Optional[str], default: Optional[str],
                  opts_set: Optional[str], lips_file: bool = False) -> tuple[str, Protocol, Optional[str]]:
    """(region set, protocol as applied, fallback note). A protocol with its own region set (unitalker) scores on
    it when the store has it and none other was asked for; otherwise it takes the dataset's set under its
    ``fallback_version``, with a note saying why (never ranked with the protocol on its own lists). A lip index
    file given by the user (``lips_file``; ``--region lips=04_BIWI_mouth_idx.npy``) stands in for the set's list:
    no fallback, the file is recorded by digest."""
    chosen = asked or opts_set or (proto.region_set if proto.region_set in available else None) or default
    if proto.region_set is None or chosen == proto.region_set or lips_file:
        return str(chosen), proto, None
    why = (f"region set {chosen!r} was asked for" if asked else
           f"the prepared store has no region set {proto.region_set!r} (its files were absent at prepare)")
    note = (f"protocol {proto.name} v{proto.version} scores on region set {proto.region_set!r}, but {why}; scored on "
            f"{chosen!r} as protocol version {proto.fallback_version}, which is not the paper's and is never ranked "
            f"with version {proto.version}")
    return str(chosen), dataclasses.replace(proto, version=int(proto.fallback_version or proto.version)), note


def recorded_mouth_list(proto: Protocol, ds: Any, record: Optional[dict], asked: Optional[str],
                        region_files: Optional[dict]) -> Optional[tuple[Path, str, str]]:
    """UniTalker's mouth list that the predictions record names (``mouth_lists``: carried from the release folder
    by ``unitalker import-official``), when ``proto`` scores on a region set the store lacks and the user asked for
    no other: (file, its recorded sha256, the store's region set whose upper list the protocol's set shares).
    None otherwise (the protocol then falls back, loudly). A file that changed since it was recorded is a
    one-line error: its digest is what the results will name."""
    if (proto.region_set is None or proto.region_set in ds.region_sets or asked
            or (region_files or {}).get("lips")):
        return None
    m = ((record or {}).get("mouth_lists") or {}).get(ds.id)
    want = ds.spec.regions.sets.get(proto.region_set)
    if not isinstance(m, dict) or want is None or not Path(str(m.get("path", ""))).is_file():
        return None
    path = Path(str(m["path"]))
    got = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    if got != m.get("sha256"):
        raise StoreError(f"{path}: expected the mouth list the predictions record names (sha256 "
                         f"{str(m.get('sha256'))[7:19]}...), found a file with sha256 {got[7:19]}...; it changed "
                         "since import-official copied it: import the release again, or pass --region lips=FILE")
    upper = next((n for n in ds.region_sets if n in ds.spec.regions.sets
                  and ds.spec.regions.sets[n].upper == want.upper), ds.card.get("region_default"))
    return path, got, str(upper)


def training_subjects(ds: Any) -> list[str]:
    """Subjects a prediction may be conditioned on: those of the training split, in split order (all subjects
    of the dataset when it has no training split)."""
    ids = ds.split("train") if "train" in ds.split_names else []
    subs = list(dict.fromkeys(ds[s].subject for s in ids))
    return subs or list(ds.subjects)


def parse_region_args(items: Optional[list[str]]) -> dict[str, Path]:
    """``["lips=FILE", "upper=FILE"]`` -> ``{"lips": Path, ...}`` (one-line errors for anything else)."""
    out: dict[str, Path] = {}
    for it in items or []:
        name, sep, path = it.partition("=")
        if not sep or name not in ("lips", "upper") or not path:
            raise A2FBenchError(f"--region: expected lips=FILE or upper=FILE, found {it!r}; e.g. "
                                "--region lips=04_BIWI_mouth_idx.npy")
        out[name] = Path(path)
    return out


def load_region_file(path: str | os.PathLike, n_vertices: int, what: str, dataset: str) -> tuple[np.ndarray, str]:
    """Vertex indices from an index file (``.npy`` integers or a boolean mask of V; text: comma/space separated
    integers) and the file's sha256. Indices outside [0, V) are a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise A2FBenchError(f"--region {what}={p}: expected an index file (.npy or .txt), found nothing")
    data = p.read_bytes()
    try:
        if p.suffix == ".npy":
            a = np.load(io.BytesIO(data), allow_pickle=False)  # the bytes already read for the digest
            if a.dtype == bool:
                if a.size != n_vertices:
                    raise ValueError(f"a boolean mask of {a.size} entries, not V={n_vertices}")
                idx = np.flatnonzero(a.reshape(-1))
            elif np.issubdtype(a.dtype, np.integer):
                idx = a.astype(np.int64).reshape(-1)
            else:
                raise ValueError(f"dtype {a.dtype}")
        else:
            idx = np.array([int(t) for t in data.decode().replace(",", " ").split()], np.int64)
    except (ValueError, UnicodeDecodeError) as e:
        raise A2FBenchError(f"--region {what}={p}: expected integer vertex indices (or a boolean mask of V), found "
                            f"an unreadable file ({e}); pass an index file such as UniTalker's mouth index .npy") from None
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n_vertices:
        rng = "none" if idx.size == 0 else f"{idx.size} indices in [{idx.min()}, {idx.max()}]"
        raise StoreError(f"--region {what}={p}: expected vertex indices in [0, {n_vertices}) for {dataset} "
                         f"(V={n_vertices}), found {rng}; pass the index file of this dataset's mesh")
    return idx, "sha256:" + hashlib.sha256(data).hexdigest()
