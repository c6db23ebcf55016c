"""Benchmark `a2fbench prepare` on the full-size stand-ins: peak memory, and throughput beside a plain copy.

What it measures, side by side in one run:

* D1 (VOCASET, full: 12 subjects x 40 sentences, 60 fps, ~6.5 GB of float32 vertices in one data_verts.npy):
  ``cp -r RAW/D1`` (a plain copy of the same raw bytes) and ``a2fbench prepare D1``, interleaved, ``rounds``
  times each; wall time, MB/s of raw input, and peak RSS of each process (``/usr/bin/time``).
* D0 (BIWI, full scale, float64 vertices, 70110 values per frame): ``a2fbench prepare D0`` peak RSS and wall
  time on the splits given by ``--d0-splits`` (the whole full D0 is ~41 GB raw + ~41 GB prepared, more than
  the shared disk holds beside the other engineers' work; peak memory depends on the longest sequence, not
  on the count), with a plain copy beside it when the disk allows.

Between runs dirty pages are flushed (``sync``, not timed). The raw files were just written by ``synth`` and
may sit in the page cache for both contenders alike; nothing here can drop caches (no root).

Everything is written under a temporary folder that is deleted at the end (``--keep`` keeps it). Run it under
the shared lock: ``flock /tmp/a2f-heavy.lock python benchmarks/bench_prepare.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

A2F = [sys.executable, "-m", "a2fbench.cli"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` under /usr/bin/time: wall seconds and peak RSS (MiB) of that process."""
    subprocess.run(["sync"], check=False)
    fmt = "%e %M"
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", fmt, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    elapsed, maxrss_kb = r.stderr.strip().splitlines()[-1].split()
    return {"wall_s": round(wall, 2), "time_elapsed_s": float(elapsed), "peak_rss_mib": round(int(maxrss_kb) / 1024, 1)}


SIZE = "full"


def synth(dataset: str, raw: Path, splits: str | None) -> float:
    cmd = [*A2F, "synth", dataset, "--out", str(raw), "--size", SIZE] + (["--splits", splits] if splits else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_dataset(dataset: str, work: Path, rounds: int, splits: str | None, with_copy: bool) -> dict:
    raw, copy_root = work / "raw", work / "copy"
    log(f"synth {dataset} --size {SIZE}{' --splits ' + splits if splits else ''}")
    t_synth = synth(dataset, raw, splits)
    raw_bytes = du(raw / dataset)
    log(f"  {raw_bytes / 1e9:.2f} GB raw in {t_synth:.0f} s")
    out: dict = {"dataset": dataset, "splits": splits or "all", "raw_bytes": raw_bytes, "synth_s": round(t_synth, 1),
                 "copy": [], "prepare": []}
    for r in range(rounds):
        if with_copy:
            shutil.rmtree(copy_root, ignore_errors=True)
            copy_root.mkdir()
            log(f"  round {r + 1}: cp -r")
            out["copy"].append(timed(["cp", "-r", str(raw / dataset), str(copy_root / dataset)]))
            shutil.rmtree(copy_root, ignore_errors=True)
        data = work / f"data{r}"
        log(f"  round {r + 1}: prepare")
        res = timed([*A2F, "prepare", dataset, "--raw", str(raw), "--out", str(data)])
        card = json.loads((data / dataset / "card.json").read_text())
        res.update(store_bytes=du(data / dataset), n_sequences=card["stats"]["n_sequences"],
                   n_frames=card["stats"]["n_frames"], hours=card["stats"]["hours"])
        out["prepare"].append(res)
        log(f"    {res}")
        shutil.rmtree(data, ignore_errors=True)
    p = statistics.median(x["wall_s"] for x in out["prepare"])
    out["prepare_median_s"] = p
    out["prepare_mb_s"] = round(raw_bytes / 1e6 / p, 1)
    out["prepare_peak_rss_mib"] = max(x["peak_rss_mib"] for x in out["prepare"])
    if out["copy"]:
        c = statistics.median(x["wall_s"] for x in out["copy"])
        out.update(copy_median_s=c, copy_mb_s=round(raw_bytes / 1e6 / c, 1), ratio_prepare_over_copy=round(p / c, 2))
    shutil.rmtree(raw / dataset, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="folder for the temporary data (default: system temp)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--datasets", default="D1,D0")
    ap.add_argument("--d0-splits", default="train", help="splits of the full D0 stand-in ('' for all: ~82 GB)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--size", default="full", help="stand-in size (small: a quick smoke run of this script)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    global SIZE
    SIZE = args.size
    from a2fbench.registry import get_spec
    from a2fbench.sources.synth import estimate_bytes, plan

    work = Path(tempfile.mkdtemp(prefix="a2f-bench-prepare-", dir=args.work))
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.platform()}), shared",
               "python": platform.python_version(), "runs": []}
    try:
        for ds in args.datasets.split(","):
            splits = (args.d0_splits or None) if ds == "D0" else None
            spec = get_spec(ds)
            keep = (lambda p: p.split in splits.split(",")) if splits else (lambda p: True)
            need = estimate_bytes(spec, SIZE, keep=keep)
            free = shutil.disk_usage(work).free
            with_copy = free > 3 * need + 10e9
            if free < 2 * need + 10e9:
                log(f"skip {ds}: needs {2 * need / 1e9:.0f} GB + 10 GB margin, {free / 1e9:.0f} GB free")
                results["runs"].append({"dataset": ds, "skipped": f"{free / 1e9:.0f} GB free"})
                continue
            n = sum(keep(p) for p in plan(spec, SIZE))
            log(f"{ds}: {n} sequences, ~{need / 1e9:.1f} GB raw; {free / 1e9:.0f} GB free; copy {with_copy}")
            results["runs"].append(bench_dataset(ds, work, args.rounds if ds == "D1" else 1, splits, with_copy))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
