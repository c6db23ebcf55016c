"""The issue-14 table from the JSON files benchmarks/gpu_all.sh writes: ``python benchmarks/gpu_summary.py OUT``.

Prints markdown for docs/benchmarks.md: the table (ours, reference mode vs fast mode, the goal, whether met),
then what the fast mode chose, and the anatomy of a training step. Missing files give "not measured" cells.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _rows(rep, mode: str, batch: int):
    if not rep:
        return None
    reps = rep if isinstance(rep, list) else [rep]
    for r in reps:
        for x in r["rows"]:
            if x["mode"] == mode and x["batch"] == batch:
                return x
    return None


def _f(x, fmt: str = "{:,.0f}", none: str = "not measured") -> str:
    return none if x is None else fmt.format(x)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_out")
    ib, il = _load(out / "infer_b.json"), _load(out / "infer_l.json")
    comp, tb, tl = _load(out / "compile.json"), _load(out / "train_b.json"), _load(out / "train_l.json")
    card = next((r[0]["device"] for r in (ib, il) if r), None) or (tb or tl or {}).get("machine", "?")
    print(f"Card: {card}. Random weights, 10 s clips (inference); training on clips with the full-size stand-ins' "
          f"lengths. Ours, reference mode vs fast mode in the same process.\n")
    print("| what | ours, reference mode | ours, fast mode | goal | met |\n|---|---|---|---|---|")
    for name, rep, goal in (("UniTalker-B", ib, 10000), ("UniTalker-L", il, 8000)):
        r, f = _rows(rep, "reference", 16), _rows(rep, "fast", 16)
        met = "" if not (r and f) else ("yes" if f["audio_s_per_s"] >= goal else "no")
        print(f"| {name} inference b16, audio-s/s | {_f(r and r['audio_s_per_s'])} | "
              f"{_f(f and f['audio_s_per_s'])} | >= {goal:,} | {met} |")
    for name, rep in (("UniTalker-B", ib), ("UniTalker-L", il)):
        r, f = _rows(rep, "reference", 1), _rows(rep, "fast", 1)
        ratio = f" ({f['median_ms'] / r['median_ms']:.2f}x)" if r and f else ""
        met = "" if not (r and f) else ("yes" if f["median_ms"] <= 0.5 * r["median_ms"] else "no")
        print(f"| {name} inference b1, ms (median) | {_f(r and r['median_ms'], '{:.2f}')} | "
              f"{_f(f and f['median_ms'], '{:.2f}')}{ratio} | <= 0.5x reference mode | {met} |")
    cf = _rows(comp, "fast", 1)
    ctext = "not run or failed (log.txt)" if not cf else \
        f"completed: b1 {cf['median_ms']:.2f} ms, graph {'yes' if cf.get('graph') else 'no'}"
    print(f"| `bench --compile` | | {ctext} | works or is gone | {'yes' if cf else ''} |")
    for name, t in (("UniTalker-B", tb), ("UniTalker-L", tl)):
        c = next(iter(((t or {}).get("configs") or {}).values()), None)
        if not c:
            print(f"| {name} training, audio-s/s | not measured | not measured | >= 15x reference | |")
            continue
        best = max(c["ours"].values(), key=lambda r: r["audio_s_per_s"])
        ref = c.get("reference")
        sp = c.get("speedup")
        print(f"| {name} training, audio-s/s | {_f(ref and ref['audio_s_per_s'], '{:,.1f}')} (batch 1, fp32) | "
              f"{best['audio_s_per_s']:,.1f} (batch 16, bf16){f' = {sp:.1f}x' if sp else ''} | >= 15x reference | "
              f"{'' if sp is None else ('yes' if sp >= 15 else 'no')} |")
        h = c["projected_100_epochs_hours"]
        print(f"| projected 100 epochs of A2F-Bench ({name}) | {_f(h.get('reference'), '{:.1f} h')} | "
              f"{h['ours']:.1f} h | < 3 h (-B) | {'yes' if h['ours'] < 3 else 'no'} |")
    print("\nFast mode (per batch size): CNN implementation chosen by timing, CUDA graph, relative error of the trunk "
          "output against the reference mode.\n")
    print("| model | batch | CNN | candidates (ms) | graph | rel. error |\n|---|---|---|---|---|---|")
    for name, rep in (("B", ib), ("L", il), ("B, --compile", comp)):
        for x in (rep if isinstance(rep, list) else [rep] if rep else []):
            for r in x["rows"]:
                if r["mode"] == "fast":
                    cands = ", ".join(f"{k} {v}" for k, v in r.get("cnn_timings_ms", {}).items())
                    g = "yes" if r.get("graph") else f"no {r.get('graph_error', '')}".strip()
                    print(f"| {name} | {r['batch']} | {r.get('cnn')} | {cands} | {g} | {r.get('rel_err', float('nan')):.1e} |")
    print("\nTraining step anatomy (ours; steps after the timed ones).\n")
    print("| model | setting | ms/step | audio-s/s | GPU busy | kernels/step | ops/step | syncs/step | data wait ms/step "
          "| feature cache |\n|---|---|---|---|---|---|---|---|---|---|")
    for name, t in (("B", tb), ("L", tl)):
        for conf, c in ((t or {}).get("configs") or {}).items():
            settings = list(c["ours"].items()) + ([("reference", c["reference"])] if c.get("reference") else [])
            for k, r in settings:
                fc = r.get("feature_cache")
                fct = f"{fc['bytes'] / 1e9:.2f} GB on {fc['where']}" if fc else ""
                print(f"| {name} | {k} | {r['ms_per_step']:.1f} | {r['audio_s_per_s']:,.1f} | "
                      f"{_f(r.get('gpu_busy_fraction'), '{:.2f}', '')} | {_f(r.get('kernels_per_step'), '{:.0f}', '')} | "
                      f"{_f(r.get('ops_per_step'), '{:.0f}', '')} | {_f(r.get('syncs_per_step'), '{:.1f}', '')} | "
                      f"{r['data_wait_ms_per_step']:.1f} | {fct} |")
            for k, r in c["ours"].items():
                if r.get("sync_sites"):
                    print(f"\nsyncs ({name}, {k}): {r['sync_sites']}")
    if tb:
        e = tb.get("full_size_epoch", {})
        print(f"\nEpoch of A2F-Bench (full-size stand-ins, duplicates): {e.get('clips')} clips, "
              f"{e.get('audio_hours', 0):.2f} h of audio, mean clip {e.get('mean_clip_seconds', 0):.2f} s.")


if __name__ == "__main__":
    main()
