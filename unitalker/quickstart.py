"""``unitalker quickstart``: the main job on the embedded default, end to end.

synth D0..D7 -> prepare -> PCA (D0..D2) -> train the ``tiny`` UniTalker -> predict every test split ->
evaluate -> submit to the leaderboard (``a2fbench leaderboard`` in a subprocess: the hand-off is the results
JSON; the user's default board unless ``--db`` says otherwise) -> print the board and the commands that show
it all again. A static-template baseline (every frame = the subject's neutral face) is scored and
submitted beside it, so the board shows what the model learned. Every step is skipped when its output is
already there, so an interrupted quickstart resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

import a2fbench
from a2fbench.errors import A2FBenchError
from a2fbench.prepare import prepare_dataset
from a2fbench.registry import get_spec
from a2fbench.scoring.evaluate import evaluate
from a2fbench.scoring.predictions import write_prediction
from a2fbench.sources.synth import synth_dataset
from a2fbench.spaces.pca import fit_dataset
from a2fbench.util.fsutil import atomic_path, write_json
from a2fbench.util.paths import default_db

from .model.config import load_config
from .infer.predict import predict
from .model.load import load_model
from .train.loop import train

log = logging.getLogger(__name__)
DATASETS = ["D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7"]
PCA_DATASETS = ["D0", "D1", "D2"]
PCA_COMPONENTS = 16
METHOD = "UniTalker (tiny, quickstart)"
STATIC = "static template"


def _step(msg: str) -> float:
    log.info("== %s", msg)
    return time.perf_counter()


def _done(t: float, name: str, timings: dict) -> None:
    timings[name] = round(time.perf_counter() - t, 1)
    log.info("   %.0f s", timings[name])


def _a2fbench(*args: str) -> subprocess.CompletedProcess:
    """Run the a2fbench command line in a subprocess (the leaderboard is not imported by unitalker)."""
    r = subprocess.run([sys.executable, "-m", "a2fbench.cli", *args], capture_output=True, text=True)
    if r.returncode:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise A2FBenchError(f"`a2fbench {' '.join(args[:2])}` failed: {msg[-1] if msg else r.returncode}")
    return r


def _prepared(data: Path, d: str) -> bool:

    try:
        a2fbench.open_dataset(data, d).close()
        return True
    except A2FBenchError:
        return False


def static_predictions(data: Path, dataset: str, out: Path, split: str = "test") -> Path:
    """Every frame = the subject's template (native units), the baseline any model must beat."""

    ds = a2fbench.open_dataset(data, dataset)
    with atomic_path(out, is_dir=True) as tmp:
        for sid in ds.split(split):
            s = ds[sid]
            t = np.asarray(ds.template(s.subject), np.float32)[None]
            write_prediction(tmp, sid, np.repeat(t, s.n_frames, 0))
    ds.close()
    return out


def quickstart(out: str | os.PathLike, size: str = "tiny", device: str = "auto", overrides: Optional[list[str]] = None,
               progress: bool = True, db: Optional[str | os.PathLike] = None) -> dict:
    """Run the main job in ``out`` (raw/, data/, run/, pred/, results/) and submit its scores to the leaderboard
    ``db`` (default: the user's, ``$A2FBENCH_HOME/leaderboard.sqlite``, so `a2fbench leaderboard show` and
    `serve` show them; the entries are marked as scored on synthetic stand-ins and are never ranked against
    scores on the real datasets, whose store fingerprints differ)."""
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    raw, data, run = out / "raw", out / "data", out / "run"
    db = Path(db) if db is not None else default_db()
    out.mkdir(parents=True, exist_ok=True)
    t = _step(f"1/6 synthesize and prepare {size} stand-ins of D0..D7 in {out}")
    for d in DATASETS:
        if _prepared(data, d):
            continue
        spec = get_spec(d)
        if not (raw / d).is_dir():
            synth_dataset(spec, raw, size=size, seed=0, progress=progress)
        prepare_dataset(spec, raw, data, progress=progress)
    _done(t, "data", timings)
    t = _step(f"2/6 PCA of D0..D2 ({PCA_COMPONENTS} components)")
    for d in PCA_DATASETS:
        if not (data / d / "pca.npz").is_file():
            fit_dataset(d, data, components=PCA_COMPONENTS, progress=False)
    _done(t, "pca", timings)
    t = _step("3/6 train the tiny UniTalker on D0..D7 (resumes if interrupted)")
    ov = [f"train.device={device}"] + list(overrides or [])
    if size == "small":
        ov = ["train.epochs=30"] + ov
    cfg = load_config("tiny", ov)
    train(data, DATASETS, run, cfg, progress=progress)
    _done(t, "train", timings)
    t = _step("4/6 predict the test splits (and the static-template baseline)")
    for d in DATASETS:
        p = out / "pred" / d
        if not p.is_dir():
            predict(run, data, d, p, split="test", device=device, progress=progress)
        s = out / "static" / d
        if not s.is_dir():
            static_predictions(data, d, s)
    _done(t, "predict", timings)
    t = _step("5/6 evaluate (protocol a2f)")
    summary: dict = {}
    for d in DATASETS:
        for name, folder in (("model", out / "pred" / d), ("static", out / "static" / d)):
            res_path = out / "results" / f"{d}.{name}.json"
            if not res_path.is_file():
                doc = evaluate(d, folder, data, split="test", protocol="a2f", n_bootstrap=1000, progress=False)
                write_json(res_path, doc)
            doc = json.loads(res_path.read_text())
            summary.setdefault(d, {})[name] = float(doc["metrics"]["LVE"]["value"])
    _done(t, "evaluate", timings)
    t = _step(f"6/6 leaderboard {db}")
    n_params = sum(p.numel() for p in load_model(run).model.parameters())
    for d in DATASETS:
        _a2fbench("leaderboard", "submit", str(out / "results" / f"{d}.model.json"), "--method", METHOD, "--db", str(db),
                  "--params", str(n_params), "--training-data", "synthetic D0..D7 train splits (quickstart)")
        _a2fbench("leaderboard", "submit", str(out / "results" / f"{d}.static.json"), "--method", STATIC, "--db", str(db))
    board = _a2fbench("leaderboard", "show", "--db", str(db)).stdout
    _done(t, "leaderboard", timings)
    print(board)
    lines = ["LVE on the test splits, model vs static template (lower is better):"]
    for d, v in summary.items():
        lines.append(f"  {d}: {v['model']:.4e} vs {v['static']:.4e}  ({v['model'] / v['static']:.2f}x)")
    print("\n".join(lines))
    write_json(out / "summary.json", {"lve": summary, "seconds": round(time.perf_counter() - t_all, 1),
                                      "step_seconds": timings})
    log.info("quickstart done in %.0f s: %s", time.perf_counter() - t_all, out)
    print(next_steps(out, db))
    return summary


def next_steps(out: Path, db: Path) -> str:
    """The commands that show the quickstart's results again (its last lines)."""
    on_default = db == default_db()
    dbo = "" if on_default else f" --db {db}"
    return "\n".join([
        "",
        f"Everything is in {out}. To see it again:",
        f"  a2fbench leaderboard show --dataset D1{dbo}     # the board: these scores beside the paper's rows",
        f"  a2fbench leaderboard serve{dbo}                 # the same as a web page, http://127.0.0.1:8000",
        f"  unitalker plot {out / 'run'}                  # training loss and validation LVE per epoch (PNG)",
        f"  a2fbench list --data {out / 'data'}           # the prepared stand-ins",
        f"  a2fbench evaluate {out / 'pred' / 'D1'} --dataset D1 --data {out / 'data'}   # score again",
    ])
