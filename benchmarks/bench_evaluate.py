"""Benchmark `a2fbench evaluate` against merely loading the same arrays, and our metric code against the
reference formulation (a Python comprehension over vertices, as CodeTalker's / FaceDiffuser's scripts do).

Run it under the heavy-job lock (it prepares multi-GB stand-ins and the reference needs ~8 GB)::

    flock /tmp/a2f-heavy.lock python benchmarks/bench_evaluate.py --work /tmp/a2f-bench-evaluate

Per dataset (default D0 = full-size BIWI Test-A, 24 sequences x 23,370 vertices, float64; D1 = full-size
VOCASET test, 40 sequences x 5,023 vertices, float32):

1. ``a2fbench synth --size full --splits test`` + ``prepare`` (skipped when already there), predictions =
   ground truth + N(0, 1e-3) noise as float32 through ``write_prediction``;
2. in fresh subprocesses, interleaved, ``--repeat`` times (medians reported; peak RSS from ``getrusage``):
   ``load`` (every ground-truth array from the store and every prediction with ``np.load``, one at a time),
   ``load_npy`` (the same ground truth as per-sequence ``.npy`` files, the reference scripts' layout) and
   ``evaluate`` under each protocol (end to end: validation, streaming, sha256, bootstrap);
3. in one subprocess holding every array in memory: our metric code (``score_arrays``) vs the reference
   oracle (:mod:`a2fbench.scoring.metrics.reference`), same metrics, same arrays, results checked equal.

``--keep`` keeps the data (default: deleted at the end, as the full-size stand-ins are several GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve()


# ------------------------------------------------------------------------------------------ children
def _rss_mib(workers: int = 0) -> float:
    """Peak RSS of this process (VmHWM: getrusage's ru_maxrss survives execve and would report the parent's
    peak), plus ``workers`` x the largest forked worker (ru_maxrss of children; an upper bound on the total)."""
    import resource

    with open("/proc/self/status") as f:
        own = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0 if workers else 0.0
    return own + workers * kids


def _cpu() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def child_load(data: str, dataset: str, pred: str) -> dict:
    import a2fbench

    c0 = _cpu()
    t = time.perf_counter()
    ds = a2fbench.open_dataset(data, dataset)
    n = 0
    for sid in ds.split("test"):
        g = ds[sid].motion
        p = np.load(os.path.join(pred, f"{sid}.npy"), allow_pickle=False)
        n += g.shape[0] + p.shape[0] * 0
    return {"seconds": time.perf_counter() - t, "cpu": _cpu() - c0, "rss_mib": _rss_mib(), "frames": n}


def child_load_npy(gt_dir: str, dataset: str, pred: str) -> dict:
    """The reference scripts' way: ``np.load`` of per-sequence ground-truth ``.npy`` files and predictions."""
    c0 = _cpu()
    t = time.perf_counter()
    n = 0
    for f in sorted(os.listdir(gt_dir)):
        g = np.load(os.path.join(gt_dir, f))
        p = np.load(os.path.join(pred, f))
        n += g.shape[0] + p.shape[0] * 0
    return {"seconds": time.perf_counter() - t, "cpu": _cpu() - c0, "rss_mib": _rss_mib(), "frames": n}


#: ``--axes``: the a2f metrics plus every evaluation axis (docs/metrics.md, "Timing, silence, intensity and diversity")
AXES_METRICS = "lve,mve,ufve,fdd,fdd-abs,mtm,lip-lag,silence-opening,slcc,diversity"


def child_evaluate(data: str, dataset: str, pred: str, protocol: str, workers: str = "", metrics: str = "") -> dict:
    from a2fbench.scoring.evaluate import evaluate

    w = int(workers) if workers else None
    c0 = _cpu()
    t = time.perf_counter()
    doc = evaluate(dataset, pred, data, protocol=protocol, progress=False, workers=w, metrics=metrics or None)
    from a2fbench.scoring.parallel import worker_count

    gt_bytes = doc["dataset"]["n_frames"] * doc["dataset"]["n_vertices"] * 3 * 8
    n = worker_count(w, doc["dataset"]["n_sequences"], gt_bytes)
    return {"seconds": time.perf_counter() - t, "cpu": _cpu() - c0, "rss_mib": _rss_mib(n if n > 1 else 0),
            "LVE": doc["metrics"]["LVE"]["value"], "FDD": doc["metrics"]["FDD"]["value"]}


