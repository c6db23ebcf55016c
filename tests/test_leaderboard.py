"""Leaderboard: store, idempotent submission, refusal of inconsistent files, ranking, ties, Borda, reported
rows, migrations, terminal/JSON/HTML output, the web app's routes and cache, and submit --verify."""

from __future__ import annotations

import copy
import gzip
import html
import json
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from a2fbench.scoring.metrics import stats
from a2fbench.scoring.protocols import aggregation
from a2fbench.scoring.results import aggregate, finalize
from a2fbench.util.fsutil import write_json
from leaderboard import db, entries, ranking, render
from leaderboard.model import (
    LeaderboardError,
    load_reported,
    method_meta,
    parse_params,
    parse_seconds,
)
from leaderboard.synthetic import make_results, streamed

HOSTILE = "<script>alert(1)</script>"


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "a2fbench.cli", "leaderboard", *args], capture_output=True, text=True,
                       timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _evaluated(conn: sqlite3.Connection) -> list[dict]:
    return db.fetch_entries(conn, kind="evaluated")


@pytest.fixture
def conn(tmp_path: Path):
    c = db.connect(tmp_path / "lb.sqlite")
    yield c
    c.close()


# ------------------------------------------------------------------------------------------ submission
def test_submit_is_idempotent_and_one_evaluation_belongs_to_one_method(conn):
    doc = make_results(seed=1)
    first = db.submit_doc(conn, doc, method_meta(method="A"))
    assert first.added
    again = db.submit_doc(conn, doc, method_meta(method="A"))
    assert not again.added and again.entry_id == first.entry_id
    # the same predictions re-evaluated (new timestamp, so a new content hash) are the same evaluation
    redo = finalize({**doc, "created": "2027-01-01T00:00:00+00:00"})
    assert redo["content_hash"] != doc["content_hash"]
    assert not db.submit_doc(conn, redo, method_meta(method="A")).added
    with pytest.raises(LeaderboardError, match="already entry .* under method 'A'"):
        db.submit_doc(conn, doc, method_meta(method="B"))
    rows = _evaluated(conn)
    assert [r["method"] for r in rows] == ["A"]
    assert rows[0]["fingerprint"] == doc["content_hash"]
    assert db.check_consistency(conn) == []


def test_stored_entry_round_trips_metadata_metrics_and_per_sequence_scores(conn):
    doc = make_results(seed=2, n_seq=7)
    meta = method_meta(method=HOSTILE, version="v2", params="96.05M", inference_s="17.5ms", inference_device="H100",
                       training_data="D0..D7 train", code_url="https://example.org/x", trained_on_test_ids=False)
    eid = db.submit_doc(conn, doc, meta).entry_id
    (e,) = _evaluated(conn)
    assert e["id"] == eid and e["method"] == HOSTILE and e["version"] == "v2"
    assert e["params"] == 96_050_000 and e["inference_s"] == pytest.approx(0.0175)
    assert e["trained_on_test_ids"] is False and e["synthetic"] is True and e["verified"] is False
    for name, m in doc["metrics"].items():
        assert e["metrics"][name]["value"] == m["value"]
        assert e["metrics"][name]["ci95"] == list(m["ci95"])
    assert db.fetch_document(conn, eid) == doc
    seqset, mat = db.fetch_scores(conn)[eid]
    ordered = sorted(doc["per_sequence"], key=lambda r: r["id"])
    assert mat[:, 0].tolist() == [r["frames"] for r in ordered]
    assert mat[:, 1].tolist() == [r["LVE"] for r in ordered]
    assert mat[:, 4].tolist() == [r["FDD"] for r in ordered]


def test_consistency_check_detects_damage(conn):
    eid = db.submit_doc(conn, make_results(seed=9), method_meta(method="A")).entry_id
    assert db.check_consistency(conn) == []
    conn.execute("UPDATE metrics SET value = value * 2 WHERE entry_id = ? AND metric = 'LVE'", (eid,))
    assert any("stored LVE" in p for p in db.check_consistency(conn))
    conn.execute("DELETE FROM scores WHERE entry_id = ?", (eid,))
    assert any("lacks its document or scores" in p for p in db.check_consistency(conn))
    conn.execute("DELETE FROM metrics WHERE entry_id = ?", (eid,))
    assert any("has no metrics" in p for p in db.check_consistency(conn))


def _tamper_aggregate(doc: dict) -> dict:
    bad = copy.deepcopy(doc)
    bad["metrics"]["LVE"]["value"] *= 1.01
    return finalize(bad)  # hash recomputed: only the numbers disagree


