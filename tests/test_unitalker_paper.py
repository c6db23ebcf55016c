"""Fine-tuning an imported official checkpoint on the stand-ins, and the paper's recipe (configs, identities, the
FLAME face-region loss, every split cut to 20 s, trainable parameter groups)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _official_helpers import official_state_dict, release

import a2fbench
from a2fbench.errors import ConfigError
from unitalker.model import checkpoint as ck
from unitalker.train.assemble import run_identities
from unitalker.model.config import load_config
from unitalker.release.convert import export_official, import_official
from unitalker.train.data import open_sources
from unitalker.train.finetune import finetune_config, limit_trainable
from unitalker.model.loss import Eq2Loss
from unitalker.model.model import HeadSpec, ModelSpec, UniTalker
from unitalker.model.load import load_model
from unitalker.train.loop import train
from unitalker.train.validate import Validator

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
FT = ["train.epochs=3", "train.lr=1e-3", "train.warmup_epochs=0", "train.threads=1", "train.batch_size=4",
      "train.amp=none"]


@pytest.fixture(scope="module")
def imported(data_tiny, tmp_path_factory) -> tuple[Path, Path]:
    """D1 stand-in store + an official-layout checkpoint (D1 head, random weights, a poor model) imported with a
    release whose PCA is the stand-in's own (16 components, the head uses 8)."""
    from a2fbench.spaces.pca import fit_dataset, load_for

    root = tmp_path_factory.mktemp("paper")
    data = root / "data"
    shutil.copytree(data_tiny / "D1", data / "D1")
    fit_dataset("D1", data, components=16, progress=False)
    p = load_for(data, "D1")
    pca = (np.asarray(p.components, np.float32), np.asarray(p.mean, np.float32))
    rel = release(root / "rel", ["D1"], pca={"D1": pca})
    torch.save(official_state_dict(["D1"], head_std=0.3), root / "u.pt")
    return data, import_official(root / "u.pt", rel, root / "run")


def val_lve(run: Path, data: Path) -> float:
    loaded = load_model(run)
    v = Validator(data, ["D1"], loaded.cfg, loaded.identities, loaded.model.encoder.normalize)
    return v(loaded.model, torch.device("cpu"), "none")["D1"]["LVE"]


def test_finetuning_an_imported_model_lowers_validation_lve(imported, tmp_path):
    data, run = imported
    before = val_lve(run, data)
    out = tmp_path / "ft"
    train(data, ["D1"], out, finetune_config(str(run), FT), init_from=str(run), progress=False)
    after = val_lve(out, data)
    assert after < 0.5 * before, (before, after)
    meta, state, _ = ck.read(out)
    src = ck.read(run)[1]
    comps = "heads.flame_5023_verts.components"
    assert torch.equal(state[comps], src[comps])  # the release PCA, as shipped
    assert state["identity.weight"].shape[0] == 5  # the 4 training subjects + pivot (rows started as the old pivot)
    # back to the official layout: D1's 12 rows (our 4 subjects first, the rest the pivot row) + the pivot
    back = torch.load(export_official(out, tmp_path / "ft.pt"), weights_only=True)
    ids = back["decoder.learnable_style_emb.weight"]
    assert ids.shape[0] == 13 and torch.equal(ids[:4], state["identity.weight"][:4])
    assert all(torch.equal(ids[i], state["identity.weight"][4]) for i in range(4, 13))
    assert {k.split(".")[1] for k in back if k.startswith("out_head_dict.")} == {"FLAME_5023_vertices"}
    rel = Path(ck.read(run)[0]["official"]["release"])
    again = import_official(tmp_path / "ft.pt", rel, tmp_path / "again")
    assert torch.equal(ck.read(again)[1]["identity.weight"], ids)


