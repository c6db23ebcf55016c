"""Benchmark the raw BIWI route: `a2fbench prepare D0` on the full-size raw stand-in (`synth D0 --size full
--layout raw`) against reading its archives once, and the peak memory of prepare.

* "read once": a separate process opens every take archive and reads every member's bytes (what any reader
  of the corpus must do at least), and reads every ``.flv`` and ``.obj`` file; wall time and peak RSS.
* "prepare": ``a2fbench prepare D0`` on the same folder (parse, CodeTalker processing in float64, audio
  decoding and resampling, sha256 of every input, store writing); wall time and peak RSS.

Each also reports its CPU time (user + sys) and the 1-minute load average after it: on a shared machine the
wall time depends on the others' load, the CPU time much less.

Both read files that ``synth`` has just written, which may sit in the page cache for both alike (no root to
drop caches); ``sync`` runs before each (not timed). ``--splits`` keeps a subset of the full plan (the whole
full raw D0 is ~20 GB of .vl frames plus a ~41 GB store). Run it under the shared lock:
``flock /tmp/a2f-heavy.lock python benchmarks/bench_biwi_raw.py --splits test``.
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


def timed(cmd: list[str]) -> dict:
    subprocess.run(["sync"], check=False)
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    _, rss, user, sys_ = r.stderr.strip().splitlines()[-1].split()
    return {"wall_s": round(wall, 2), "cpu_s": round(float(user) + float(sys_), 2),
            "peak_rss_mib": round(int(rss) / 1024, 1), "load_1min": round(os.getloadavg()[0], 1), "stdout": r.stdout.strip()[-200:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="test", help="splits of the full plan to build ('' for all 560 takes)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_biwi_raw-"))
    try:
        raw, data = tmp / "raw", tmp / "data"
        cmd = [sys.executable, "-m", "a2fbench.cli", "synth", "D0", "--out", str(raw), "--size", "full",
               "--layout", "raw"] + (["--splits", a.splits] if a.splits else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        synth_s = time.perf_counter() - t0
        files = [p for p in (raw / "D0").rglob("*") if p.is_file()]
        takes = [p for p in files if p.suffix == ".tar"]
        out: dict = {"machine": f"{platform.machine()} {platform.system()} {platform.release()}, Python "
                                f"{platform.python_version()}", "splits": a.splits or "all",
                     "takes": len(takes), "raw_bytes": sum(p.stat().st_size for p in files),
                     "vl_bytes": sum(p.stat().st_size for p in takes), "synth_s": round(synth_s, 1),
                     "read_once": [], "prepare": []}
        for _ in range(a.rounds):
            out["read_once"].append(timed([sys.executable, "-c", READ_ONCE, str(raw / "D0")]))
            shutil.rmtree(data, ignore_errors=True)
            out["prepare"].append(timed([sys.executable, "-m", "a2fbench.cli", "prepare", "D0", "--raw", str(raw),
                                         "--out", str(data)]))
        card = json.loads((data / "D0" / "card.json").read_text())
        out["frames"] = card["stats"]["n_frames"]
        out["cpu_ratio"] = round(min(r["cpu_s"] for r in out["prepare"]) / min(r["cpu_s"] for r in out["read_once"]), 2)
        out["ratio"] = round(min(r["wall_s"] for r in out["prepare"]) / min(r["wall_s"] for r in out["read_once"]), 2)
        print(json.dumps(out, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