def _tamper_hash(doc: dict) -> dict:
    bad = copy.deepcopy(doc)
    bad["metrics"]["MVE"]["ci95"] = [0.0, 1.0]  # an edit without re-hashing
    return bad


def _no_hash(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "content_hash"}


@pytest.mark.parametrize("tamper, message", [
    (_tamper_aggregate, "LVE is .* but its per-sequence scores give"),
    (_tamper_hash, "content_hash does not match"),
    (_no_hash, "expected a content_hash"),
], ids=["aggregate", "hash", "no-hash"])
def test_inconsistent_results_are_refused_with_one_line_and_nothing_stored(tmp_path, tamper, message):
    path = tmp_path / "bad.json"
    write_json(path, tamper(make_results(seed=3)))
    r = _cli("submit", str(path), "--method", "X", "--db", str(tmp_path / "lb.sqlite"), check=False)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "lb.sqlite").exists()  # refused before the database was even opened


def test_cli_submit_show_json_and_usage_errors(tmp_path):
    dbp = str(tmp_path / "lb.sqlite")
    for k in range(2):
        write_json(tmp_path / f"r{k}.json", make_results(seed=k, scale=1 + k))
    out = _cli("submit", str(tmp_path / "r0.json"), "--method", HOSTILE, "--params", "96M", "--db", dbp).stdout
    assert out.startswith("added entry #")
    assert "nothing changed" in _cli("submit", str(tmp_path / "r0.json"), "--method", HOSTILE, "--db", dbp).stdout
    _cli("submit", str(tmp_path / "r1.json"), "--method", "m1", "--db", dbp)
    doc = json.loads(_cli("show", "--dataset", "vocaset", "--json", "--db", dbp).stdout)
    evald = [r for r in doc["entries"] if r["kind"] == "evaluated"]
    assert [r["method"] for r in evald] == [HOSTILE, "m1"]  # ranked by LVE: scale 1 beats scale 2
    assert evald[0]["rank"] == 1 and evald[0]["metrics"]["LVE"]["best"] is True
    assert {r["dataset"] for r in doc["entries"]} == {"D1"}
    assert any(r["kind"] == "reported" and r["method"] == "SelfTalk" for r in doc["entries"])
    assert [o["method"] for o in doc["overall"]] == [HOSTILE, "m1"]
    text = _cli("show", "--db", dbp).stdout
    assert HOSTILE in text and "SelfTalk" in text and "Overall" in text
    bad = _cli("submit", str(tmp_path / "r0.json"), "--method", "a\x1b[31mb", "--db", dbp, check=False)
    assert bad.returncode == 1 and "control character" in bad.stderr
    bad = _cli("submit", str(tmp_path / "r0.json"), "--method", "x", "--code-url", "javascript:alert(1)",
               "--db", dbp, check=False)
    assert bad.returncode == 1 and "http" in bad.stderr
    usage = _cli("submit", str(tmp_path / "r0.json"), "--db", dbp, check=False)  # no method anywhere
    assert usage.returncode == 1 and "--method" in usage.stderr
    missing = _cli("show", "--dataset", "D9", "--db", dbp, check=False)
    assert missing.returncode == 1 and "unknown dataset" in missing.stderr


def test_read_commands_do_not_create_a_database(tmp_path):
    dbp = tmp_path / "none.sqlite"
    r = _cli("show", "--json", "--db", str(dbp))
    assert "no leaderboard" in r.stderr and not dbp.exists()
    rows = json.loads(r.stdout)["entries"]
    assert rows and all(e["kind"] == "reported" for e in rows)


def test_metadata_parsing():
    assert parse_params("96.05M") == 96_050_000 and parse_params("1.2B") == 1_200_000_000 and parse_params(317) == 317
    assert parse_seconds("17.5ms") == pytest.approx(0.0175) and parse_seconds("2s") == 2.0
    for bad in ("lots", "-3"):
        with pytest.raises(LeaderboardError):
            method_meta(method="x", params=bad)
    with pytest.raises(LeaderboardError, match="method name"):
        method_meta(method="   ")
    with pytest.raises(LeaderboardError, match="control character"):
        method_meta(method="two\nlines")


# ------------------------------------------------------------------------------------------ ranking
def _entry(eid: int, values: dict, *, ci: dict | None = None, method: str | None = None, group: str = "g") -> dict:
    return {"id": eid, "kind": "evaluated", "method": method or f"m{eid}", "version": None, "dataset": "D1",
            "split": "test", "protocol": "a2f", "protocol_version": 1, "dataset_fingerprint": group,
            "regions_digest": None, "region_set": None,
            "metrics": {k: {"value": v, "unit": "u", "ci95": (ci or {}).get(k)} for k, v in values.items()}}


