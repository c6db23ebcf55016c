"""The store: random access, stale/incomplete detection, the Python API, the Hugging Face export."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import a2fbench
from a2fbench import store
from a2fbench.errors import StoreError
from a2fbench.registry import manifests_dir
from a2fbench.store import dataset as store_dataset


class CountingFile(io.RawIOBase):
    """A read-only file object that counts the bytes h5py reads through it."""

    def __init__(self, path: Path, counter: list[int]):
        self.f = open(path, "rb")
        self.counter = counter

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, off: int, whence: int = 0) -> int:
        return self.f.seek(off, whence)

    def tell(self) -> int:
        return self.f.tell()

    def readinto(self, b) -> int:  # noqa: ANN001
        n = self.f.readinto(b)
        self.counter[0] += n or 0
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def test_one_sequence_is_read_without_the_rest(data_tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = [0]

    class Shim:
        @staticmethod
        def File(path, mode="r"):  # noqa: ANN001, ANN205, N802
            assert mode == "r"
            return h5py.File(CountingFile(Path(path), counter), "r")

        string_dtype = h5py.string_dtype

    monkeypatch.setattr(store_dataset, "h5py", Shim)
    size = (data_tiny / "D0" / "store.h5").stat().st_size
    ds = store.open_dataset(data_tiny, "D0")
    opened = counter[0]
    sid = ds.split("test")[1]
    m = ds[sid].motion
    read = counter[0] - opened
    assert m.nbytes <= read < m.nbytes + 256 * 1024  # that sequence's bytes plus a little metadata
    assert opened < 1024 * 1024 and size > 10 * (m.nbytes + opened)
    before = counter[0]
    part = ds[sid].frames(3, 5)
    assert np.array_equal(part, m[3:5]) and counter[0] - before < m.nbytes / 4  # a slice reads its chunks only
    ds.close()


def test_python_api(data_tiny: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "vocaset")
    assert ds.id == "D1" and len(ds) == len(ds.ids) and all(i in ds for i in ds.ids)
    sid = ds.split("test")[0]
    s = ds[sid]
    assert s.subject == sid.rsplit("_", 1)[0] and s.duration == pytest.approx(s.n_frames / 30)
    assert set(ds.subjects) >= {ds[i].subject for i in ds.ids}
    with pytest.raises(StoreError, match="did you mean"):
        ds[sid[:-1] + "9"]
    with pytest.raises(StoreError, match="no split 'tset'"):
        ds.split("tset")
    with pytest.raises(StoreError, match="no template for subject"):
        ds.template("nobody")
    with pytest.raises(StoreError, match="no region set"):
        ds.regions_for("nope")
    assert ds.space_arrays() == {}
    d3 = a2fbench.open_dataset(data_tiny, "D3")
    assert set(d3.space_arrays()) == {"meanshape", "blendshape"}
    # picklable (DataLoader workers), reopening the file in the new process/object
    again = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(again[sid].motion, s.motion)


def test_absent_interrupted_incomplete_and_stale_stores(data_tiny: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match="found nothing; run `a2fbench prepare D3"):
        a2fbench.open_dataset(tmp_path, "D3")
    (tmp_path / ".D3.incomplete").mkdir()
    with pytest.raises(StoreError, match="found an interrupted prepare"):
        a2fbench.open_dataset(tmp_path, "D3")
    shutil.copytree(data_tiny / "D3", tmp_path / "D3")
    f = tmp_path / "D3" / "store.h5"
    with h5py.File(f, "a") as h:
        h.attrs["complete"] = False
    with pytest.raises(StoreError, match="incomplete"):
        a2fbench.open_dataset(tmp_path, "D3")
    with h5py.File(f, "a") as h:
        h.attrs["complete"] = True
        h.attrs["format_version"] = 0
    with pytest.raises(StoreError, match="found format 0"):
        a2fbench.open_dataset(tmp_path, "D3")
    with h5py.File(f, "a") as h:
        h.attrs["format_version"] = store.STORE_FORMAT
    a2fbench.open_dataset(tmp_path, "D3").close()
    # the manifest moved on (version bump): the store is stale
    mdir = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), mdir)
    p = mdir / "D3_3detf_hdtf.yaml"
    doc = yaml.safe_load(p.read_text())
    doc["version"] = 2
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("A2FBENCH_MANIFESTS", str(mdir))
    with pytest.raises(StoreError, match="stale store: prepared from manifest version 1, the manifest is now version 2"):
        a2fbench.open_dataset(tmp_path, "D3")
    assert store.list_prepared(tmp_path)["D3"] is False
    monkeypatch.delenv("A2FBENCH_MANIFESTS")
    f.write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="unreadable"):
        a2fbench.open_dataset(tmp_path, "D3")


def test_store_is_self_describing(data_tiny: Path) -> None:
    with h5py.File(data_tiny / "D2" / "store.h5", "r") as h:
        card = json.loads(h.attrs["card"])
        assert card["id"] == "D2" and bool(h.attrs["complete"])
        assert set(h) >= {"sequences", "templates", "regions", "splits"}
        sid = h["splits/test"][0].decode()
        assert h[f"sequences/{sid}/motion"].id.get_offset() is not None  # contiguous: one read per run of frames
    assert json.loads((data_tiny / "D2" / "card.json").read_text()) == card


@pytest.mark.parametrize("sid,split", [("D0", "val"), ("D3", "test")])
def test_hugging_face_round_trip(data_tiny: Path, tmp_path: Path, sid: str, split: str) -> None:
    datasets = pytest.importorskip("datasets")
    ds = a2fbench.open_dataset(data_tiny, sid)
    hf = ds.to_hf(split, cache_dir=str(tmp_path / "cache"))
    hf.save_to_disk(str(tmp_path / "hf"))
    back = datasets.load_from_disk(str(tmp_path / "hf"))
    assert back.features["motion"].dtype == ds.card["dtype"]  # BIWI stays float64 in the Arrow files
    assert list(back["id"]) == ds.split(split)
    for row in back:
        s = ds[row["id"]]
        motion = np.asarray(row["motion"], dtype=np.float64).astype(s.motion.dtype)
        assert np.array_equal(motion, s.motion)
        assert np.array_equal(np.asarray(row["audio"], np.float32), s.audio)
        assert row["subject"] == s.subject and row["n_frames"] == s.n_frames
    info = json.loads(back.info.description)
    assert info["fingerprint"] == ds.card["fingerprint"] and info["fps"] == ds.card["fps"]


def test_export_hf_command(data_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture) -> None:
    datasets = pytest.importorskip("datasets")
    from a2fbench.cli import main

    out = tmp_path / "out" / "d6_test"
    monkeypatch.setattr("sys.argv", ["a2fbench", "export-hf", "D6", "--data", str(data_tiny), "--split", "test",
                                     "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0 and "2 sequences" in capsys.readouterr().out
    assert len(datasets.load_from_disk(str(out))) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["d6_test"]  # no cache or temporary left
