"""The UniTalker data release folder (``unitalker_data_release_V1/``) as the importer reads it.

``DIR/<dirname>/id_template.npy`` for every dataset (one neutral template per subject, native units, in the
identity table's order), ``DIR/<dirname>/pca.npz`` for a vertex head (``components_to_data`` (K, 3V) and
``original_data_mean`` (3V,), in UniTalker's scaled units; the first ``k`` components are used as shipped, never
refitted), and ``{train,val,test}.json`` where the release has them (their ``info.id_list`` names the subjects).
Dirnames are the manifests' ``unitalker.dirname``. UniTalker's mouth index lists (``04_BIWI_mouth_idx.npy``, ...,
from the official repository's ``resources.zip``) are read from the folder too when the user put them there
(:func:`find_mouth_lists`): ``resources/binary_resources/``, as the zip unpacks, ``resources/`` or
``binary_resources/``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from a2fbench.errors import RawDataError
from a2fbench.registry import get_space, get_spec
from a2fbench.util.fsutil import read_json

log = logging.getLogger(__name__)


@dataclass
class ReleaseDataset:
    """One dataset of the release: its subject names (or ``#k``), scaled templates and, for a PCA head, the basis."""

    id: str
    names: list[str]
    templates: np.ndarray  # (n, D) float32, scaled units
    id_list: list[str] = field(default_factory=list)  # the release's own names (empty when it has no JSON)
    pca: Optional[dict] = None  # {"components": (k, D) float32, "mean": (D,) float32}


def _finite(a: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``a``, after refusing NaN/inf values (they would make every output of the imported run NaN)."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise RawDataError(f"{path}: expected finite {what}, found {int((~np.isfinite(a)).sum())} NaN/inf values; "
                           "restore the release file")
    return a


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return _finite(np.load(path, allow_pickle=False), path, what)
    except FileNotFoundError:
        raise RawDataError(f"expected {what} at {path}, found nothing; pass the unitalker_data_release_V1 folder as "
                           "--release") from None
    except (ValueError, OSError) as e:
        raise RawDataError(f"{path}: expected {what} (a numeric .npy), found an unreadable file ({e})") from None


def _id_list(folder: Path, n: int) -> list[str]:
    for split in ("train", "val", "test"):
        p = folder / f"{split}.json"
        if not p.is_file():
            continue
        try:
            doc = read_json(p, what="a UniTalker release split JSON", error=RawDataError)
            ids = [str(x) for x in doc["info"]["id_list"]]
        except RawDataError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RawDataError(f"{p}: expected {{'info': {{'id_list': [...]}}, ...}}, found {e!r}") from None
        if len(ids) != n or len(set(ids)) != n:
            log.warning("%s: id_list has %d names for %d templates; identities are numbered instead", p, len(ids), n)
            return []
        return ids
    return []


def read_pca(path: Path, dataset: str, annot: str, dim: int, k: int) -> dict:
    """The first ``k`` components of a release ``pca.npz`` and its mean, float32, checked against the head."""
    if not path.is_file():
        raise RawDataError(f"expected the release PCA of {dataset} at {path} (the {annot} head decodes through it), "
                           "found nothing; pass the unitalker_data_release_V1 folder as --release")
    try:
        with np.load(path, allow_pickle=False) as z:
            comps = z["components_to_data"]
            mean = z["original_data_mean"].reshape(-1)
    except KeyError as e:
        raise RawDataError(f"{path}: expected UniTalker PCA keys components_to_data and original_data_mean, missing "
                           f"{e}; restore the release file") from None
    except (ValueError, OSError) as e:
        raise RawDataError(f"{path}: expected an npz PCA file, found an unreadable file ({e})") from None
    if comps.ndim != 2 or comps.shape[1] != dim or mean.shape != (dim,):
        raise RawDataError(f"{path}: expected components_to_data (K, {dim}) and original_data_mean ({dim},) for "
                           f"{dataset} ({dim // 3} vertices), found {comps.shape} and {mean.shape}; is it another "
                           "dataset's PCA?")
    if comps.shape[0] < k:
        raise RawDataError(f"{path}: expected at least {k} components (the {annot} head's width), found "
                           f"{comps.shape[0]}; restore the release file")
    _finite(comps[:k], path, "PCA components (components_to_data)")
    _finite(mean, path, "PCA mean (original_data_mean)")
    return {"components": np.ascontiguousarray(comps[:k], np.float32), "mean": mean.astype(np.float32)}


def read_dataset(root: Path, dataset: str, annot: str, pca_k: Optional[int]) -> ReleaseDataset:
    """Templates (scaled), names and (``pca_k`` given) the PCA of one dataset of the release."""
    spec = get_spec(dataset)
    dim = get_space(spec.space).dim
    n = int(spec.unitalker.identities)
    folder = Path(root) / spec.unitalker.dirname
    t = _load_npy(folder / "id_template.npy", f"{dataset}'s id_template.npy")
    if t.ndim < 1 or t.shape[0] != n or t.size != n * dim:
        raise RawDataError(f"{folder / 'id_template.npy'}: expected {n} templates of {dim} values ({dataset}), found "
                           f"shape {t.shape}; restore the release file")
    scale = float(spec.unitalker.scale)
    templates = (t.reshape(n, dim) * scale).astype(np.float32)  # in the file's dtype, as the official loader
    ids = _id_list(folder, n)
    names = list(ids) if ids else [f"#{i}" for i in range(n)]
    pca = read_pca(folder / "pca.npz", dataset, annot, dim, pca_k) if pca_k else None
    return ReleaseDataset(dataset, names, templates, ids, pca)


@dataclass
class MouthList:
    """One of UniTalker's mouth index files found in the release folder: the dataset it scores, the file, its
    bytes' sha256 (``sha256:...``) and its indices."""

    dataset: str
    path: Path
    sha256: str
    indices: np.ndarray
    data: bytes  # the file's bytes, as hashed


def mouth_list_name(dataset: str) -> Optional[str]:
    """The official file name of ``dataset``'s UniTalker mouth list (the manifest's ``unitalker`` region set), or
    None when the dataset has no such set."""
    rs = get_spec(dataset).regions.sets.get("unitalker")
    return Path(rs.lips.file).name if rs is not None and rs.lips.format == "index_npy" else None


def find_mouth_lists(root: Path, datasets: list[str]) -> dict[str, MouthList]:
    """UniTalker's mouth lists for ``datasets`` found under the release folder ``root`` (datasets without one are
    left out). A file that is there but is not integer indices, or indexes past the dataset's V (vertex spaces),
    is a one-line :class:`RawDataError`."""
    found: dict[str, MouthList] = {}
    for d in datasets:
        name = mouth_list_name(d)
        if name is None:
            continue
        cands = [root / "resources" / "binary_resources" / name, root / "resources" / name,
                 root / "binary_resources" / name]
        p = next((c for c in cands if c.is_file()), None)
        if p is None:
            continue
        data = p.read_bytes()
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise RawDataError(f"{p}: expected UniTalker's mouth index list (an integer .npy), found an unreadable "
                               f"file ({e}); restore it from resources.zip") from None
        if not np.issubdtype(a.dtype, np.integer) or a.size == 0:
            raise RawDataError(f"{p}: expected integer vertex indices, found {a.size} values of dtype {a.dtype}; "
                               "restore it from resources.zip")
        idx = a.astype(np.int64).reshape(-1)
        sp = get_space(get_spec(d).space)
        V = sp.n_vertices if sp.kind == "vertices" else None
        if idx.min() < 0 or (V is not None and idx.max() >= V):
            raise RawDataError(f"{p}: expected vertex indices in [0, {V if V is not None else 'V'}) for {d}, found "
                               f"{idx.size} indices in [{idx.min()}, {idx.max()}]; is it another mesh's list?")
        found[d] = MouthList(d, p, "sha256:" + hashlib.sha256(data).hexdigest(), idx, data)
    return found


def check_folder(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RawDataError(f"--release {root}: expected the unitalker_data_release_V1 folder, found "
                           f"{'a file' if root.exists() else 'nothing'}; unzip the release and pass its folder")
    return root