def test_competition_ranks_best_and_fdd_ranked_by_magnitude():
    es = [_entry(1, {"LVE": 3.0, "FDD": -0.5}), _entry(2, {"LVE": 1.0, "FDD": 0.7}),
          _entry(3, {"LVE": 3.0, "FDD": 0.2}), _entry(4, {"LVE": 2.0, "FDD": -0.1})]
    ranking.rank_entries(es, {})
    assert [e["metrics"]["LVE"]["rank"] for e in es] == [3, 1, 3, 2]
    assert [e["metrics"]["LVE"]["best"] for e in es] == [False, True, False, False]
    assert [e["metrics"]["FDD"]["rank"] for e in es] == [3, 4, 2, 1]  # |FDD|: 0.5, 0.7, 0.2, 0.1


def test_entries_of_different_length_policies_are_never_ranked_together(conn):
    """The same predictions scored under both length policies: two entries (two evaluations), two groups."""
    a = make_results(seed=1)
    b = make_results(seed=1, length_policy="truncate_both")
    c = make_results(seed=2, scale=2.0, length_policy="truncate_both")
    ids = [db.submit_doc(conn, d, method_meta(method=n)).entry_id for d, n in ((a, "A"), (b, "A"), (c, "C"))]
    assert len(set(ids)) == 3  # the policy is part of the evaluation key
    es = ranking.rank_entries(db.fetch_entries(conn, kind="evaluated"), db.fetch_scores(conn))
    by = {e["id"]: e for e in es}
    assert [by[i]["length_policy"] for i in ids] == ["truncate_pred_only", "truncate_both", "truncate_both"]
    assert by[ids[0]]["group_size"] == 1 and by[ids[1]]["group_size"] == by[ids[2]]["group_size"] == 2
    assert by[ids[0]]["metrics"]["LVE"]["rank"] == 1 and by[ids[1]]["metrics"]["LVE"]["rank"] == 1
    assert by[ids[2]]["metrics"]["LVE"]["rank"] == 2  # twice the error, ranked only against its own policy
    assert "(truncate_both)" in by[ids[1]]["group"] and by[ids[0]]["group"] != by[ids[1]]["group"]


def test_streaming_entries_rank_in_a_track_per_latency_and_show_it(conn):
    off, worse = make_results(seed=1), make_results(seed=2, scale=3.0)
    s200, s200b, s400 = streamed(worse, 200), streamed(make_results(seed=3, scale=5.0), 200), streamed(off, 400)
    ids = [db.submit_doc(conn, d, method_meta(method=n)).entry_id
           for d, n in ((off, "A"), (s200, "B"), (s200b, "C"), (s400, "A"))]
    es = ranking.rank_entries(db.fetch_entries(conn, kind="evaluated"), db.fetch_scores(conn))
    by = {e["id"]: e for e in es}
    assert [by[i]["latency_ms"] for i in ids] == [None, 200.0, 200.0, 400.0]
    assert [by[i]["group_size"] for i in ids] == [1, 2, 2, 1]  # offline never ranked against streaming
    assert [by[i]["metrics"]["LVE"]["rank"] for i in ids] == [1, 1, 2, 1]
    assert "streaming 200 ms" in by[ids[1]]["group"] and "streaming" not in by[ids[0]]["group"]
    text = render.terminal_table(sorted(es, key=render.sort_key), [], show_overall=False)
    assert "latency" in text and "offline" in text and "200 ms" in text and "400 ms" in text


def test_ci_overlap_fallback_when_sequences_differ():
    es = [_entry(1, {"LVE": 1.0}, ci={"LVE": [0.8, 1.2]}), _entry(2, {"LVE": 1.3}, ci={"LVE": [1.1, 1.5]}),
          _entry(3, {"LVE": 1.6}, ci={"LVE": [1.3, 1.9]}), _entry(4, {"LVE": 1.7})]
    ranking.rank_entries(es, {})
    got = [(e["metrics"]["LVE"]["tied"], e["metrics"]["LVE"]["tie_test"]) for e in es]
    assert got == [(None, None), (True, "ci_overlap"), (False, "ci_overlap"), (None, None)]
    # signed FDD intervals are compared as intervals of |FDD|: [-0.3, 0.1] -> [0, 0.3] overlaps [0.25, 0.4]
    assert ranking.ci_overlap("FDD", [-0.3, 0.1], [0.25, 0.4]) is True
    assert ranking.ci_overlap("LVE", [-0.3, 0.1], [0.25, 0.4]) is False


