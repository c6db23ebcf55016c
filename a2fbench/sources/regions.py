"""Region index lists (lips, upper face) from the files the sources publish, in each published format:
index lists (``lve.txt``), ``.npy`` index arrays, per-vertex weights with a threshold (MeshTalk masks), pickled
dicts (``FLAME_masks.pkl``), or the vertices a blendshape basis moves for named channels.

Takes: a raw folder and a manifest's :class:`RegionSource`. Gives: sorted-as-published int64 vertex indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import RawDataError
from ..registry import DatasetSpec, RegionSource, get_space, space_channels
from ..spaces import basis_region
from ..util import safepickle


class RegionFileMissing(RawDataError):
    """A region file that is not in the raw folder (an optional region set is then skipped; a file that is there
    but wrong is a plain :class:`RawDataError`)."""


def region_path(root: Path, src: RegionSource) -> Path:
    """The region's file: ``src.file``, else the first of ``src.also`` that exists (``src.file`` when none does)."""
    for name in (src.file, *src.also):
        if (root / name).is_file():
            return root / name
    return root / src.file


def load_region(root: Path, src: RegionSource, n_vertices: int, space_arrays: dict, spec: DatasetSpec) -> np.ndarray:
    """Vertex indices of one region, from a file in its published format."""
    p = region_path(root, src)
    if src.format == "basis_channels":
        chans = space_channels(get_space(spec.space)) or []
        idx = basis_region(space_arrays, chans, src.channels, src.threshold or 0.1)
    else:
        if not p.is_file():
            where = " or ".join(str(root / n) for n in (src.file, *src.also))
            raise RegionFileMissing(f"{where}: expected the region file ({src.format}), found nothing; run `a2fbench "
                                    f"download {spec.id}` or see `a2fbench info {spec.id}`")
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
