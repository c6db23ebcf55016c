"""Streaming: quality against algorithmic latency, and compute per chunk, with the CNN cache and without.

Part 1 (``--run RUN --data DATA``): for each chunk/look-ahead setting, `unitalker predict --chunk-ms ...` on the
stand-in's test split (a trained tiny run, e.g. the one acceptance 21 trains), scored with `a2fbench evaluate
--protocol unitalker`; the offline prediction of the same checkpoint is the first row.
Part 2 (``--speed``): compute per chunk in steady state (the window full: left context + chunk) for the tiny
config and a UniTalker-B-sized model with random weights (built from its config, no download), CNN cache on and
off; each setting streams ``context + 4 chunks`` of speech-like audio and the last 3 chunks are timed. The chunk
keeps up when compute per chunk < chunk (RTF < 1). Prints JSON and markdown rows; ``--plot`` writes the figure.

    python benchmarks/bench_streaming.py --run RUN --data DATA --speed --plot docs/img/streaming.png
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = [(100, 0), (200, 0), (200, 100), (400, 0), (400, 200), (800, 0), (1600, 0)]
CHUNKS = [200, 400, 800, 1600]


def quality(run: Path, data: Path, dataset: str, context: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as t:
        for chunk, look in [(None, 0)] + SETTINGS:
            pred, res = Path(t) / f"p{chunk}_{look}", Path(t) / f"r{chunk}_{look}.json"
            cmd = ["unitalker", "predict", "--checkpoint", str(run), "--data", str(data), "--dataset", dataset,
                   "--out", str(pred), "--no-progress", "--device", "cpu"]
            if chunk is not None:
                cmd += ["--chunk-ms", str(chunk), "--lookahead-ms", str(look), "--context-ms", str(context)]
            subprocess.run(cmd, check=True, capture_output=True)
            subprocess.run(["a2fbench", "evaluate", str(pred), "--dataset", dataset, "--data", str(data),
                            "--protocol", "unitalker", "--bootstrap", "100", "--out", str(res)], check=True,
                           capture_output=True)
            m = json.loads(res.read_text())["metrics"]
            rows.append({"chunk_ms": chunk, "lookahead_ms": look, "latency_ms": None if chunk is None else chunk + look,
                         "LVE": m["LVE"]["value"], "LVE_ci95": m["LVE"]["ci95"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def speed(config: str, context: float, threads: int) -> list[dict]:
    import numpy as np
    import torch

    from a2fbench.sources.synth.face import make_drive, render_audio
    from unitalker.infer.bench import registry_spec
    from unitalker.infer.stream import HeadOut, StreamSettings, Streamer
    from unitalker.model.config import load_config
    from unitalker.model.model import UniTalker
    from unitalker.model.runtime import set_threads

    n_threads = set_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(config, ["model.encoder.pretrained=false"])
    m = UniTalker(cfg, registry_spec(cfg)).eval()
    space = next(iter(m.heads))
    rng = np.random.default_rng(0)
    rows = []
    for chunk in CHUNKS:
        x = render_audio(rng, make_drive(rng, (context + 4 * chunk) / 1000 + 0.1), 16000, 140.0).astype(np.float32)
        for cache in (True, False):
            s = Streamer(m, [HeadOut(space, space, lambda a: a)], 30.0, m.pivot,
                         StreamSettings(chunk, 0, context, cache), torch.device("cpu"))
            s.push(x)
            ms = [c["compute_ms"] for c in s.record()["chunks"][-3:]]
            rows.append({"config": config, "chunk_ms": chunk, "context_ms": context, "cnn_cache": cache,
                         "threads": n_threads, "compute_ms_median": float(np.median(ms)), "compute_ms_max": max(ms),
                         "rtf": float(np.median(ms)) / chunk})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(q: list[dict], sp: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    off = [r for r in q if r["chunk_ms"] is None]
    st = [r for r in q if r["chunk_ms"] is not None]
    for look in sorted({r["lookahead_ms"] for r in st}):
        pts = sorted((r["latency_ms"], r["LVE"]) for r in st if r["lookahead_ms"] == look)
        a.plot(*zip(*pts), "o-", label=f"look-ahead {look} ms")
    if off:
        a.axhline(off[0]["LVE"], color="k", ls="--", label="offline (whole clip)")
    a.set_xlabel("algorithmic latency (ms)")
    a.set_ylabel("LVE (unitalker protocol)")
    a.set_title("tiny model, D1 stand-in test split")
    a.legend(fontsize=8)
    for (config, cache), mk in zip(sorted({(r["config"], r["cnn_cache"]) for r in sp}), "osox"):
        pts = [(r["chunk_ms"], r["compute_ms_median"]) for r in sp if (r["config"], r["cnn_cache"]) == (config, cache)]
        b.plot(*zip(*pts), mk + "-", label=f"{config}, CNN cache {'on' if cache else 'off'}")
    b.plot(CHUNKS, CHUNKS, "k:", label="real time (compute = chunk)")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("chunk (ms)")
    b.set_ylabel("compute per chunk (ms)")
    b.set_title("CPU, shared 2-core machine")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--dataset", default="D1")
    ap.add_argument("--context-ms", type=float, default=2000.0)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--configs", default="tiny,unitalker-b")
    ap.add_argument("--threads", type=int, default=0, help="0: the cores not busy now")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    q = quality(a.run, a.data, a.dataset, a.context_ms) if a.run else []
    sp = [r for c in a.configs.split(",") for r in speed(c, a.context_ms, a.threads)] if a.speed else []
    doc = {"quality": q, "speed": sp}
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1) + "\n")
    print("\n| chunk ms | look-ahead ms | latency ms | LVE | 95% CI |\n|---|---|---|---|---|")
    for r in q:
        lat = "offline" if r["chunk_ms"] is None else r["latency_ms"]
        print(f"| {r['chunk_ms'] or '-'} | {r['lookahead_ms']} | {lat} | {r['LVE']:.4g} | "
              f"{r['LVE_ci95'][0]:.3g}..{r['LVE_ci95'][1]:.3g} |")
    print("\n| config | chunk ms | CNN cache | threads | compute ms/chunk (median, max) | RTF |\n|---|---|---|---|---|---|")
    for r in sp:
        print(f"| {r['config']} | {r['chunk_ms']} | {'on' if r['cnn_cache'] else 'off'} | {r['threads']} | "
              f"{r['compute_ms_median']:.0f}, {r['compute_ms_max']:.0f} | {r['rtf']:.2f} |")
    if a.plot:
        plot(q, sp, a.plot)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