@pytest.mark.parametrize("protocol", ["a2f", "unitalker"])
def test_bootstrap_statistic_matches_results_aggregate_on_resampled_sequences(protocol):
    """The vectorized replicate == results.aggregate on the explicitly resampled list (slow, obvious), under each
    protocol's own aggregation (UniTalker's LVE: a mean of sequence means, not frame-pooled)."""
    doc = make_results(seed=5, n_seq=9, protocol=protocol, length_policy="truncate_both")
    _, _, blob = db.score_blob(doc)
    mat = np.frombuffer(blob, np.float64).reshape(9, 1 + len(db.SEQ_COLUMNS))
    rows = sorted(doc["per_sequence"], key=lambda r: r["id"])
    rng = np.random.default_rng(7)
    for _ in range(5):
        idx = rng.integers(0, 9, size=9)
        w = np.bincount(idx, minlength=9).astype(float)[None]
        resampled = [rows[i] for i in idx]
        for m in ("LVE", "MVE", "UFVE", "FDD_abs"):
            how = doc["metrics"][m]["aggregation"]
            assert how == aggregation(protocol, m)
            got = ranking.boot_stat(m, w, mat[None], how)[0, 0]
            assert got == pytest.approx(aggregate(m, resampled, how), rel=1e-12)
        assert ranking.boot_stat("FDD", w, mat[None])[0, 0] == pytest.approx(abs(aggregate("FDD", resampled)),
                                                                              rel=1e-12)
    assert aggregation("unitalker", "LVE") == "mean_sequences"
    assert aggregation("a2f", "LVE") == aggregation("no-such-protocol", "LVE") == "pooled_frames"


def test_paired_ties_follow_the_protocols_aggregation(conn):
    """Two UniTalker-protocol entries whose order differs by aggregation: B is worse by 0.5e-5 on one long
    sequence and better by 0.5e-5 on eleven short ones. By sequence means (the protocol's rule) B is the best and A
    clearly worse (the difference changes sign only if a resample draws the long sequence 6 times of 12); pooled
    over frames A would look better. The tie test must use the protocol's rule and agree with ``compare``."""
    from a2fbench.scoring.compare import compare

    ids = [f"S{k:03d}_sentence{k + 1:02d}" for k in range(12)]
    a = make_results(protocol="unitalker", length_policy="truncate_both", seq_ids=ids, seed=1, noise=0.0)
    frames = [2000] + [20] * 11
    rows_a = [dict(r, frames=f, LVE=1.0e-5) for r, f in zip(a["per_sequence"], frames)]
    rows_b = [dict(r, frames=f, LVE=(1.5e-5 if k == 0 else 0.5e-5 * (1 + 0.01 * k)))
              for k, (r, f) in enumerate(zip(a["per_sequence"], frames))]

    b = make_results(protocol="unitalker", length_policy="truncate_both", seq_ids=ids, seed=2, noise=0.0)

    def doc(rows, base):
        d = copy.deepcopy(base)
        d["per_sequence"] = rows
        d["metrics"]["LVE"]["value"] = aggregate("LVE", rows, "mean_sequences")
        d["metrics"]["LVE"]["ci95"] = list(stats.bootstrap_ci("LVE", [r["LVE"] for r in rows],
                                                              [r["frames"] for r in rows], n_resamples=200,
                                                              how="mean_sequences"))
        d.pop("content_hash", None)
        return finalize(d)

    da, db_ = doc(rows_a, a), doc(rows_b, b)
    # the premise: the order flips with the aggregation
    assert aggregate("LVE", rows_b, "mean_sequences") < aggregate("LVE", rows_a, "mean_sequences")
    assert aggregate("LVE", rows_b, "pooled_frames") > aggregate("LVE", rows_a, "pooled_frames")
    ea = db.submit_doc(conn, da, method_meta(method="A")).entry_id
    eb = db.submit_doc(conn, db_, method_meta(method="B")).entry_id
    ranked, _ = render.load_ranked(conn, kind="evaluated")
    by = {e["id"]: e["metrics"]["LVE"] for e in ranked}
    assert by[eb]["best"] and by[ea]["tie_test"] == "paired_bootstrap"
    c = compare(db_, da, n_resamples=2000)["metrics"]["LVE"]
    assert not c["ci95"][0] <= 0 <= c["ci95"][1]       # compare: a real difference, by sequence means
    assert by[ea]["tied"] is False


def test_fast_interval_test_equals_numpy_percentile():
    rng = np.random.default_rng(0)
    for n_boot in (1000, 999, 40, 7):
        for trial in range(60):
            d = rng.normal(rng.normal() * 0.3, 0.15, size=(n_boot, 40))
            if trial % 3 == 0:
                d = np.round(d, 1)  # exact zeros and repeated values: the interpolation boundary cases
            lo, hi = np.percentile(d, [2.5, 97.5], axis=0)
            assert (stats.interval_contains_zero(d) == ((lo <= 0) & (0 <= hi))).all()


