"""UniTalker inference timing: fast mode beside the reference mode (fp32, eager attention, no compile), one run.

Uses ``unitalker.bench.bench`` (model forward only, warm-up, median of >= 20 runs, CUDA events on a GPU,
perf_counter on the CPU) for each config named, and prints one JSON document plus markdown rows for
docs/benchmarks.md.

    flock /tmp/a2f-heavy.lock python benchmarks/bench_unitalker_infer.py --configs tiny,unitalker-b --batch 4
    python benchmarks/bench_unitalker_infer.py --configs unitalker-b,unitalker-l --device cuda --batch 16 --compile
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,unitalker-b")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from unitalker.infer.bench import bench, format_report

    reports = []
    for name in a.configs.split(","):
        rep = bench(None, name, seconds=a.seconds, device=a.device, batch=a.batch, runs=a.runs, use_compile=a.compile)
        reports.append(rep)
        print(format_report(rep), flush=True)
    print("\n| config | device | mode | batch | median ms | audio-s/s |\n|---|---|---|---|---|---|")
    for rep in reports:
        for r in rep["rows"]:
            print(f"| {rep['source'].split()[1]} | {rep['device']} | {r['mode']} ({r['dtype']}, {r['attention']}) | "
                  f"{r['batch']} | {r['median_ms']:.1f} | {r['audio_s_per_s']:.1f} |")
    if a.json:
        a.json.write_text(json.dumps(reports, indent=1) + "\n")


if __name__ == "__main__":
    main()
