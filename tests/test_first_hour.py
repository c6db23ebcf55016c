"""What got in a new user's way in their first hour (issue 11), each with a test that failed before the fix."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import a2fbench
from a2fbench.errors import PredictionError, StoreError
from a2fbench.scoring.evaluate import evaluate
from a2fbench.scoring.predictions import write_provenance
from a2fbench.scoring.results import aggregate, finalize
from a2fbench.util.fsutil import write_json
from leaderboard import db, units
from leaderboard.model import LeaderboardError, method_meta
from leaderboard.synthetic import make_results


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          input=stdin if stdin is not None else "")


def _lb(*args: str) -> subprocess.CompletedProcess:
    return _run("a2fbench.cli", "leaderboard", *args)


def _db_state(path: Path) -> tuple[int, str]:
    """Row count and a digest of every stored row: what 'the database untouched' means."""
    con = sqlite3.connect(path)
    h = hashlib.sha256()
    n = 0
    for table in ("entries", "metrics", "documents", "scores"):
        for row in con.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
            h.update(repr(row).encode())
            n += table == "entries"
    con.close()
    return n, h.hexdigest()


@pytest.fixture
def board(tmp_path: Path) -> Path:
    path = tmp_path / "lb.sqlite"
    for k, name in enumerate(("alpha", "beta")):
        write_json(tmp_path / f"r{k}.json", make_results(seed=k, scale=1 + k))
        assert _lb("submit", str(tmp_path / f"r{k}.json"), "--method", name, "--db", str(path)).returncode == 0
    return path


def _ids(path: Path) -> dict[str, int]:
    doc = json.loads(_lb("show", "--json", "--db", str(path)).stdout)
    return {e["method"]: e["id"] for e in doc["entries"] if e["kind"] == "evaluated"}


# ------------------------------------------------------------------------------------ 1. remove
def test_remove_takes_show_ids_asks_first_and_refuses_unknown_ids(board: Path) -> None:
    ids = _ids(board)
    text = _lb("show", "--db", str(board)).stdout
    assert any(line.split()[:1] == [str(ids["beta"])] and "beta" in line for line in text.splitlines())  # id column
    before = _db_state(board)
    r = _lb("remove", str(ids["beta"]), "--db", str(board))  # no terminal, no --yes: refused
    assert r.returncode == 1 and "--yes" in r.stderr and "Traceback" not in r.stderr
    assert _db_state(board) == before
    r = _lb("remove", "987654", "--yes", "--db", str(board))
    assert r.returncode == 1 and "`id` column" in r.stderr and "Traceback" not in r.stderr
    assert _db_state(board) == before
    r = _lb("remove", str(ids["beta"]), "--yes", "--db", str(board))
    assert r.returncode == 0 and "beta" in r.stdout
    assert set(_ids(board)) == {"alpha"} and _db_state(board)[0] == before[0] - 1


# ------------------------------------------------------------------------------------ 7. edit
def test_resubmitting_updates_metadata_and_edit_changes_it_by_id(board: Path, tmp_path: Path) -> None:
    ids = _ids(board)
    r = _lb("submit", str(tmp_path / "r0.json"), "--method", "alpha", "--params", "96.05M", "--inference-time",
            "17.5ms", "--db", str(board))
    assert r.returncode == 0 and "params None -> 96050000" in r.stdout.replace("unset", "None")
    e = [x for x in json.loads(_lb("show", "--json", "--db", str(board)).stdout)["entries"] if x["id"] == ids["alpha"]][0]
    assert e["params"] == 96_050_000 and e["inference_s"] == pytest.approx(0.0175)
    r = _lb("edit", str(ids["alpha"]), "--version", "v2", "--method", "alpha-renamed", "--db", str(board))
    assert r.returncode == 0 and "v2" in r.stdout
    assert "alpha-renamed" in _ids(board)
    before = _db_state(board)
    r = _lb("edit", "987654", "--params", "1M", "--db", str(board))
    assert r.returncode == 1 and "Traceback" not in r.stderr and _db_state(board) == before


def test_a_verified_entry_never_changes_its_numbers(tmp_path: Path) -> None:
    path = tmp_path / "lb.sqlite"
    conn = db.connect(path)
    doc = make_results(seed=3)
    eid = db.submit_doc(conn, doc, method_meta(method="m"), verified=True).entry_id
    conn.close()
    # the same evaluation (same predictions, data, protocol) with other numbers: a re-made, altered file
    other = json.loads(json.dumps(doc))
    for r in other["per_sequence"]:
        r["LVE"] *= 1.1
    other["metrics"]["LVE"]["value"] = aggregate("LVE", other["per_sequence"])
    write_json(tmp_path / "other.json", finalize(other))
    before = _db_state(path)
    r = _lb("submit", str(tmp_path / "other.json"), "--method", "m", "--db", str(path))
    assert r.returncode == 1 and "verified" in r.stderr and f"#{eid}" in r.stderr and "Traceback" not in r.stderr
    assert _db_state(path) == before
    conn = db.connect(path)  # unverified: the numbers are replaced, and it says so
    eid2 = db.submit_doc(conn, make_results(seed=4), method_meta(method="n")).entry_id
    redo = json.loads(json.dumps(make_results(seed=4)))
    for r in redo["per_sequence"]:
        r["LVE"] *= 2
    redo["metrics"]["LVE"]["value"] = aggregate("LVE", redo["per_sequence"])
    out = db.submit_doc(conn, finalize(redo), method_meta(method="n"))
    assert out.entry_id == eid2 and "replaced (LVE changed)" in out.message
    assert db.check_consistency(conn) == []
    conn.close()


def test_results_of_an_unknown_dataset_are_refused_with_the_database_untouched(board: Path, tmp_path: Path) -> None:
    doc = make_results(seed=7)
    doc["dataset"]["id"] = "D9"
    write_json(tmp_path / "d9.json", finalize(doc))
    before = _db_state(board)
    r = _lb("submit", str(tmp_path / "d9.json"), "--method", "x", "--db", str(board))
    assert r.returncode == 1 and "D9" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert _db_state(board) == before


# ------------------------------------------------------------------------------------ 8. units
def test_values_show_in_the_dataset_display_unit_and_unconvertible_ones_are_marked() -> None:
    assert units.display_units("D1")["LVE"] == "1e-5 m^2" and units.display_units("D0")["MVE"].startswith("1e-3 ")
    assert units.factor("1e-5 m^2", "1e-5 m^2") == 1.0
    assert units.factor("m^2", "1e-5 m^2") == pytest.approx(1e5)
    assert units.factor("1e-6 m^2", "mm^2") == pytest.approx(1.0)  # the paper's MeshTalk m^2 vs our mm^2
    assert units.factor("1e-3 m", "m^2") is None and units.factor("as printed (scale unknown)", "m^2") is None
    assert units.to_display(8.4e-6, "m^2", "D1", "LVE") == pytest.approx(0.84)
    conn = db.connect(":memory:")
    from leaderboard.render import json_rows, load_ranked, terminal_table

    entries, overall = load_ranked(conn, ["D1"])
    text = terminal_table(entries, overall)
    assert "units: LVE 1e-5 m^2" in text
    rows = json_rows(entries, overall, ":memory:")["entries"]
    ff = [e for e in rows if e["method"] == "FaceFormer" and "Table 2" in e["protocol"]][0]["metrics"]["LVE"]
    assert ff["display_value"] == pytest.approx(1.1696) and ff["display_unit"] == "1e-5 m^2"
    own = [e for e in rows if e["method"] == "SelfTalk" and "SelfTalk" in e["protocol"]][0]["metrics"]["LVE"]
    assert own["value"] == 3.2238 and own["display_value"] is None  # its quote states no scale: never converted
    assert "3.2238†" in text
    conn.close()


def test_the_board_shows_each_metric_in_the_unit_of_its_results_file(data_tiny: Path, tmp_path: Path) -> None:
    """One display-scale rule: LVD, which the manifest's display table does not list, is shown like MVE on the
    board (1e-3 m on D1), as the results file says, not in plain m."""
    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = tmp_path / "pred"
    pred.mkdir()
    for sid in ds.split("test"):
        np.save(pred / f"{sid}.npy", np.asarray(ds[sid].motion, np.float32) * 1.01)
    board = units.display_units("D1")
    for protocol in ("a2f", "unitalker"):  # unitalker scores LVD
        for name, m in evaluate("D1", pred, data_tiny, protocol=protocol, progress=False)["metrics"].items():
            factor, base, power = units.parse(board[name])
            assert (base, power) == units.parse(m["unit"])[1:], name
            assert factor == pytest.approx(m["display_scale"], rel=1e-12), name
    assert board["LVD"] == "1e-3 m"


# ------------------------------------------------------------------------------------ 3, 5. README's pca line, quiet logs
def test_pca_default_fits_the_tiny_stand_ins_and_prepare_logs_are_plain_text(raw_tiny: Path, tmp_path: Path) -> None:
    r = _run("a2fbench.cli", "prepare", "D0", "--raw", str(raw_tiny), "--out", str(tmp_path / "data"))
    assert r.returncode == 0
    assert "\r" not in r.stderr + r.stdout and "\x1b" not in r.stderr + r.stdout  # not a terminal: no bars
    r = _run("a2fbench.cli", "pca", "D0", "--data", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    assert "note: D0 train has" in r.stderr and "instead of 512" in r.stderr
    r = _run("a2fbench.cli", "pca", "D0", "--data", str(tmp_path / "data"), "--components", "512")
    assert r.returncode == 1 and "at most" in r.stderr  # an explicit number is never lowered


# ------------------------------------------------------------------------------------ 11. small ones
def test_method_is_stamped_from_the_option_or_the_provenance_file(data_tiny: Path, tmp_path: Path) -> None:
    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = tmp_path / "pred"
    pred.mkdir()
    for sid in ds.split("test"):
        np.save(pred / f"{sid}.npy", np.asarray(ds[sid].motion, np.float32))
    assert "method" not in evaluate("D1", pred, data_tiny, progress=False)["predictions"]
    assert evaluate("D1", pred, data_tiny, progress=False, method="mine")["predictions"]["method"] == "mine"
    write_provenance(pred, method="UniTalker", checkpoint="/runs/x/epoch-0003")
    doc = evaluate("D1", pred, data_tiny, progress=False)
    assert doc["predictions"]["method"] == "UniTalker"
    assert doc["predictions"]["source"]["checkpoint"] == "/runs/x/epoch-0003"
    assert doc["predictions"]["n_files"] == len(ds.split("test"))  # the provenance file is not a prediction


def test_evaluate_is_quiet_about_the_folders_own_record_only(data_tiny: Path, tmp_path: Path, caplog) -> None:
    """Issue 22 item 7: predict's own record (.a2fbench-predictions.json) is read, not reported as ignored; any
    other hidden entry still is."""
    import logging

    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = tmp_path / "pred"
    pred.mkdir()
    for sid in ds.split("test"):
        np.save(pred / f"{sid}.npy", np.asarray(ds[sid].motion, np.float32))
    write_provenance(pred, method="UniTalker")
    with caplog.at_level(logging.INFO):
        evaluate("D1", pred, data_tiny, progress=False)
    assert not [r for r in caplog.records if "hidden" in r.getMessage()]
    (pred / ".DS_Store").write_bytes(b"x")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        evaluate("D1", pred, data_tiny, progress=False)
    assert [r.getMessage() for r in caplog.records if "hidden" in r.getMessage()] == \
        [f"{pred}: ignoring 1 hidden entries (.DS_Store)"]


def test_an_epoch_is_one_short_log_line_whatever_the_number_of_datasets() -> None:
    """Issue 22 item 7: with eight datasets the epoch line was ~400 characters; now the validation part is the
    mean ratio to the static template and the best and worst dataset (all of them stay in val.csv), and an ETA."""
    from unitalker.train.loop import _eta, _val_summary

    res = {f"D{i}": {"LVE": 1e-5 * (i + 1), "static": 2e-5 * (i + 1), "ratio": 0.5 + 0.05 * i} for i in range(8)}
    text = _val_summary(res)
    assert "0.68x mean over 8 datasets" in text and "best D0 0.50x" in text and "worst D7 0.85x" in text
    line = f"epoch 60/60: loss 1.2345e-06, 123.4 audio-s/s; {text}{_eta(1234.0, 59, 1)}"
    assert len(line) <= 200, len(line)
    assert _eta(100.0, 4, 8) == "; eta 3m20s" and _eta(10.0, 5, 3) == "; eta 6s" and _eta(5.0, 2, 0) == ""
    one = _val_summary({"D1": {"LVE": 2.752e-06, "static": 9.8e-6, "ratio": 0.28}})
    assert one == "val LVE D1 2.752e-06 (0.28x static)"


def test_one_line_hints_for_common_mistakes(raw_tiny: Path, data_tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="raw files\\? Prepare them first"):
        a2fbench.open_dataset(raw_tiny, "D1")
    ds = a2fbench.open_dataset(data_tiny, "D1")
    pred = tmp_path / "pred"
    pred.mkdir()
    for sid in ds.split("test"):
        np.save(pred / f"{sid}.npy", np.asarray(ds[sid].motion, np.float32).T)  # transposed by mistake
    with pytest.raises(PredictionError, match="looks transposed, save array.T"):
        evaluate("D1", pred, data_tiny, progress=False)
    r = _run("a2fbench.cli", "evaluate", "--dataset", "D1")  # a usage error: our prefix, not click's
    assert r.returncode == 2 and "error: Missing argument" in r.stderr and "Error:" not in r.stderr
    r = _run("unitalker.cli", "predict", "--dataset", "biwii", "--checkpoint", str(tmp_path), "--out",
             str(tmp_path / "p"))
    assert r.returncode == 1 and "did you mean 'biwi'" in r.stderr


def test_blendshape_outputs_are_the_models_own() -> None:
    """No clamp: the official output is not clamped, so predictions keep weights outside [0, 1] (the ARKit CSV
    clamps, as its format demands)."""
    from unitalker.infer.predict import to_native as _native

    x = np.array([[-0.06, 0.5, 1.2]], np.float32)
    assert _native(x, np.zeros(3), 1.0, "arkit52").tolist() == x.tolist()
    assert _native(x, np.ones(3), 0.5, "arkit52").tolist() == (x.astype(np.float64) / 0.5 + 1).astype(np.float32).tolist()


def test_params_read_the_same_in_the_terminal_and_on_the_page() -> None:
    from leaderboard.render import fmt_params

    assert fmt_params(270_000) == "0.27M" and fmt_params(96_150_000) == "96.2M" and fmt_params(96_050_000) == "96M" and fmt_params(313_000_000) == "313M"
    js = (Path(__file__).resolve().parent.parent / "leaderboard" / "static" / "page.js").read_text()
    assert 'Number((p / 1e6).toPrecision(3)) + "M"' in js  # the same rule


def test_unknown_leaderboard_entry_edit_is_one_line(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "lb.sqlite")
    with pytest.raises(LeaderboardError, match="found none"):
        db.edit_entry(conn, 99999, method_meta(method="x", params="1M"))
    seeded = db.fetch_entries(conn, kind="reported")[0]["id"]
    with pytest.raises(LeaderboardError, match="not editable"):
        db.edit_entry(conn, seeded, method_meta(method="x", params="1M"))
    conn.close()


def test_plot_of_a_run_writes_a_png_with_both_panels(tmp_path: Path) -> None:
    from unitalker.train.plot import plot_run, read_curves, val_series

    run = tmp_path / "run"
    run.mkdir()
    rows = ["epoch,batch,step,phase,loss,rec,pca,param,lr,clips,audio_seconds,seconds"]
    for step in range(1, 41):
        ep = (step - 1) // 10
        rows.append(f"{ep},{(step - 1) % 10},{step},{int(ep > 0)},{1.0 / step},0,0,0,1e-4,4,8.0,0.1")
    (run / "log.csv").write_text("\n".join(rows) + "\n")
    # as the trainer writes it: after log.csv's epoch e (0-based, steps 10e+1..10e+10) it validates and records
    # the number of epochs done, e + 1, with the last step
    (run / "val.csv").write_text("epoch,step,dataset,LVE,static_LVE,ratio\n" + "".join(
        f"{e + 1},{10 * (e + 1)},D1,{1e-5 / (e + 1):.6e},1e-5,{1 / (e + 1):.4f}\n" for e in range(4)))
    c = read_curves(run)
    assert len(c["steps"]) == 40 and c["epochs"][0] == pytest.approx(np.mean([1.0 / s for s in range(1, 11)]))
    assert [p[1] for p in c["val"]["D1"]] == [1.0, 0.5, 0.3333, 0.25]
    # issue 22 item 9: each point sits at the epoch it followed: 1 + log.csv's epoch of the step it was made at
    epoch_of_step = {s: ep for s, _, ep, _ in c["steps"]}
    xs, _ = val_series(c)["D1"]
    assert xs == [1 + epoch_of_step[10 * (e + 1)] for e in range(4)] == [1, 2, 3, 4]
    png = plot_run(run)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    shutil.rmtree(run)
    r = _run("unitalker.cli", "plot", str(run))
    assert r.returncode == 1 and "log.csv" in r.stderr and "Traceback" not in r.stderr


def test_cpu_threads_leave_busy_cores_to_their_owners() -> None:
    """Item 4: torch threads = the cores other processes leave free, measured now (not the load average, which
    counts this process's own past work)."""
    from unitalker.model.runtime import auto_threads, busy_elsewhere

    assert auto_threads(cores=2, busy=0.0) == 2 and auto_threads(cores=2, busy=2.0) == 1
    assert auto_threads(cores=8, busy=2.6) == 5 and auto_threads(cores=1, busy=5.0) == 1
    hog = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        import time

        time.sleep(0.5)  # let it start spinning
        seen = busy_elsewhere(window=0.5)
        sum(i * i for i in range(3_000_000))  # our own work is not counted as a neighbour's
        assert seen is not None and seen >= 0.5, seen
    finally:
        hog.kill()
        hog.wait()