def test_paired_ties_known_answers_and_agreement_with_a2fbench_compare(conn):
    from a2fbench.scoring.compare import compare

    base = make_results(seed=10, n_seq=20, noise=0.05)
    same = make_results(seed=11, n_seq=20, noise=0.05)          # same method quality, other noise: tied
    worse = make_results(seed=12, n_seq=20, scale=1.5, noise=0.05)  # 1.5x worse on every sequence: not tied
    ids = [db.submit_doc(conn, d, method_meta(method=n)).entry_id for d, n in
           ((base, "base"), (same, "same"), (worse, "worse"))]
    entries, _ = render.load_ranked(conn, kind="evaluated")
    by = {e["id"]: e for e in entries}
    best_id = min(ids[:2], key=lambda i: by[i]["metrics"]["LVE"]["value"])
    other = ids[1] if best_id == ids[0] else ids[0]
    assert by[best_id]["metrics"]["LVE"]["best"] and by[best_id]["metrics"]["LVE"]["tied"] is None
    assert by[other]["metrics"]["LVE"]["tied"] is True
    assert by[ids[2]]["metrics"]["LVE"]["tied"] is False
    assert by[ids[2]]["metrics"]["LVE"]["tie_test"] == "paired_bootstrap"
    # the same decision as a2fbench.scoring.compare's paired bootstrap CI (scipy), on both pairs
    docs = {ids[0]: base, ids[1]: same, ids[2]: worse}
    for eid, tied in ((other, True), (ids[2], False)):
        c = compare(docs[best_id], docs[eid], n_resamples=2000)["metrics"]["LVE"]
        assert (c["ci95"][0] <= 0 <= c["ci95"][1]) is tied


def test_borda_overall_rank_by_hand():
    # group g1: A < B < C on LVE; group g2: C < A, B absent; two metrics counted (LVE, MVE) with MVE equal order
    es = [_entry(1, {"LVE": 1.0, "MVE": 1.0}, method="A", group="g1"),
          _entry(2, {"LVE": 2.0, "MVE": 2.0}, method="B", group="g1"),
          _entry(3, {"LVE": 3.0, "MVE": 3.0}, method="C", group="g1"),
          _entry(4, {"LVE": 2.0, "MVE": 2.0}, method="A", group="g2"),
          _entry(5, {"LVE": 1.0, "MVE": 1.0}, method="C", group="g2"),
          _entry(6, {"LVE": 5.0, "MVE": 5.0}, method="A", group="g2")]  # A's worse run in g2 does not count
    rows = ranking.overall(es, metrics=("LVE", "MVE"))
    got = {r["method"]: (r["borda"], r["mean_rank"], r["n_groups"], r["rank"]) for r in rows}
    # A: g1 beats 2 (x2 metrics) = 4, g2 beats 0 -> 4; ranks 1,1,2,2. B: 1x2 = 2. C: 0 + 1x2 = 2; ranks 3,3,1,1
    assert got == {"A": (4, 1.5, 2, 1), "C": (2, 2.0, 2, 2), "B": (2, 2.0, 1, 2)}


# ------------------------------------------------------------------------------------------ reported rows
def test_seeded_reported_rows_are_exactly_the_cited_facts_and_never_ranked(conn):
    rows = db.fetch_entries(conn, kind="reported")
    facts = {(r["method"], r["dataset"], r["split"], k, r["metrics"][k]["value"], r["metrics"][k]["unit"])
             for r in rows for k in r["metrics"]}
    # the UniTalker paper's tables, as printed (paper-tables.md), the printed scale in the unit
    assert ("UniTalker-L-[D0-D7]", "D0", "test", "LVE", 3.8587, "1e-4 (codetalker_area_normalised)^2") in facts
    assert ("SelfTalk", "D1", "test", "LVE", 0.9626, "1e-5 m^2") in facts
    assert ("FaceDiffuser", "D1", "test", "FDD", 1.7335, "1e-7 m^2") in facts
    assert ("UniTalker-L-FT", "D5", "test", "LVE", 1.848, "1e-5 m^2") in facts
    tables = [r for r in rows if "UniTalker Table" in r["protocol"]]
    by_table = {t: sum(1 for r in tables if f"Table {t} " in r["protocol"]) for t in (2, 4, 5, 6)}
    assert by_table == {2: 14, 4: 16, 5: 24, 6: 32}
    # quotes from issue threads stay, with their own caveats
    assert ("SelfTalk", "D1", "test", "LVE", 3.2238, "as printed (scale not stated in the quote)") in facts
    assert ("UniTalker-L", "D7", "unstated", "LVE", 1.5810318571501697e-05,
            "UniTalker scaled space (scale 1.0 for D7; unverified)") in facts
    assert all(r["citation"] and r["source_url"].startswith("https://") and r["note"] for r in rows)
    assert all(r["seeded"] for r in rows)
    entries, overall = render.load_ranked(conn)
    assert all(m["rank"] is None for e in entries if e["kind"] == "reported" for m in e["metrics"].values())
    assert overall == []
    n, gen = len(rows), db.generation(conn)
    db.seed_reported(conn)  # unchanged seed file: nothing happens
    assert len(db.fetch_entries(conn, kind="reported")) == n and db.generation(conn) == gen