def child_compute(data: str, dataset: str, pred: str, protocols: list[str], references: list[str]) -> dict:
    """Every array in memory, then our code and the reference side by side on them."""
    import a2fbench
    from a2fbench.scoring.evaluate import score_arrays
    from a2fbench.scoring.metrics import reference as R

    ds = a2fbench.open_dataset(data, dataset)
    ids = ds.split("test")
    gts = [np.asarray(ds[s].motion) for s in ids]
    preds = [np.load(os.path.join(pred, f"{s}.npy")) for s in ids]
    tms = [np.asarray(ds.template(ds[s].subject)) for s in ids]
    lips, upper = ds.regions["lips"], ds.regions["upper"]
    V = int(ds.card["n_vertices"])
    out: dict = {"rss_after_load_mib": _rss_mib()}
    for proto in protocols:
        best, best_cpu = None, None
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            res = score_arrays(gts, preds, tms, lips, upper, proto)["metrics"]
            dt, dc = time.perf_counter() - t, time.process_time() - c
            best = dt if best is None else min(best, dt)
            best_cpu = dc if best_cpu is None else min(best_cpu, dc)
        out[f"ours_{proto}"] = {"seconds": best, "cpu": best_cpu, "metrics": {k: float(v) for k, v in res.items()}}
    for ref in references:
        t, c = time.perf_counter(), time.process_time()
        r = getattr(R, ref)(gts, preds, tms, lips, upper, V)
        out[f"reference_{ref}"] = {"seconds": time.perf_counter() - t, "cpu": time.process_time() - c,
                                   "metrics": {k: float(v) for k, v in r.items() if k != "per_sequence"}}
        ours = out[f"ours_{ref}"]["metrics"]
        out[f"reference_{ref}"]["bitwise_LVE_FDD"] = all(ours[k] == out[f"reference_{ref}"]["metrics"][k]
                                                         for k in ("LVE", "FDD"))
    out["rss_mib"] = _rss_mib()
    return out


