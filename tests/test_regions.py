"""The published region files (../shared/resources) load through the manifests' region formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from a2fbench.errors import RawDataError
from a2fbench.registry import get_spec
from a2fbench.sources.regions import load_region

# (dataset, region set, resource file for lips, for upper, vertices, lips count, upper count)
CASES = [
    ("D0", "codetalker", "biwi/lve.txt", "biwi/fdd.txt", 23370, 4996, 7784),
    ("D1", "facediffuser", "vocaset-facediffuser/lve.txt", "vocaset-facediffuser/fdd.txt", 5023, 428, 1501),
    ("D1", "flame", "flame/FLAME_masks.pkl", "flame/FLAME_masks.pkl", 5023, 254, 827),
    ("D2", "facediffuser", "meshtalk/weighted_mouth_mask.txt", "meshtalk/forehead_mask.txt", 6172, 1438, 656),
    ("D5", "flame", "flame/FLAME_masks.pkl", "flame/FLAME_masks.pkl", 5023, 254, 827),
]


@pytest.mark.parametrize("sid,name,lips_file,upper_file,nv,n_lips,n_upper", CASES)
def test_published_region_files(shared_resources: Path, tmp_path: Path, sid: str, name: str, lips_file: str,
                                upper_file: str, nv: int, n_lips: int, n_upper: int) -> None:
    spec = get_spec(sid)
    rs = spec.regions.sets[name]
    root = tmp_path / sid
    for src, res in ((rs.lips, lips_file), (rs.upper, upper_file)):
        dst = root / src.file  # where the manifest says the file goes in RAW/<id>/
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(shared_resources / res)
    lips = load_region(root, rs.lips, nv, {}, spec)
    upper = load_region(root, rs.upper, nv, {}, spec)
    assert (lips.size, upper.size) == (n_lips, n_upper)
    assert lips.dtype == np.int64 and lips.max() < nv and upper.max() < nv
    if sid == "D0":  # CodeTalker's lists are sorted, unique, and span the documented ranges
        assert np.all(np.diff(lips) > 0) and (lips.min(), lips.max()) == (2, 23339)
        assert (upper.min(), upper.max()) == (7, 23368)
    if name == "flame":
        assert np.all(np.diff(upper) > 0)  # forehead | eye_region, sorted


def test_a_region_file_for_another_topology_is_refused(shared_resources: Path, tmp_path: Path) -> None:
    spec = get_spec("D1")
    rs = spec.regions.sets["facediffuser"]
    (tmp_path / "regions").mkdir()
    (tmp_path / "regions" / "lve.txt").symlink_to(shared_resources / "biwi" / "lve.txt")  # BIWI indices
    with pytest.raises(RawDataError, match="expected vertex indices in 0..5022") as e:
        load_region(tmp_path, rs.lips, 5023, {}, spec)
    assert "lve.txt" in str(e.value)
    d2 = get_spec("D2").regions.sets["facediffuser"]
    (tmp_path / "weighted_mouth_mask.txt").write_text("0.5\n" * 100)
    with pytest.raises(RawDataError, match="expected 6172 weights"):
        load_region(tmp_path, d2.lips, 6172, {}, get_spec("D2"))