def test_single_sequence_heads_and_identity_only(imported, tmp_path):
    """The paper's few-parameter case: one clip, only the heads and identity rows train."""
    data, run = imported
    before = val_lve(run, data)
    out = tmp_path / "one"
    r = subprocess.run([sys.executable, "-m", "unitalker.cli", "finetune", "--from", str(run), "--data", str(data),
                        "--datasets", "D1", "--out", str(out), "--fraction", "0.001", "--trainable", "heads,identity",
                        "--no-progress", *FT[:-2], "train.epochs=6"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    meta, state, _ = ck.read(out)
    src = ck.read(run)[1]
    assert meta["datasets"][0]["n_train"] == 1 and meta["config"]["train"]["trainable"] == "heads,identity"
    for k in state:
        if k.startswith(("encoder.", "decoder.")):
            assert torch.equal(state[k], src[k]), k
    assert not torch.equal(state["heads.flame_5023_verts.linear.weight"], src["heads.flame_5023_verts.linear.weight"])
    assert not torch.equal(state["identity.weight"][0], src["identity.weight"][-1])  # the subject's row trained
    assert val_lve(out, data) < before


def test_trainable_groups_and_the_warmup_conflict():
    cfg = load_config("tiny")
    m = UniTalker(cfg, ModelSpec([HeadSpec("a", 4)], 2, ["D9/x"]))
    limit_trainable(m, "heads,identity")
    assert {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad} == {"heads", "identity"}
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="warmup_epochs=0"):
        limit_trainable(m, "encoder")
    with pytest.raises(ConfigError, match="train.trainable"):
        load_config("tiny", ["train.trainable=heads,eyes"])


# ------------------------------------------------------------------------------------- the recipe
def test_paper_configs_hold_the_official_recipe():
    for name, enc in (("unitalker-b-paper", "microsoft/wavlm-base-plus"),
                      ("unitalker-l-paper", "facebook/wav2vec2-large-xlsr-53")):
        c = load_config(name)
        t = c["train"]
        assert c["model"]["encoder"]["name"] == enc and c["model"]["encoder"]["attention"] == "eager"
        assert (t["batch_size"], t["amp"], t["lr"], t["lr_schedule"], t["warmup_epochs"], t["epochs"]) == \
            (1, "none", 1e-4, "constant", 1, 100)
        assert c["model"]["identities"] == "all" and c["data"]["cut_eval"] and c["data"]["max_seconds"] == 20.0
        assert t["flame_param_weight"] == 0.0 and t["lr_warmup_steps"] == 0 and t["grad_clip"] == 0.0


def test_identity_rows_for_every_subject_in_store_order(data_tiny):
    srcs = open_sources(data_tiny, ["D0", "D1"], load_config("tiny"))
    ds1 = a2fbench.open_dataset(data_tiny, "D1")
    train_subj = {ds1[s].subject for s in ds1.split("train")}
    every = run_identities(srcs, load_config("tiny", ["model.identities=all"]))
    d1 = [k.split("/", 1)[1] for k in every.keys if k.startswith("D1/")]
    assert d1 == ds1.subjects and len(d1) == 8 > len(train_subj)  # val/test subjects have rows too
    d0 = [k for k in every.keys if k.startswith("D0/")]
    assert len(d0) == 6  # BIWI: train/val/test subjects (Test-B's unseen subjects are not in those splits)
    few = run_identities(srcs, load_config("tiny"))
    assert {k.split("/", 1)[1] for k in few.keys if k.startswith("D1/")} == train_subj


def test_flame_loss_on_face_vertices_without_parameter_term(data_tiny, tmp_path):
    from a2fbench.spaces import torch_converter

    ds = a2fbench.open_dataset(data_tiny, "D5")
    conv = torch_converter("flame_params_413", ds.space_arrays())
    idx = np.arange(3, 5023, 11)
    np.save(tmp_path / "face.npy", idx)
    g = torch.Generator().manual_seed(0)
    tmpl = torch.randn(1, 413, generator=g) * 0.1
    gt = tmpl[:, None] + torch.randn(1, 6, 413, generator=g) * 0.05
    off = torch.randn(1, 6, 413, generator=g) * 0.05
    batch = {"n_frames": torch.tensor([6]),
             "groups": {"flame_params_413": {"rows": torch.tensor([0]), "motion": gt, "template": tmpl}}}
    sp = "flame_params_413"
    tc = {"pca_weight": 0.01, "param_weight": 1e-4, "flame_param_weight": 0.0,
          "flame_face_index": str(tmp_path / "face.npy")}
    paper, _ = Eq2Loss.from_config({sp: conv}, {sp: 1.0}, {sp: 413}, tc)({sp: (off, None)}, batch)
    pred = off + tmpl[:, None]
    want = ((conv(pred)[..., idx, :] - conv(gt)[..., idx, :]) ** 2).mean()
    torch.testing.assert_close(paper, want, rtol=1e-5, atol=0)
    tc_ours = {**tc, "flame_param_weight": 1e-4, "flame_face_index": None}
    ours, _ = Eq2Loss.from_config({sp: conv}, {sp: 1.0}, {sp: 413}, tc_ours)({sp: (off, None)}, batch)
    want = ((conv(pred) - conv(gt)) ** 2).mean() + 1e-4 * ((pred - gt) ** 2).mean()
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=0)
    np.save(tmp_path / "bad.npy", np.array([0, 6000]))
    with pytest.raises(ConfigError, match="0..5022"):
        Eq2Loss.from_config({sp: conv}, {sp: 1.0}, {sp: 413}, {**tc, "flame_face_index": str(tmp_path / "bad.npy")})