# --------------------------------------------------------------------------------------------- parent
def _run_child(*args: str) -> dict:
    r = subprocess.run([sys.executable, str(HERE), "--child", *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _prepare(work: Path, dataset: str) -> tuple[Path, Path]:
    import a2fbench
    from a2fbench.prepare import prepare_dataset
    from a2fbench.registry import get_spec
    from a2fbench.scoring.predictions import write_prediction
    from a2fbench.sources.synth import synth_dataset

    data, raw, pred = work / "data", work / "raw", work / f"pred_{dataset}"
    spec = get_spec(dataset)
    try:
        a2fbench.open_dataset(data, dataset).close()
    except a2fbench.A2FBenchError:
        print(f"[{dataset}] synth + prepare full-size test split ...", flush=True)
        synth_dataset(spec, raw, size="full", seed=0, splits=["test"], progress=False)
        prepare_dataset(spec, raw, data, progress=False)
        shutil.rmtree(raw / spec.id, ignore_errors=True)
    ds = a2fbench.open_dataset(data, dataset)
    ids = ds.split("test")
    if not pred.is_dir() or len(list(pred.glob("*.npy"))) != len(ids):
        print(f"[{dataset}] writing predictions (GT + noise, float32) ...", flush=True)
        rng = np.random.default_rng(0)
        for sid in ids:
            m = ds[sid].motion
            write_prediction(pred, sid, (m + rng.standard_normal(m.shape) * 1e-3).astype(np.float32))
    gt_npy = work / f"gt_npy_{dataset}"
    if not gt_npy.is_dir() or len(list(gt_npy.glob("*.npy"))) != len(ids):
        print(f"[{dataset}] writing ground truth as per-sequence .npy (the reference scripts' layout) ...", flush=True)
        from a2fbench.util.fsutil import write_npy

        for sid in ids:
            write_npy(gt_npy / f"{sid}.npy", ds[sid].motion)
    ds.close()
    return data, pred


def bench(work: Path, datasets: list[str], repeat: int, references: bool, only: Optional[list[str]] = None,
          axes: bool = False, compute: bool = True) -> dict:
    import a2fbench

    report: dict = {"machine": os.environ.get("A2F_MACHINE", "2-core CPU sandbox, shared"),
                    "cpus": os.cpu_count(), "numpy": np.__version__, "repeat": repeat, "datasets": {}}
    load0 = os.getloadavg()
    for d in datasets:
        data, pred = _prepare(work, d)
        ds = a2fbench.open_dataset(data, d)
        ids = ds.split("test")
        info = {"sequences": len(ids), "frames": sum(ds[s].n_frames for s in ids), "vertices": ds.card["n_vertices"],
                "dtype": str(ds[ids[0]].motion.dtype),
                "gb": round(sum((p.stat().st_size for p in pred.glob("*.npy"))) / 1e9
                            + sum(ds[s].n_frames for s in ids) * ds.card["dim"] * ds[ids[0]].motion.itemsize / 1e9, 2)}
        ds.close()
        print(f"[{d}] {info}", flush=True)
        _run_child("load", str(data), d, str(pred))  # warm the page cache
        names = ["load", "load_npy", "a2f", "codetalker", "facediffuser", "a2f_workers1"] + (["a2f_axes"] if axes else [])
        runs: dict[str, list[dict]] = {k: [] for k in names if only is None or k in only or k in ("load", "load_npy")}
        gt_npy = str(work / f"gt_npy_{d}")
        _run_child("load_npy", gt_npy, d, str(pred))
        for r in range(repeat):
            for name in runs:
                res = (_run_child("load", str(data), d, str(pred)) if name == "load"
                       else _run_child("load_npy", gt_npy, d, str(pred)) if name == "load_npy"
                       else _run_child("evaluate", str(data), d, str(pred), "a2f", "1") if name == "a2f_workers1"
                       else _run_child("evaluate", str(data), d, str(pred), "a2f", "", AXES_METRICS) if name == "a2f_axes"
                       else _run_child("evaluate", str(data), d, str(pred), name))
                runs[name].append(res)
                print(f"[{d}] run {r + 1}/{repeat} {name}: {res['seconds']:.2f} s, CPU {res['cpu']:.2f} s, "
                      f"{res['rss_mib']:.0f} MiB", flush=True)
        med = {k: {"seconds": statistics.median(x["seconds"] for x in v), "cpu": statistics.median(x["cpu"] for x in v),
                   "rss_mib": max(x["rss_mib"] for x in v)} for k, v in runs.items()}
        for k in (k for k in runs if k not in ("load", "load_npy")):
            med[k]["ratio_to_load_npy"] = med[k]["seconds"] / med["load_npy"]["seconds"]
            med[k]["ratio_to_load"] = med[k]["seconds"] / med["load"]["seconds"]
            med[k]["cpu_ratio_to_load"] = med[k]["cpu"] / med["load"]["cpu"]
        if "a2f_axes" in med and "a2f" in med:
            med["a2f_axes"]["ratio_to_a2f"] = med["a2f_axes"]["seconds"] / med["a2f"]["seconds"]
            med["a2f_axes"]["cpu_ratio_to_a2f"] = med["a2f_axes"]["cpu"] / med["a2f"]["cpu"]
        refs = (["codetalker"] if d == "D0" else ["codetalker", "facediffuser"]) if references else []
        if not compute:
            report["datasets"][d] = {**info, "end_to_end": med, "runs": runs, "compute": {}}
            continue
        print(f"[{d}] in-memory compute: ours vs reference {refs} ...", flush=True)
        comp = _run_child("compute", str(data), d, str(pred), "a2f,codetalker,facediffuser", ",".join(refs))
        for ref in refs:
            comp[f"speedup_{ref}"] = comp[f"reference_{ref}"]["seconds"] / comp[f"ours_{ref}"]["seconds"]
            comp[f"cpu_speedup_{ref}"] = comp[f"reference_{ref}"]["cpu"] / comp[f"ours_{ref}"]["cpu"]
        report["datasets"][d] = {**info, "end_to_end": med, "runs": runs, "compute": comp}
    report["loadavg"] = f"{load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end (1-min)"
    return report


def markdown(rep: dict) -> str:
    lines = [f"Machine: {rep['machine']} ({rep['cpus']} CPUs), numpy {rep['numpy']}; load average during the run "
             f"{rep.get('loadavg', '?')}. Medians of {rep.get('repeat', '?')} interleaved runs, each in a fresh "
             "process, page cache warm; CPU = user + system seconds (incl. worker processes).", "",
             "| data | what | wall (s) | CPU (s) | ratio (wall / CPU) | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
    for d, r in rep["datasets"].items():
        tag = f"{d} ({r['sequences']} seq, {r['frames']} frames x {r['vertices']} V, {r['dtype']} GT, {r['gb']} GB)"
        e = r["end_to_end"]
        lines.append(f"| {tag} | load GT from the store + predictions (np.load) | {e['load']['seconds']:.2f} | "
                     f"{e['load']['cpu']:.2f} | 1 | {e['load']['rss_mib']:.0f} |")
        lines.append(f"| {d} | load GT `.npy` files (reference layout) + predictions | {e['load_npy']['seconds']:.2f} | "
                     f"{e['load_npy']['cpu']:.2f} | {e['load_npy']['seconds'] / e['load']['seconds']:.2f}x | "
                     f"{e['load_npy']['rss_mib']:.0f} |")
        for k in (k for k in e if k not in ("load", "load_npy")):
            what = ("`evaluate --protocol a2f --workers 1`" if k == "a2f_workers1" else
                    f"`evaluate --metrics {AXES_METRICS}`" if k == "a2f_axes" else f"`evaluate --protocol {k}`")
            lines.append(f"| {d} | {what} end to end | {e[k]['seconds']:.2f} | {e[k]['cpu']:.2f} | "
                         f"{e[k]['ratio_to_load']:.2f}x store load ({e[k]['cpu_ratio_to_load']:.2f}x CPU); "
                         f"{e[k]['ratio_to_load_npy']:.2f}x `.npy` load"
                         + (f"; {e[k]['ratio_to_a2f']:.3f}x `a2f` ({e[k]['cpu_ratio_to_a2f']:.3f}x CPU)"
                            if "ratio_to_a2f" in e[k] else "") + f" | {e[k]['rss_mib']:.0f} |")
        c = r["compute"]
        for k in (k for k in ("a2f", "codetalker", "facediffuser") if f"ours_{k}" in c):
            lines.append(f"| {d} | in memory: ours, {k} metrics | {c[f'ours_{k}']['seconds']:.2f} | "
                         f"{c[f'ours_{k}']['cpu']:.2f} | | |")
        for k in ("codetalker", "facediffuser"):
            if f"reference_{k}" in c:
                lines.append(f"| {d} | in memory: reference {k} formulation (LVE, FDD bitwise equal to ours: "
                             f"{c[f'reference_{k}']['bitwise_LVE_FDD']}) | {c[f'reference_{k}']['seconds']:.2f} | "
                             f"{c[f'reference_{k}']['cpu']:.2f} | ours {c[f'speedup_{k}']:.0f}x / "
                             f"{c[f'cpu_speedup_{k}']:.0f}x faster | {c['rss_mib']:.0f} (whole process) |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], sys.argv[3:]
        if kind == "load":
            res = child_load(*args)
        elif kind == "load_npy":
            res = child_load_npy(*args)
        elif kind == "evaluate":
            res = child_evaluate(*args)
        else:
            res = child_compute(args[0], args[1], args[2], args[3].split(","), [x for x in args[4].split(",") if x])
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/a2f-bench-evaluate"))
    ap.add_argument("--datasets", default="D0,D1")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true", help="Skip the (slow, ~8 GB) reference formulation.")
    ap.add_argument("--keep", action="store_true", help="Keep the full-size data and predictions.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the full report here.")
    ap.add_argument("--axes", action="store_true",
                    help="Also run `evaluate --metrics` with every evaluation axis (a2f_axes), interleaved with a2f.")
    ap.add_argument("--only", default=None, help="Comma list of the end-to-end runs to do (a2f, codetalker, "
                    "facediffuser, a2f_workers1, a2f_axes); load and load_npy always run.")
    ap.add_argument("--no-compute", action="store_true", help="Skip the in-memory comparison.")
    a = ap.parse_args()
    try:
        rep = bench(a.work, a.datasets.split(","), a.repeat, not a.no_reference,
                    a.only.split(",") if a.only else None, a.axes or bool(a.only and "a2f_axes" in a.only),
                    not a.no_compute)
    finally:
        if not a.keep:
            shutil.rmtree(a.work, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(rep, indent=1))
    print(markdown(rep))


if __name__ == "__main__":
    main()