def test_add_reported_from_yaml_is_idempotent_and_validated(tmp_path, conn):
    f = tmp_path / "paper.yaml"
    f.write_text("reported:\n"
                 "  - method: MyTalker\n    dataset: vocaset\n    split: test\n    protocol: paper Table 3\n"
                 "    metrics: {LVE: {value: 2.5e-5, unit: mm^2}, MVE: {value: 1.1}}\n"
                 "    citation: Doe et al. 2031, Table 3\n    source_url: https://example.org/paper\n")
    rows = load_reported(f)
    assert [o.added for o in db.add_reported(conn, rows)] == [True]
    assert [o.added for o in db.add_reported(conn, rows)] == [False]
    (e,) = [r for r in db.fetch_entries(conn, kind="reported") if r["method"] == "MyTalker"]
    assert e["dataset"] == "D1" and e["metrics"]["LVE"] == {"value": 2.5e-5, "unit": "mm^2", "ci95": None}
    assert e["seeded"] is False and "not verified" in e["note"]
    for body, msg in (("- {method: X, dataset: D1, split: test, protocol: p, metrics: {LVE: {value: 1}}}", "citation"),
                      ("- {method: X, dataset: D1, split: t, protocol: p, citation: c, metrics: {XVE: {value: 1}}}",
                       "unknown metric 'XVE'"),
                      ("- {method: X, dataset: D42, split: t, protocol: p, citation: c, metrics: {LVE: {value: 1}}}",
                       "unknown dataset"),
                      ("just text", "expected a list")):
        f.write_text(body)
        with pytest.raises(LeaderboardError, match=msg) as ei:
            load_reported(f)
        assert "\n" not in str(ei.value)


# ------------------------------------------------------------------------------------------ migrations
def test_migration_from_v1_backfills_scores_and_future_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "old.sqlite"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA foreign_keys = ON")
    db._migrate(raw, str(path), target=1)          # a database written by schema version 1
    assert db.schema_version(raw) == 1
    doc = make_results(seed=4)
    entries._insert_entry(raw, {"fingerprint": doc["content_hash"], "kind": "evaluated", "method": "old", "dataset": "D1",
                           "split": "test", "protocol": "a2f", "submitted_at": "2026-01-01"})
    raw.execute("INSERT INTO documents (entry_id, doc) VALUES (1, ?)", (json.dumps(doc),))
    raw.close()
    conn = db.connect(path)
    assert db.schema_version(conn) == db.SCHEMA_VERSION == 5
    seqset, mat = db.fetch_scores(conn)[1]
    assert seqset == db.score_blob(doc)[0] and mat.shape == (doc["dataset"]["n_sequences"], 1 + len(db.SEQ_COLUMNS))
    # v3: the length policy, filled from the stored document, and the evaluation key that now includes it
    (e,) = db.fetch_entries(conn, kind="evaluated")
    assert e["length_policy"] == "truncate_pred_only"
    assert e["latency_ms"] is None  # v5: an offline document has no algorithmic latency
    assert conn.execute("SELECT eval_key FROM entries WHERE kind = 'evaluated'").fetchone()[0] == db.eval_key(doc)
    # v4 (additive): how an entry was verified, its source file, the entry that disputes it; unset on old rows
    assert (e["verified_by"], e["source"], e["disputed_by"]) == (None, None, None)
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LeaderboardError, match="newer than this A2F-Bench"):
        db.connect(path)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(LeaderboardError, match="another SQLite database"):
        db.connect(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LeaderboardError, match="unreadable"):
        db.connect(junk)


# ------------------------------------------------------------------------------------------ HTML
def _embedded_data(page: str) -> dict:
    """The page's JSON data island, with each entry's group fields expanded as the page's script does."""
    m = re.search(r'<script id="lb-data" type="application/json">(.*?)</script>', page, re.S)
    assert m
    data = json.loads(m.group(1))
    for e in data["entries"]:
        e.update(data["groups"][e["g"]])
    return data


