"""Leaderboard benchmark: `serve` page latency with 10,000 entries, side by side with the naive way.

Measures, in one run on one machine:

* building the board: 10,000 submissions (one transaction each), submissions per second;
* `serve` answering GET / (the leaderboard page) from a separate server process over loopback:
  - ours: the page cached per database generation (rebuilt only after a write), identity and gzip;
  - "cold": the first request after a new submission (full rebuild: query, rank, ties, render, gzip);
  - the naive way: the same server rebuilding the page on every request (`serve --no-cache`);
* where a rebuild's time goes (query, per-sequence matrices, ranking with paired-bootstrap ties, render);
* the page in headless Chromium (when installed): time to an interactive page, and one column sort;
* ties the reference way: `a2fbench.scoring.compare.compare` (scipy paired bootstrap + permutation test) called per pair
  against the best entry, versus our vectorized paired bootstrap over the whole board.

Usage:
    flock /tmp/a2f-heavy.lock python benchmarks/bench_leaderboard.py [--entries 10000] [--requests 60]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leaderboard import db, ranking, render  # noqa: E402
from leaderboard.model import method_meta  # noqa: E402
from leaderboard.synthetic import make_results  # noqa: E402

DATASETS = ("D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7")


def build(path: Path, n: int, n_seq: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    conn = db.connect(path)
    have = len(db.fetch_entries(conn, kind="evaluated"))
    t0 = time.perf_counter()
    t_doc = 0.0
    for i in range(have, n):
        ds = DATASETS[i % len(DATASETS)]
        t = time.perf_counter()
        doc = make_results(dataset=ds, seed=1000 + i, n_seq=n_seq, scale=float(rng.lognormal(0, 0.25)),
                           noise=0.08, dataset_seed=i % len(DATASETS), n_boot=100)
        t_doc += time.perf_counter() - t
        secs = float(rng.lognormal(np.log(0.05), 1.0)) if rng.random() < 0.6 else None
        db.submit_doc(conn, doc, method_meta(method=f"method-{i:05d}", version=f"v{i % 3}", params=int(rng.integers(1e6, 4e8)),
                                             inference_s=secs))
    dt = time.perf_counter() - t0
    conn.close()
    added = max(0, n - have)
    return {"added": added, "seconds": dt, "seconds_building_docs": t_doc,
            "submissions_per_s": (added / (dt - t_doc)) if added else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path: Path, *, cache: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "a2fbench.cli", "leaderboard", "serve", "--port", str(port), "--db", str(path)]
    if not cache:
        cmd.append("--no-cache")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.readline()  # "serving ..." once listening
    return p, port


def get(conn: http.client.HTTPConnection, gzip: bool) -> tuple[float, int]:
    t = time.perf_counter()
    conn.request("GET", "/", headers={"Accept-Encoding": "gzip"} if gzip else {})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, r.status
    return time.perf_counter() - t, len(body)


def timed_requests(port: int, n: int, gzip: bool) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    get(conn, gzip)  # first request may build the page
    times, size = [], 0
    for _ in range(n):
        dt, size = get(conn, gzip)
        times.append(dt)
    conn.close()
    return {"median_ms": statistics.median(times) * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3,
            "min_ms": min(times) * 1e3, "n": n, "bytes": size}


def cold_requests(path: Path, port: int, n: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    times = []
    c = db.connect(path)
    for k in range(n):
        db.submit_doc(c, make_results(dataset="D1", seed=10_000_000 + k + int(time.time()) % 100000, n_seq=8,
                                      dataset_seed=999), method_meta(method=f"cold-{k}"))
        dt, _ = get(conn, True)
        times.append(dt)
    c.close()
    conn.close()
    return {"median_ms": statistics.median(times) * 1e3, "n": n}


def breakdown(path: Path) -> dict:
    conn = db.connect(path)
    out = {}
    t = time.perf_counter()
    entries = db.fetch_entries(conn)
    out["fetch_entries_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    scores = db.fetch_scores(conn)
    out["fetch_scores_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    ranking.rank_entries(entries, scores)
    overall = ranking.overall(entries)
    out["rank_and_ties_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    page = render.html_page(render.page_data(entries, overall, mode="serve"))
    out["render_ms"] = (time.perf_counter() - t) * 1e3
    out["page_bytes"] = len(page.encode())
    out["n_entries"] = len(entries)
    out["n_tie_tests"] = sum(1 for e in entries for m in e["metrics"].values() if m.get("tie_test"))
    conn.close()
    return out


def ties_reference(path: Path, pairs: int) -> dict:
    """a2fbench.scoring.compare per pair (the reference way) vs our vectorized paired bootstrap, on D1's group."""
    from a2fbench.scoring.compare import compare

    conn = db.connect(path)
    entries = [e for e in db.fetch_entries(conn, datasets=["D1"], kind="evaluated") if e["method"].startswith("method-")]
    scores = db.fetch_scores(conn, [e["id"] for e in entries])
    best = min(entries, key=lambda e: e["metrics"]["LVE"]["value"])
    others = [e for e in entries if e is not best]
    bdoc = db.fetch_document(conn, best["id"])
    docs = [db.fetch_document(conn, e["id"]) for e in others[:pairs]]
    t = time.perf_counter()
    ref = [compare(bdoc, d, n_resamples=ranking.N_BOOT)["metrics"]["LVE"] for d in docs]
    per_pair = (time.perf_counter() - t) / len(docs)
    mats = np.stack([scores[e["id"]][1] for e in others])
    t = time.perf_counter()
    with ranking._single_threaded_blas():  # as rank_entries runs it
        ours = ranking.paired_ties("LVE", scores[best["id"]][1], mats)
    ours_all = time.perf_counter() - t
    agree = sum((r["ci95"][0] <= 0 <= r["ci95"][1]) == bool(o) for r, o in zip(ref, ours[: len(ref)]))
    conn.close()
    return {"group_size": len(entries), "compare_per_pair_ms": per_pair * 1e3,
            "compare_whole_group_s_extrapolated": per_pair * len(others), "ours_whole_group_ms": ours_all * 1e3,
            "ratio": per_pair * len(others) / ours_all, "decisions_agreeing": f"{agree}/{len(ref)}"}


