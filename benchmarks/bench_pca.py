"""PCA of a prepared vertex dataset: a2fbench's streamed block-Krylov PCA vs scikit-learn's IncrementalPCA.

Side by side in one run, each arm in its own fresh process (so its peak resident memory is its own):

* ``ours``: :func:`a2fbench.spaces.pca.fit` on the store (CPU, defaults: 3 passes, seed 0); ``ours-pP`` and
  ``ours-pP-osM`` with P passes and M oversampling columns;
* ``sklearn``: ``IncrementalPCA(n_components=K, batch_size=1095).partial_fit`` on consecutive 1095-row batches
  of the same rows (motion minus template, float32 as in the reference measurement), streamed from the same
  store; the last batch, shorter than K, is dropped, as UniTalker's ``train_pca.py`` does.

Then one float64 pass over the training rows scores both on the same footing: explained variance
``1 - sum ||(x - mu) - P_W (x - mu)||^2 / sum ||x - mean||^2`` with each method's own mean ``mu`` and its
components ``W`` re-orthonormalised. Prints a markdown table and writes JSON.

    flock /tmp/a2f-heavy.lock python benchmarks/bench_pca.py --data DATA --dataset D0 --out pca_D0.json

``--max-rows N`` fits both arms on the first N training rows only (say so when you report it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


class _Limited:
    """The first ``n`` rows of a source (``--max-rows``)."""

    def __init__(self, src, n: int):
        self.src, self.n_rows, self.dim, self.name = src, min(n, src.n_rows), src.dim, src.name
        self.block_rows = src.block_rows

    def blocks(self):
        left = self.n_rows
        for x in self.src.blocks():
            if left <= 0:
                return
            yield x[:left]
            left -= len(x)


def _source(data: str, dataset: str, block: int, max_rows: int | None):
    import a2fbench
    from a2fbench.spaces.pca import DatasetSource

    ds = a2fbench.open_dataset(data, dataset)
    src = DatasetSource(ds, "train", block)
    return (_Limited(src, max_rows) if max_rows else src), ds


def arm_ours(a: argparse.Namespace, out: Path, passes: int | None = None, oversample: int | None = None) -> dict:
    from a2fbench.spaces import pca

    src, ds = _source(a.data, a.dataset, pca.DEFAULT_BLOCK_ROWS, a.max_rows)
    scratch = Path(tempfile.mkdtemp(dir=ds.path))  # where fit_dataset spills: beside the store
    if a.cold:
        _evict(ds.path)
    t = time.perf_counter()
    p = pca.fit(src, a.components, seed=0, progress=False, spill_dir=scratch, passes=passes or pca.DEFAULT_PASSES,
                oversample=oversample)
    dt = time.perf_counter() - t
    scratch.rmdir()
    np.savez(out, components=p.components, mean=p.mean)
    return {"seconds": dt, "rows_fitted": src.n_rows, "stated_explained_variance": p.meta["explained_variance"],
            "settings": {k: p.meta[k] for k in ("passes", "block", "oversample", "seed")}}


def _evict(folder: Path) -> None:
    """Drop the store's pages from the page cache (clean pages; no root needed), so each arm reads cold."""
    from a2fbench.store import STORE_FILE

    fd = os.open(folder / STORE_FILE, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def arm_sklearn(a: argparse.Namespace, out: Path) -> dict:
    from sklearn.decomposition import IncrementalPCA

    src, ds = _source(a.data, a.dataset, a.batch, a.max_rows)
    if a.cold:
        _evict(ds.path)
    ipca = IncrementalPCA(n_components=a.components, batch_size=a.batch)
    t = time.perf_counter()
    rows = 0
    for x in src.blocks():
        if len(x) < a.components:  # sklearn refuses a batch smaller than K; UniTalker drops the remainder
            break
        ipca.partial_fit(x.astype(np.float32))
        rows += len(x)
    dt = time.perf_counter() - t
    np.savez(out, components=ipca.components_, mean=ipca.mean_)
    return {"seconds": dt, "rows_fitted": rows, "stated_explained_variance": float(ipca.explained_variance_ratio_.sum()),
            "settings": {"batch_size": a.batch, "dtype": "float32"}}


def evaluate(a: argparse.Namespace, files: dict[str, Path]) -> dict[str, float]:
    """Explained variance of each result on the same rows, float64, one streamed pass."""
    src, _ = _source(a.data, a.dataset, 1024, a.max_rows)
    fits = {}
    for name, f in files.items():
        z = np.load(f)
        W, _ = np.linalg.qr(z["components"].astype(np.float64).T)  # (D, K) orthonormal
        fits[name] = (W, z["mean"].astype(np.float64))
    ref = next(iter(fits.values()))[1]
    res = {n: 0.0 for n in fits}
    colsum, ss_ref, n = 0.0, 0.0, 0
    for x in src.blocks():
        x = np.asarray(x, np.float64)
        d = x - ref
        colsum = colsum + d.sum(0)
        ss_ref += float(np.einsum("ij,ij->", d, d))
        n += len(x)
        for name, (W, mu) in fits.items():
            r = x - mu
            zc = r @ W
            res[name] += float(np.einsum("ij,ij->", r, r)) - float(np.einsum("ij,ij->", zc, zc))
    total = ss_ref - float(colsum @ colsum) / n
    return {name: 1.0 - v / total for name, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", default="D0")
    ap.add_argument("--components", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1095)
    ap.add_argument("--arms", default="ours,ours-p2,sklearn")
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cold", action="store_true", help="evict the store from the page cache before each arm")
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--arm-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.arm:  # child process: one arm
        if a.arm == "sklearn":
            r = arm_sklearn(a, Path(a.arm_out))
        else:  # ours, ours-pP, ours-pP-osM: P passes, M oversampling columns
            kw = {("passes" if part[0] == "p" else "oversample"): int(part.lstrip("pos"))
                  for part in a.arm.split("-")[1:]}
            r = arm_ours(a, Path(a.arm_out), **kw)
        r["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(r), flush=True)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_pca_"))
    report = {"machine": _machine(), "dataset": a.dataset, "components": a.components, "max_rows": a.max_rows,
              "arms": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    files = {}
    for arm in a.arms.split(","):
        load0 = os.getloadavg()
        out = tmp / f"{arm}.npz"
        cmd = [sys.executable, __file__, "--arm", arm, "--arm-out", str(out), "--data", a.data, "--dataset",
               a.dataset, "--components", str(a.components), "--batch", str(a.batch)]
        if a.max_rows:
            cmd += ["--max-rows", str(a.max_rows)]
        if a.cold:
            cmd += ["--cold"]
        print(f"running {arm} ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not line:
            sys.exit(f"arm {arm} failed: {p.stderr[-2000:]}")
        r = json.loads(line[0][7:])
        r["loadavg_before"], r["loadavg_after"] = load0, os.getloadavg()
        report["arms"][arm] = r
        files[arm] = out
        print(f"  {arm}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    t = time.perf_counter()
    ev = evaluate(a, files)
    report["eval_seconds"] = time.perf_counter() - t
    for arm, v in ev.items():
        report["arms"][arm]["explained_variance"] = v
    if "sklearn" in report["arms"]:
        s = report["arms"]["sklearn"]
        for arm, o in report["arms"].items():
            if arm != "sklearn":
                o["speedup_vs_sklearn"] = s["seconds"] / o["seconds"]
                o["ev_minus_sklearn"] = o["explained_variance"] - s["explained_variance"]
    print("| arm | rows fitted | seconds | peak RSS (MiB) | explained variance (same eval) | stated |")
    print("|---|---|---|---|---|---|")
    for arm, r in report["arms"].items():
        print(f"| {arm} | {r['rows_fitted']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r['explained_variance']:.7f} | {r['stated_explained_variance']:.7f} |")
    for arm, r in report["arms"].items():
        if "speedup_vs_sklearn" in r:
            print(f"{arm}: {r['speedup_vs_sklearn']:.1f}x faster than sklearn, explained variance "
                  f"{r['ev_minus_sklearn']:+.2e} vs sklearn")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
