"""Benchmark the raw BIWI route: `a2fbench prepare D0` on the full-size raw stand-in (`synth D0 --size full
--layout raw`) against reading its archives once, and the peak memory of prepare.

* "read once": a separate process opens every take archive and reads every member's bytes (what any reader
  of the corpus must do at least), and reads every ``.flv`` and ``.obj`` file; wall time and peak RSS.
* "read + write float64": the floor of any route that keeps float64 as CodeTalker does: read every take as
  above, widen its frames to float64 (the same (T, 3N) array ``prepare`` stores) and write it to an HDF5 file
  the way the store writer does (one contiguous dataset per take, no compression); no processing.
* "+ sha256": the same, plus the sha256 of every input file on a background thread, as ``prepare`` records
  them (it reads each file again; 1 MiB at a time).
* "prepare": ``a2fbench prepare D0`` on the same folder (parse, CodeTalker processing in float64, audio
  decoding and resampling, sha256 of every input, store writing); wall time and peak RSS.

Each also reports its CPU time (user + sys) and the 1-minute load average before and after it: on a shared
machine the wall time depends on the others' load, the CPU time much less. The four runs repeat ``--rounds``
times in rotated order; the ratios printed are of the best round of each (wall, then CPU).

All read files that ``synth`` has just written, which may sit in the page cache for all alike (no root to
drop caches); ``sync`` runs before each (not timed). ``--splits`` keeps a subset of the full plan (the whole
full raw D0 is ~20 GB of .vl frames plus a ~41 GB store); ``--raw`` reuses a stand-in already written. Run it
under the shared lock: ``flock /tmp/a2f-heavy.lock python benchmarks/bench_biwi_raw.py --splits test``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READ_ONCE = r"""
import sys, tarfile
from pathlib import Path
root = Path(sys.argv[1]); n = 0
for p in sorted(root.rglob("*")):
    if p.suffix in (".tar", ".tgz", ".gz"):
        with tarfile.open(p, "r:*") as tf:
            for m in tf:
                f = tf.extractfile(m) if m.isfile() else None
                n += len(f.read()) if f is not None else 0
    elif p.suffix in (".flv", ".obj"):
        n += len(p.read_bytes())
print(n)
"""

#: the floor rows: read once, widen to float64 and write it as the store writer does; argv[3] = "hash" adds the
#: sha256 of every input on a background thread
READ_WRITE = r"""
import hashlib, sys, tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import h5py, numpy as np
root, out, hash_ = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "hash"
files = sorted(p for p in root.rglob("*") if p.is_file())
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
pool = ThreadPoolExecutor(1)
hashes = pool.map(sha, files) if hash_ else []
n = 0
with h5py.File(out, "w") as h5:
    for p in files:
        if p.suffix in (".tar", ".tgz", ".gz"):
            with tarfile.open(p, "r:*") as tf:
                frames = [tf.extractfile(m).read() for m in tf if m.isfile() and m.name.endswith(".vl")]
            N = (len(frames[0]) - 4) // 12
            m = np.empty((len(frames), 3 * N), np.float64)
            for i, b in enumerate(frames):
                m[i] = np.frombuffer(b, "<f4", 3 * N, 4)
            h5.create_group(p.stem + p.parent.name).create_dataset("motion", data=m)
            n += m.nbytes
        elif p.suffix in (".flv", ".obj"):
            p.read_bytes()
print(n, len(list(hashes)))
"""


def timed(cmd: list[str]) -> dict:
    subprocess.run(["sync"], check=False)
    load0 = round(os.getloadavg()[0], 1)
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    _, rss, user, sys_ = r.stderr.strip().splitlines()[-1].split()
    return {"wall_s": round(wall, 2), "cpu_s": round(float(user) + float(sys_), 2),
            "peak_rss_mib": round(int(rss) / 1024, 1), "load_1min_before": load0,
            "load_1min_after": round(os.getloadavg()[0], 1), "stdout": r.stdout.strip()[-200:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="test", help="splits of the full plan to build ('' for all 560 takes)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the four runs (each kind first once in 4)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--raw", type=Path, help="an existing raw root (with D0/ made by synth) instead of a new one")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_biwi_raw-"))
    try:
        raw, data = a.raw or tmp / "raw", tmp / "data"
        cmd = [sys.executable, "-m", "a2fbench.cli", "synth", "D0", "--out", str(raw), "--size", "full",
               "--layout", "raw"] + (["--splits", a.splits] if a.splits else [])
        t0 = time.perf_counter()
        if a.raw is None:
            subprocess.run(cmd, check=True, capture_output=True)
        synth_s = time.perf_counter() - t0
        files = [p for p in (raw / "D0").rglob("*") if p.is_file()]
        takes = [p for p in files if p.suffix == ".tar"]
        out: dict = {"machine": f"{platform.machine()} {platform.system()} {platform.release()}, Python "
                                f"{platform.python_version()}",
                     "splits": f"given raw folder {a.raw}" if a.raw else a.splits or "all",
                     "takes": len(takes), "raw_bytes": sum(p.stat().st_size for p in files),
                     "vl_bytes": sum(p.stat().st_size for p in takes), "synth_s": round(synth_s, 1),
                     "read_once": [], "read_write_f64": [], "read_write_f64_sha256": [], "prepare": []}
        floor_h5 = tmp / "floor.h5"
        runs = {"read_once": [sys.executable, "-c", READ_ONCE, str(raw / "D0")],
                "read_write_f64": [sys.executable, "-c", READ_WRITE, str(raw / "D0"), str(floor_h5), "-"],
                "read_write_f64_sha256": [sys.executable, "-c", READ_WRITE, str(raw / "D0"), str(floor_h5), "hash"],
                "prepare": [sys.executable, "-m", "a2fbench.cli", "prepare", "D0", "--raw", str(raw), "--out",
                            str(data)]}
        order = list(runs)
        for k in range(a.rounds):
            # each run starts with no output of an earlier one on disk, and round k starts with the k-th kind: on
            # this machine the first run after a pause, or after a 2.2 GB file was written or dropped, can take
            # several times the system time of the next one
            for key in order[k % len(order):] + order[:k % len(order)]:
                out[key].append(timed(runs[key]))
                if key == "prepare":
                    card = json.loads((data / "D0" / "card.json").read_text())
                shutil.rmtree(data, ignore_errors=True)
                floor_h5.unlink(missing_ok=True)
        out["frames"] = card["stats"]["n_frames"]
        best = {k: (min(r["wall_s"] for r in out[k]), min(r["cpu_s"] for r in out[k]))
                for k in ("read_once", "read_write_f64", "read_write_f64_sha256", "prepare")}
        prep = best["prepare"]
        for k in ("read_once", "read_write_f64", "read_write_f64_sha256"):  # prepare / each, wall (CPU), best rounds
            out[f"prepare_over_{k}"] = [round(prep[0] / best[k][0], 2), round(prep[1] / best[k][1], 2)]
        print(json.dumps(out, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