def test_export_escapes_every_user_string_and_is_self_contained(tmp_path, conn):
    names = [HOSTILE, "</script><script>alert(2)</script>", "<!--", "a&b \u2028 \"q\" 'q'"]
    for k, name in enumerate(names):
        db.submit_doc(conn, make_results(seed=k), method_meta(method=name, training_data=f"<b>{k}</b>"))
    out = tmp_path / "lb.html"
    assert render.export_html(conn, out) == len(db.fetch_entries(conn))
    page = out.read_text()
    assert HOSTILE not in page and "alert(2)</script>" not in page and "<b>0</b>" not in page
    assert page.count("<script") == 2   # the JSON data island and the page's own script, nothing else
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no external resources
    data = _embedded_data(page)
    evald = [e for e in data["entries"] if e["kind"] == "evaluated"]
    assert sorted(e["method"] for e in evald) == sorted(names)      # exact strings survive the round trip
    assert [e["m"]["LVE"][3] for e in evald] == [1, 2, 3, 4]       # in LVE rank order
    assert all(len(v) == 12 for v in data["per_sequence"].values())
    # the Content-Security-Policy allows exactly the page's own script (by hash)
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    js = re.search(r"<script>(.*)</script>", page, re.S).group(1)
    assert render._sha(js) in csp and "unsafe-inline" not in csp


