"""Leaderboard reliability: 20 concurrent submitting processes x 10 submissions on a fresh database, and
writers killed mid-transaction (at a chosen point, and at random moments) leaving it consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from a2fbench.util.fsutil import write_json
from leaderboard import db
from leaderboard.model import load_reported, seed_path
from leaderboard.synthetic import make_results

N_PROC, PER_PROC = 20, 10

_SUBMITTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from leaderboard.model import load_reported, seed_path, method_meta
    from leaderboard.submit import submit_file
    dbp, k, n, nproc, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    Path(root / f"ready{k}").touch()
    while not (root / "go").exists():      # start all together
        time.sleep(0.005)
    own = [k * n + j for j in range(n)]
    theirs = [((k + 1) % nproc) * n]        # also re-submit a neighbour's first file: concurrent duplicates
    for i in own + theirs + own[:1]:
        out = submit_file(dbp, root / f"r{i}.json", method_meta(method=f"m{i}"))
        print(int(out.added), out.entry_id, flush=True)
""")


def test_20_concurrent_submitters_store_all_200_exactly_once(tmp_path):
    for i in range(N_PROC * PER_PROC):
        write_json(tmp_path / f"r{i}.json", make_results(seed=i, n_seq=6, n_boot=50))
    dbp = tmp_path / "fresh.sqlite"  # not created beforehand: opening, migrating and seeding race too
    script = tmp_path / "submitter.py"
    script.write_text(_SUBMITTER)
    procs = [subprocess.Popen([sys.executable, str(script), str(dbp), str(k), str(PER_PROC), str(N_PROC),
                               str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(N_PROC)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(N_PROC)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a submitter died early"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
    added = sum(int(line.split()[0]) for out, _ in outs for line in out.splitlines())
    assert added == N_PROC * PER_PROC   # every duplicate answered "already there"
    conn = db.connect(dbp)
    rows = db.fetch_entries(conn, kind="evaluated")
    assert len(rows) == N_PROC * PER_PROC
    assert sorted(r["method"] for r in rows) == sorted(f"m{i}" for i in range(N_PROC * PER_PROC))
    assert len({r["fingerprint"] for r in rows}) == len(rows)
    n_seed = len(load_reported(seed_path()))
    assert len(db.fetch_entries(conn, kind="reported")) == n_seed  # seeded once despite 20 racing openers
    assert db.check_consistency(conn) == []
    assert db.generation(conn) == 1 + N_PROC * PER_PROC      # seeding + one bump per stored submission


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from leaderboard import db, entries
    from leaderboard.model import method_meta
    from a2fbench.scoring.results import load
    real = entries._insert_metrics
    def half_then_die(conn, entry_id, metrics):
        real(conn, entry_id, dict(list(metrics.items())[:2]))  # the entry row and 2 of 5 metric rows written
        print("mid-transaction", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    entries._insert_metrics = half_then_die
    conn = db.connect(sys.argv[1])
    db.submit_doc(conn, load(sys.argv[2]), method_meta(method="killed"))
""")


def test_submitter_killed_mid_transaction_leaves_database_consistent(tmp_path):
    dbp = tmp_path / "lb.sqlite"
    write_json(tmp_path / "a.json", make_results(seed=1))
    write_json(tmp_path / "b.json", make_results(seed=2))
    from leaderboard.model import method_meta
    from leaderboard.submit import submit_file

    submit_file(dbp, tmp_path / "a.json", method_meta(method="before"))
    script = tmp_path / "killed.py"
    script.write_text(_KILLED)
    r = subprocess.run([sys.executable, str(script), str(dbp), str(tmp_path / "b.json")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL and "mid-transaction" in r.stdout, r.stderr
    conn = db.connect(dbp)
    assert db.check_consistency(conn) == []
    assert [e["method"] for e in db.fetch_entries(conn, kind="evaluated")] == ["before"]
    # the lock died with the process: the same file goes in now, completely
    out = submit_file(dbp, tmp_path / "b.json", method_meta(method="after"))
    assert out.added
    assert db.check_consistency(conn) == []
    assert sorted(e["method"] for e in db.fetch_entries(conn, kind="evaluated")) == ["after", "before"]


_LOOP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from leaderboard.model import method_meta
    from leaderboard.submit import submit_file
    dbp, root, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    for i in range(n):
        submit_file(dbp, root / f"r{i}.json", method_meta(method=f"m{i}"))
        print(i, flush=True)
""")


@pytest.mark.parametrize("kill_after", [3, 9])
def test_submitter_killed_at_a_random_moment_loses_at_most_the_open_transaction(tmp_path, kill_after):
    n = 150
    for i in range(n):
        write_json(tmp_path / f"r{i}.json", make_results(seed=i, n_seq=6, n_boot=50))
    dbp = tmp_path / "lb.sqlite"
    script = tmp_path / "loop.py"
    script.write_text(_LOOP)
    p = subprocess.Popen([sys.executable, str(script), str(dbp), str(tmp_path), str(n)], stdout=subprocess.PIPE,
                         text=True)
    printed = 0
    for _ in p.stdout:  # type: ignore[union-attr]
        printed += 1
        if printed == kill_after:
            time.sleep(0.002 * kill_after)  # land somewhere inside a later submission
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait(timeout=60)
    conn = db.connect(dbp)
    assert db.check_consistency(conn) == []
    stored = sorted(int(e["method"][1:]) for e in db.fetch_entries(conn, kind="evaluated"))
    # a prefix of the files: all that were reported done, plus at most the ones committed but not yet printed
    assert stored == list(range(len(stored))) and kill_after <= len(stored) < n
