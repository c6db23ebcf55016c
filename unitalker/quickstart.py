"""``unitalker quickstart``: the main job on the embedded default, end to end.

synth D0..D7 -> prepare -> PCA (D0..D2) -> train the ``tiny`` UniTalker -> predict every test split ->
evaluate -> submit to the leaderboard (``a2fbench leaderboard`` in a subprocess: the hand-off is the results
JSON; the user's default board unless ``--db`` says otherwise; one process per method) and export its page ->
print what the run showed (model vs static template, one line per dataset), where the page is, and the next
commands. A static-template baseline (every frame = the subject's neutral face) is scored and submitted beside
it, so the board shows what the model learned. Every step is skipped when its output is already there, so an
interrupted quickstart resumes where it stopped.

Its folders carry the names README's commands use (``RAW``, ``DATA``, ``RUN``, ``PRED/<id>``), so that every
command README or the quickstart prints runs as printed in the quickstart folder (docs/unitalker.md).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
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
#: the quickstart's folders, named as README's commands name them (``cd`` there and they run as printed)
RAW, DATA, RUN, PRED = "RAW", "DATA", "RUN", "PRED"
PAGE = "leaderboard.html"


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
    """Run the main job in ``out`` (RAW/, DATA/, RUN/, PRED/<id>/, static/<id>/, results/, leaderboard.html) and submit its scores to the leaderboard
    ``db`` (default: the user's, ``$A2FBENCH_HOME/leaderboard.sqlite``, so `a2fbench leaderboard show` and
    `serve` show them; the entries are marked as scored on synthetic stand-ins and are never ranked against
    scores on the real datasets, whose store fingerprints differ)."""
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    raw, data, run = out / RAW, out / DATA, out / RUN
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
        p = out / PRED / d
        if not p.is_dir():
            predict(run, data, d, p, split="test", device=device, progress=progress)
        s = out / "static" / d
        if not s.is_dir():
            static_predictions(data, d, s)
    _done(t, "predict", timings)
    t = _step("5/6 evaluate (protocol a2f)")
    summary: dict = {}
    units: dict = {}
    for d in DATASETS:
        for name, folder in (("model", out / PRED / d), ("static", out / "static" / d)):
            res_path = out / "results" / f"{d}.{name}.json"
            if not res_path.is_file():
                doc = evaluate(d, folder, data, split="test", protocol="a2f", n_bootstrap=1000, progress=False)
                write_json(res_path, doc)
            doc = json.loads(res_path.read_text())
            summary.setdefault(d, {})[name] = float(doc["metrics"]["LVE"]["value"])
            units[d] = doc["metrics"]["LVE"].get("unit", "")
    _done(t, "evaluate", timings)
    t = _step(f"6/6 leaderboard {db}")
    n_params = sum(p.numel() for p in load_model(run).model.parameters())
    # one process per method, each submitting its eight files (a process per file cost ~1.5 s each: 16 of them
    # and a `show` that ranked the whole board were 28 s of the quickstart on a busy 2-core machine)
    _a2fbench("leaderboard", "submit", *(str(out / "results" / f"{d}.model.json") for d in DATASETS),
              "--method", METHOD, "--db", str(db), "--params", str(n_params),
              "--training-data", "synthetic D0..D7 train splits (quickstart)")
    _a2fbench("leaderboard", "submit", *(str(out / "results" / f"{d}.static.json") for d in DATASETS),
              "--method", STATIC, "--db", str(db))
    _a2fbench("leaderboard", "export", "--html", str(out / PAGE), "--db", str(db), "--force")  # its own page
    _done(t, "leaderboard", timings)
    write_json(out / "summary.json", {"lve": summary, "seconds": round(time.perf_counter() - t_all, 1),
                                      "step_seconds": timings})
    log.info("quickstart done in %.0f s: %s", time.perf_counter() - t_all, out)
    print(report(summary, units, out, db))
    return summary


def report(summary: dict, units: dict, out: Path, db: Path) -> str:
    """What the run showed, one line per dataset, then where the page is and the next commands (the quickstart's
    last lines; about 25 lines, not the whole board)."""
    lines = ["", "What the run showed: LVE on each test split, the tiny model vs a still face (the static template),",
             "on synthetic stand-ins (a test of the pipeline, not a result; the board keeps these scores apart):"]
    for d, v in summary.items():
        r = v["model"] / v["static"] if v["static"] else float("nan")
        verdict = "better than standing still" if r < 1 else "no better than standing still"
        lines.append(f"  {d} {get_spec(d).name[:34]:<34} {r:5.2f}x  ({v['model']:.3g} vs {v['static']:.3g} "
                     f"{units.get(d, '')}): {verdict}")
    return "\n".join(lines) + "\n" + next_steps(out, db)


def next_steps(out: Path, db: Path) -> str:
    """The commands that show the quickstart's results again; each runs as printed, in any folder."""
    q = shlex.quote
    dbo = "" if db == default_db() else f" --db {q(str(db))}"
    page = out / PAGE
    return "\n".join([
        "",
        f"The leaderboard page: {page} (open it in a browser; `a2fbench leaderboard serve{dbo}` serves it live).",
        f"Everything is in {out}. Next:",
        f"  a2fbench leaderboard show --dataset D1{dbo}      # the board: stand-in scores apart from the papers'",
        f"  unitalker plot {q(str(out / RUN))}                 # training curves: {out / RUN / 'training.png'}",
        f"  a2fbench list --data {q(str(out / DATA))}            # the prepared stand-ins",
        f"  cd {q(str(out))}    # there, README's everyday commands (RAW, DATA, RUN, PRED) run as printed",
    ])