def browser_timing(port: int, runs: int = 3) -> dict:
    """Headless Chromium: navigation to an interactive page, and one column sort, median of ``runs``."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return {"skipped": "selenium not installed"}
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        return {"skipped": "chromium / chromedriver not installed"}
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    ready, sort = [], []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            drv.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(drv, 120).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")
            ready.append(time.perf_counter() - t)
            t = time.perf_counter()
            drv.find_elements("css selector", 'table[data-dataset="D1"] th[data-key="LVE"]')[0].click()
            drv.find_elements("css selector", 'table[data-dataset="D1"] th[aria-sort="ascending"]')
            sort.append(time.perf_counter() - t)
    finally:
        drv.quit()
    return {"page_ready_s": statistics.median(ready), "sort_1250_rows_ms": statistics.median(sort) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--sequences", type=int, default=40, help="per-sequence scores per entry")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep this database (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_lb_")
        args.db = Path(tmp.name) / "lb.sqlite"
    res: dict = {"machine": os.environ.get("BENCH_MACHINE", "2-core CPU sandbox, shared"), "entries": args.entries}
    print(f"building {args.entries} entries in {args.db} ...", flush=True)
    res["build"] = build(args.db, args.entries, args.sequences)
    print(json.dumps(res["build"]), flush=True)
    res["rebuild_breakdown"] = breakdown(args.db)
    print("rebuild breakdown:", json.dumps(res["rebuild_breakdown"]), flush=True)

    srv, port = start_server(args.db, cache=True)
    try:
        res["ours_warm_identity"] = timed_requests(port, args.requests, gzip=False)
        res["ours_warm_gzip"] = timed_requests(port, args.requests, gzip=True)
        res["ours_cold_after_write"] = cold_requests(args.db, port, 5)
        res["browser"] = browser_timing(port)
    finally:
        srv.terminate()
        srv.wait()
    print("ours:", json.dumps({k: res[k] for k in ("ours_warm_identity", "ours_warm_gzip", "ours_cold_after_write",
                                                    "browser")}),
          flush=True)
    srv, port = start_server(args.db, cache=False)
    try:
        res["naive_rebuild_every_request"] = timed_requests(port, max(5, args.requests // 10), gzip=True)
    finally:
        srv.terminate()
        srv.wait()
    print("naive:", json.dumps(res["naive_rebuild_every_request"]), flush=True)
    res["ratio_naive_over_ours_warm_gzip"] = (res["naive_rebuild_every_request"]["median_ms"]
                                              / res["ours_warm_gzip"]["median_ms"])
    res["ties"] = ties_reference(args.db, pairs=30)
    print("ties:", json.dumps(res["ties"]), flush=True)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