def test_every_split_cut_to_max_seconds(data_tiny):
    cfg = load_config("tiny", ["data.max_seconds=0.8", "data.cut_eval=true"])
    srcs = open_sources(data_tiny, ["D1"], cfg)
    from unitalker.train.assemble import run_identities as ids

    v = Validator(data_tiny, ["D1"], cfg, ids(srcs, cfg), False)
    assert v.clips.frames and max(v.clips.frames) == 24  # 0.8 s x 30 fps
    full = Validator(data_tiny, ["D1"], load_config("tiny", ["data.max_seconds=0.8"]), ids(srcs, cfg), False)
    assert max(full.clips.frames) > 24


def test_imported_run_predicts_and_evaluates(imported, tmp_path):
    """The imported run is a run like ours: predict a split, score it with a2fbench evaluate."""
    from a2fbench.scoring.evaluate import evaluate
    from unitalker.infer.predict import predict

    data, run = imported
    # this fixture's release templates are random, not the store's, so no subject has its own row (--identity gt
    # refuses that in one line: tests/test_unitalker_rows.py); the pivot animates every clip
    pred = predict(run, data, "D1", tmp_path / "pred", split="test", identity="pivot", device="cpu", progress=False)
    ds = a2fbench.open_dataset(data, "D1")
    assert sorted(p.stem for p in pred.glob("*.npy")) == sorted(ds.split("test"))
    doc = evaluate("D1", pred, data, progress=False)
    assert np.isfinite(doc["metrics"]["LVE"]["value"])


def test_configs_saved_before_new_keys_still_load():
    old = load_config("tiny")
    for k in ("trainable", "flame_param_weight", "flame_face_index"):
        del old["train"][k]
    del old["model"]["identities"], old["data"]["cut_eval"]
    c = load_config(None, ["train.trainable=heads"], base=old)
    assert c["train"]["trainable"] == "heads" and c["model"]["identities"] == "train" and c["data"]["cut_eval"] is False


def _without_unitalker_set(data: Path, to: Path) -> Path:
    """A copy of ``data``'s D1 store prepared as if UniTalker's mouth list had been absent from the raw folder."""
    import h5py

    shutil.copytree(data / "D1", to / "D1")
    for h5 in (to / "D1").rglob("*.h5"):
        with h5py.File(h5, "r+") as f:
            if "regions" in f and "unitalker" in f["regions"]:
                del f["regions"]["unitalker"]
    assert "unitalker" not in a2fbench.open_dataset(to, "D1").region_sets
    return to