# ------------------------------------------------------------------------------------------ web app
@pytest.fixture
def server(tmp_path):
    from leaderboard.server import make_server, url_of

    path = tmp_path / "srv.sqlite"
    c = db.connect(path)
    db.submit_doc(c, make_results(seed=0), method_meta(method=HOSTILE, inference_s=0.02))
    c.close()
    srv = make_server(path, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield url_of(srv), path
    srv.shutdown()
    srv.server_close()


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_server_routes_cache_and_escaping(server):
    url, path = server
    st, hd, body = _get(url)
    assert st == 200 and hd["Content-Type"].startswith("text/html")
    page = body.decode()
    assert HOSTILE not in page and "script-src 'sha256-" in hd["Content-Security-Policy"]
    assert hd["X-Content-Type-Options"] == "nosniff"
    data = _embedded_data(page)
    assert data["mode"] == "serve" and data["per_sequence"] == {}
    (me,) = [e for e in data["entries"] if e["kind"] == "evaluated"]
    assert me["method"] == HOSTILE
    # conditional GET and gzip
    assert _get(url, {"If-None-Match": hd["ETag"]})[0] == 304
    st, hz, gz = _get(url, {"Accept-Encoding": "gzip"})
    assert hz.get("Content-Encoding") == "gzip" and gzip.decompress(gz) == body
    # drill-down API
    st, _, b = _get(f"{url}api/entry/{me['id']}")
    detail = json.loads(b)
    assert st == 200 and detail["columns"][:3] == ["id", "frames", "LVE"] and len(detail["per_sequence"]) == 12
    assert _get(f"{url}api/entry/999999")[0] == 404 and _get(f"{url}nope")[0] == 404
    st, _, b = _get(f"{url}api/entries?dataset=voca&kind=evaluated")
    assert st == 200 and [e["method"] for e in json.loads(b)["entries"]] == [HOSTILE]
    assert _get(f"{url}api/entries?kind=bogus")[0] == 400
    assert _get(f"{url}api/entries?dataset=D42")[0] == 400
    # a submission from another process invalidates the cached page
    c = db.connect(path)
    db.submit_doc(c, make_results(seed=1), method_meta(method="newcomer"))
    c.close()
    st, hd2, body2 = _get(url)
    assert hd2["ETag"] != hd["ETag"] and "newcomer" in body2.decode()
    assert _get(url, {"If-None-Match": hd["ETag"]})[0] == 200


# ------------------------------------------------------------------------------------------ --verify
def _predictions(data: Path, out: Path, noise: float, seed: int) -> Path:
    import a2fbench

    ds = a2fbench.open_dataset(data, "D1")
    rng = np.random.default_rng(seed)
    out.mkdir()
    for sid in ds.split("test"):
        m = np.asarray(ds[sid].motion, np.float64)
        np.save(out / f"{sid}.npy", (m + rng.normal(0, noise, m.shape)).astype(np.float32))
    ds.close()
    return out


def test_submit_verify_marks_verified_only_when_numbers_agree(tmp_path, data_tiny):
    from a2fbench.scoring.evaluate import evaluate
    from leaderboard.submit import submit_file

    good = _predictions(data_tiny, tmp_path / "good", 1e-3, 0)
    other = _predictions(data_tiny, tmp_path / "other", 2e-3, 1)
    res = tmp_path / "r.json"
    # a file from elsewhere: unsigned (a file this installation's evaluate signed is verified by its signature)
    doc = evaluate("D1", good, data_tiny, progress=False)
    del doc["signature"]
    write_json(res, finalize(doc))
    dbp = tmp_path / "lb.sqlite"
    with pytest.raises(LeaderboardError, match="verification failed: .*nothing was stored"):
        submit_file(dbp, res, method_meta(method="M"), verify_pred=other, data=data_tiny)
    assert not dbp.exists() or not db.fetch_entries(db.connect(dbp), kind="evaluated")
    plain = submit_file(dbp, res, method_meta(method="M"))
    assert plain.added and not db.fetch_entries(db.connect(dbp), kind="evaluated")[0]["verified"]
    up = submit_file(dbp, res, method_meta(method="M"), verify_pred=good, data=data_tiny)
    assert not up.added and up.verified_now and up.entry_id == plain.entry_id
    (e,) = db.fetch_entries(db.connect(dbp), kind="evaluated")
    assert e["verified"] is True and e["verified_at"] and e["verified_by"] == "rescored"
    # the CLI path on a fresh database
    r = _cli("submit", str(res), "--method", "M", "--verify", str(good), "--data", str(data_tiny),
             "--db", str(tmp_path / "cli.sqlite"))
    assert "[verified]" in r.stdout


# ------------------------------------------------------------------------------------------ data tracks
def test_stand_in_scores_never_share_a_table_or_a_ranking_with_real_data(conn):
    """The quickstart's case: a tiny model on stand-ins scores 10x below a real-data entry and the papers. It is
    ranked 1 only in its own (synthetic) track; the real entry keeps rank 1 in the real track; the terminal
    prints the stand-in's D1 table after every real-data table under a heading that says so; each track has its
    own overall table; JSON rows say their track."""
    stand_in = db.submit_doc(conn, make_results(seed=1, scale=0.1), method_meta(method="tiny")).entry_id
    real = db.submit_doc(conn, make_results(seed=2, scale=1.0, synthetic=False), method_meta(method="real-m")).entry_id
    entries_, overall = render.load_ranked(conn)
    by = {e["id"]: e for e in entries_}
    assert by[stand_in]["track"] == "synthetic" and by[real]["track"] == "real"
    assert by[stand_in]["metrics"]["LVE"]["rank"] == 1 and by[real]["metrics"]["LVE"]["rank"] == 1
    assert all(e["track"] == "real" for e in entries_ if e["kind"] == "reported")
    assert [(r["track"], r["method"], r["rank"]) for r in overall] == [("real", "real-m", 1), ("synthetic", "tiny", 1)]
    text = render.terminal_table(*render.load_ranked(conn, ["D1"]))
    lines = text.splitlines()
    head = lines.index(next(ln for ln in lines if ln.startswith("== Synthetic stand-ins")))
    row = lambda eid: next(i for i, ln in enumerate(lines) if ln.startswith(f"{eid} "))  # noqa: E731
    ff = next(i for i, ln in enumerate(lines) if " FaceFormer " in ln)
    assert ff < head < row(stand_in) and row(real) < head
    assert "SYNTHETIC STAND-IN" in lines[row(stand_in) - 2]
    assert text.index("Overall, real data") < text.index("Overall, synthetic stand-ins")
    # --track selects rows to show (ranks are unchanged); JSON carries the track on entries and overall rows
    only = render.load_ranked(conn, ["D1"], track="synthetic")
    assert [e["id"] for e in only[0]] == [stand_in] and [r["method"] for r in only[1]] == ["tiny"]
    js = render.json_rows(*render.load_ranked(conn, ["D1"]), ":memory:")
    assert {e["id"]: e["track"] for e in js["entries"]}[stand_in] == "synthetic"
    assert {r["track"] for r in js["overall"]} == {"real", "synthetic"}


def test_biwi_unit_header_spells_out_unitalkers_scale() -> None:
    from leaderboard import units
    from leaderboard.render import terminal_table

    assert units.scaled_note("D0") == ("protocol unitalker rows are in UniTalker's scaled space: coordinates x0.2, "
                                       "so LVE x0.04 of the unit above")
    assert units.scaled_note("D1") is None and units.scaled_note("D2").endswith("LVE x1e-06 of the unit above")
    e = {"id": 1, "kind": "reported", "method": "m", "dataset": "D0", "dataset_name": "BIWI", "group": "reported / test / p",
         "metrics": {}}
    assert "LVE x0.04" in terminal_table([e], [], show_overall=False)