def test_mouth_list_from_the_release_folder_scores_as_the_store_set(imported, tmp_path):
    """UniTalker's mouth list given with the release folder (not the raw folder): import-official carries it into
    the run, the predictions record names it, and `evaluate --protocol unitalker` on a store prepared without it
    gives the number, region digest and protocol version that the store's own `unitalker` set gives."""
    from a2fbench.errors import RawDataError, StoreError
    from a2fbench.scoring.evaluate import evaluate
    from unitalker.infer.predict import predict

    data, _ = imported
    lips = np.asarray(a2fbench.open_dataset(data, "D1").regions_for("unitalker")["lips"], np.int64)
    rel = release(tmp_path / "rel", ["D1"], seed=3)
    (rel / "resources" / "binary_resources").mkdir(parents=True)
    np.save(rel / "resources" / "binary_resources" / "02_flame_mouth_idx.npy", lips)
    torch.save(official_state_dict(["D1"], head_std=0.3), tmp_path / "u.pt")
    run = import_official(tmp_path / "u.pt", rel, tmp_path / "run")
    carried = ck.read_meta(ck.resolve(run))["official"]["mouth_lists"]["D1"]
    assert carried["file"] == "resources/02_flame_mouth_idx.npy" and carried["n"] == lips.size
    assert np.array_equal(np.load(run / carried["file"]), lips)

    pred = predict(run, data, "D1", tmp_path / "pred", split="test", identity="pivot", device="cpu",
                   progress=False, protocol="unitalker")
    with_set = evaluate("D1", pred, data, protocol="unitalker", progress=False, n_bootstrap=10)
    bare = _without_unitalker_set(data, tmp_path / "bare")
    via_release = evaluate("D1", pred, bare, protocol="unitalker", progress=False, n_bootstrap=10)
    assert with_set["metrics"]["LVE"]["value"] == via_release["metrics"]["LVE"]["value"]
    a, b = with_set["dataset"]["regions"], via_release["dataset"]["regions"]
    assert a["set"] == b["set"] == "unitalker" and a["digest"] == b["digest"]
    assert b["files"]["lips"]["sha256"] == carried["sha256"] and "release" in b["files"]["lips"]["source"]
    assert via_release["protocol"]["version"] == with_set["protocol"]["version"] and "fallback" not in via_release[
        "protocol"]
    # without the record's list the same store falls back, loudly, under the other version (never ranked together)
    (pred / ".a2fbench-predictions.json").rename(tmp_path / "record.json")
    fallback = evaluate("D1", pred, bare, protocol="unitalker", progress=False, n_bootstrap=10)
    assert fallback["protocol"]["version"] != with_set["protocol"]["version"] and fallback["protocol"]["fallback"]
    (tmp_path / "record.json").rename(pred / ".a2fbench-predictions.json")
    # the list is what scores: another release list (half of it) gives --region lips=FILE's number, not the set's
    half = tmp_path / "half" / "resources"
    half.mkdir(parents=True)
    np.save(half / "02_flame_mouth_idx.npy", lips[: lips.size // 2])
    shutil.copytree(rel / "D1_vocaset", tmp_path / "half" / "D1_vocaset")
    run_half = import_official(tmp_path / "u.pt", tmp_path / "half", tmp_path / "run_half")
    pred_half = predict(run_half, data, "D1", tmp_path / "pred_half", split="test", identity="pivot", device="cpu",
                        progress=False, protocol="unitalker")
    v_half = evaluate("D1", pred_half, bare, protocol="unitalker", progress=False, n_bootstrap=10)["metrics"]["LVE"]
    v_file = evaluate("D1", pred_half, bare, protocol="unitalker", progress=False, n_bootstrap=10,
                      region_files={"lips": half / "02_flame_mouth_idx.npy"})["metrics"]["LVE"]
    assert v_half["value"] == v_file["value"] != with_set["metrics"]["LVE"]["value"]
    # the carried file edited since the import: one line, nothing scored
    np.save(run / carried["file"], lips[:-1])
    with pytest.raises(StoreError, match="changed since import-official"):
        evaluate("D1", pred, bare, protocol="unitalker", progress=False, n_bootstrap=10)
    # a list that indexes past V is refused at the import, before the run folder exists
    np.save(rel / "resources" / "binary_resources" / "02_flame_mouth_idx.npy", np.array([1, 5023]))
    with pytest.raises(RawDataError, match=r"expected vertex indices in \[0, 5023\) for D1"):
        import_official(tmp_path / "u.pt", rel, tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
