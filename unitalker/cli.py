"""The ``unitalker`` command line: train, finetune, predict, infer, stream, import-official, export-official, bench,
plot, quickstart.

User errors print one line (``error: ...``) and exit 1; bad usage exits 2 (a2fbench's ``run_cli`` policy).
Under ``torchrun`` the same commands train with DDP (``torchrun --standalone --nproc_per_node 2 -m unitalker.cli
train ...``).

Each command imports its module when it runs: torch and transformers take 2-4 s to import (measured with
``python -X importtime``), and ``unitalker --help`` or a usage error should not wait for them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import click

from a2fbench.util import paths
from a2fbench.util.guard import FORCE_HELP, check_apart, check_output, make_parent, show

log = logging.getLogger("unitalker")
CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
#: options several commands share, spelled once
DATA_OPT = click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Prepared store root. Default: $A2FBENCH_HOME/data.")
CHECKPOINT_OPT = click.option("--checkpoint", required=True,
                              help="Checkpoint file, or run folder (its latest checkpoint).")
#: infer's and stream's (the same arguments, checked by infer.checks.plan_infer)
IDENTITY_OPT = click.option("--identity", default="pivot", show_default=True,
                            help="pivot, a training subject (D1/FaceTalk_...), or an identity row number.")
TEMPLATE_OPT = click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="Your own neutral mesh (.npy (V,3) or (3V,), .obj, .ply; native units) for one "
                                 "vertex head.")


def _ids(datasets: str) -> list[str]:
    from a2fbench import resolve

    return [s.id for s in resolve(datasets)]


@click.group(context_settings=CTX)
@click.version_option(package_name="a2fbench")
def cli() -> None:
    """UniTalker baseline: multi-head training, fine-tuning, prediction, inference and timing.

    \b
    Start here (about 5 minutes on 2 CPU cores, end to end):
      unitalker quickstart --out qs
    """


@cli.command("train", context_settings=CTX)
@DATA_OPT
@click.option("--datasets", required=True, help="Training datasets: D0..D7, D0,D3, vocaset, ...")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Run folder (config, logs, checkpoints). An earlier run there is resumed.")
@click.option("--config", "config", default=None, help="A shipped config (tiny, unitalker-b, unitalker-l) or a YAML file.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.argument("overrides", nargs=-1)
def train_cmd(data: Optional[Path], datasets: str, out: Path, config: Optional[str], no_progress: bool,
              overrides: tuple[str, ...]) -> None:
    """Train UniTalker on several datasets at once (one head per output space).

    OVERRIDES are key=value config changes, e.g. train.epochs=5 train.batch_size=8.
    Running the same command again resumes a killed run from its latest checkpoint.

    \b
    Example:
      a2fbench synth D0..D7 --out raw --size tiny && a2fbench prepare D0..D7 --raw raw --out data
      a2fbench pca D0..D2 --data data --components 16
      unitalker train --data data --datasets D0..D7 --out run --config tiny
      torchrun --standalone --nproc_per_node 2 -m unitalker.cli train --data data --datasets D0..D7 --out run --config tiny
    """
    from .model.config import load_config
    from .train.loop import train

    check_apart(out, [data or paths.default_data()])  # a run folder is never the store root or inside it
    cfg = load_config(config or None, overrides)
    ckpt = train(data or paths.default_data(), _ids(datasets), out, cfg, progress=not no_progress)
    click.echo(f"trained: {ckpt}")


@cli.command("finetune", context_settings=CTX)
@click.option("--from", "init_from", required=True, help="Checkpoint file or run folder to start from.")
@DATA_OPT
@click.option("--datasets", required=True, help="Datasets to fine-tune on (seen, or new annotations: new heads).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder of the fine-tuning run.")
@click.option("--reinit-decoder", is_flag=True, help="Keep only the audio encoder; decoder, identities, heads start fresh.")
@click.option("--fraction", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Train on this fraction of each dataset's training clips (0.5, 0.25, ...; 0.001: one clip).")
@click.option("--trainable", default=None,
              help="Parts that train: all (default) or some of encoder,decoder,identity,heads (e.g. heads,identity).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.argument("overrides", nargs=-1)
def finetune_cmd(init_from: str, data: Optional[Path], datasets: str, out: Path, reinit_decoder: bool,
                 fraction: Optional[float], trainable: Optional[str], no_progress: bool,
                 overrides: tuple[str, ...]) -> None:
    """Fine-tune a checkpoint on a seen dataset or transfer it to a new annotation (a new head).

    The checkpoint's config is reused; OVERRIDES (key=value) may change training keys, not the architecture.
    Heads of spaces the checkpoint lacks start at zero; if the identity count differs, every identity row
    starts as the checkpoint's pivot row (UniTalker's rule).

    \b
    Example:
      unitalker finetune --from run --data data --datasets D1 --out ft --fraction 0.5 train.epochs=5
      unitalker finetune --from imported --data data --datasets D1 --out ft1 --fraction 0.001 --trainable heads,identity
    """
    from .train.finetune import finetune_config
    from .train.loop import train

    check_apart(out, [data or paths.default_data(), init_from])  # never over the run it starts from, nor the data
    ov = list(overrides) + ([f"data.fraction={fraction}"] if fraction is not None else [])
    ov += [f"train.trainable={trainable}"] if trainable is not None else []
    cfg = finetune_config(init_from, ov)
    ckpt = train(data or paths.default_data(), _ids(datasets), out, cfg, init_from=init_from,
                 reinit_decoder=reinit_decoder, progress=not no_progress)
    click.echo(f"fine-tuned: {ckpt}")


@cli.command("predict", context_settings=CTX)
@CHECKPOINT_OPT
@DATA_OPT
@click.option("--dataset", required=True, help="Dataset to predict (its space must be a head of the checkpoint).")
@click.option("--split", default="test", show_default=True, help="Split to predict.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Predictions folder (PRED/<seq_id>.npy).")
@click.option("--identity", type=click.Choice(["gt", "pivot"]), default="gt", show_default=True,
              help="gt: each clip's own subject's row (an imported release: its id_template row, found by template; "
                   "a trained run: the pivot for subjects unseen in training); pivot: the pivot for all.")
@click.option("--protocol", type=click.Choice(["a2f", "unitalker"]), default="a2f", show_default=True,
              help="a2f: whole clips, scored under every protocol. unitalker: paper mode, as the official test loop "
                   "(each clip cut to min(recording, motion, 20 s), no silence padded, fp32, the release's template "
                   "row, clips under 0.5 s skipped).")
@click.option("--paper", is_flag=True, help="Same as --protocol unitalker.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--chunk-ms", type=float, default=None,
              help="Streaming mode: feed each clip in chunks of this many ms (see `unitalker stream`); recorded.")
@click.option("--lookahead-ms", type=float, default=0.0, show_default=True, help="Streaming mode: look-ahead.")
@click.option("--context-ms", type=float, default=None, help="Streaming mode: left context. Default: 2000.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def predict_cmd(checkpoint: str, data: Optional[Path], dataset: str, split: str, out: Path, identity: str,
                protocol: str, paper: bool, device: str, chunk_ms: Optional[float], lookahead_ms: float,
                context_ms: Optional[float], no_progress: bool, force: bool) -> None:
    """Write a2fbench predictions (native units, one .npy per clip) for a split, and the predictions record
    (.a2fbench-predictions.json: per sequence the identity row, template, cut and frames; precision).

    \b
    Example:
      unitalker predict --checkpoint run --data data --dataset D1 --split test --out pred
      a2fbench evaluate pred --dataset D1 --data data
      unitalker predict --checkpoint run --data data --dataset D1 --out pred200 --chunk-ms 200   # streaming
      unitalker predict --checkpoint run --data data --dataset D1 --out paper --protocol unitalker
      a2fbench evaluate paper --dataset D1 --data data --protocol unitalker
    """
    from .infer.predict import predict

    stream = _stream_settings(chunk_ms, lookahead_ms, context_ms, True) if chunk_ms is not None else None
    if stream is None and (lookahead_ms or context_ms is not None):
        raise click.UsageError("--lookahead-ms/--context-ms: expected --chunk-ms with them (streaming mode)")

    ids = _ids(dataset)  # an unknown name fails here, with did-you-mean, before the model is loaded
    if len(ids) != 1:
        raise click.UsageError(f"--dataset: expected one dataset, found {len(ids)} ({', '.join(ids)})")
    dataset = ids[0]
    protocol = "unitalker" if paper else protocol
    if stream is not None:
        if protocol != "a2f":
            raise click.UsageError("--chunk-ms: expected the default --protocol a2f (paper mode runs whole clips, "
                                   "as the official test loop)")
        from .infer.stream import predict_streaming

        p = predict_streaming(checkpoint, data or paths.default_data(), dataset, out, stream, split=split,
                              identity=identity, device=device, progress=not no_progress, force=force)
    else:
        p = predict(checkpoint, data or paths.default_data(), dataset, out, split=split, identity=identity,
                    device=device, progress=not no_progress, force=force, protocol=protocol)
    click.echo(f"predictions: {show(p)}")


@cli.command("reproduce", context_settings=CTX)
@click.option("--checkpoint", required=True, help="Checkpoint file or run folder (e.g. an imported release).")
@DATA_OPT
@click.option("--datasets", default=None, help="Datasets (D0..D7, D0,D1). Default: every prepared one with a head.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reproduce"), show_default=True,
              help="New folder: <id>/predictions, <id>/results.json, report.md, report.json.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def reproduce_cmd(checkpoint: str, data: Optional[Path], datasets: Optional[str], out: Path, device: str,
                  no_progress: bool) -> None:
    """Paper mode on every prepared dataset, scored with --protocol unitalker, beside the paper's LVE (Table 6):
    ratio, verdict and every reason the number can differ.

    \b
    Example:
      unitalker import-official UniTalker-B-D0-D7.pt --release unitalker_data_release_V1 --out ut-b
      unitalker reproduce --checkpoint ut-b --data data --datasets D0,D1 --out repro
    """
    from .infer.reproduce import format_rows, reproduce

    rows = reproduce(checkpoint, data or paths.default_data(), out, _ids(datasets) if datasets else None,
                     device=device, progress=not no_progress)
    click.echo(format_rows(rows))
    click.echo(f"report: {out / 'report.md'}", err=True)


@cli.command("infer", context_settings=CTX)
@CHECKPOINT_OPT
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder: OUT/<audio name>/<dataset>.npy, with the clip's audio, each head's template and "
                   "infer.json (render and export read them; docs/outputs.md).")
@click.option("--heads", default="all", show_default=True, help="all, or dataset ids / spaces (D1,D3).")
@IDENTITY_OPT
@TEMPLATE_OPT
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def infer_cmd(checkpoint: str, audio: tuple[Path, ...], out: Path, heads: str, identity: str,
              template: Optional[Path], device: str, force: bool) -> None:
    """Animate audio files (wav, flac, mp3, ogg; any rate, mono or stereo; any length) under each head.

    Clips longer than 25 s run in 25 s windows cross-faded over 5 s (the reference demo). Each output is
    (T, D) in the dataset's native units (vertices or parameters), T = round(seconds x fps): the template plus
    the predicted offsets (--template: your mesh; else the identity's template or the dataset's mean).

    \b
    Example:
      unitalker infer --checkpoint run speech.wav song.mp3 --out anim --heads D1,D3
      unitalker infer --checkpoint run speech.wav --out anim --heads D1 --template my_flame_head.obj
    """
    from .infer.checks import plan_infer  # no torch: a mistake is refused in about a second, before the model loads

    plan = plan_infer(checkpoint, list(audio), out, heads=heads, identity=identity, template=template, force=force)
    from .infer.predict import infer

    for p in infer(checkpoint, list(audio), out, heads=heads, identity=identity, device=device, template=template,
                   force=force, plan=plan):
        click.echo(show(p))


def _stream_settings(chunk_ms: float, lookahead_ms: float, context_ms: Optional[float], cache: bool):
    from .infer.stream import DEFAULT_CONTEXT_MS, StreamSettings

    return StreamSettings(chunk_ms, lookahead_ms, DEFAULT_CONTEXT_MS if context_ms is None else context_ms, cache)


@cli.command("stream", context_settings=CTX)
@CHECKPOINT_OPT
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder: OUT/<audio name>/<dataset>.npy and OUT/<audio name>/stream.json.")
@click.option("--heads", default="all", show_default=True, help="all, or dataset ids / spaces (D1,D3).")
@click.option("--chunk-ms", type=float, default=200.0, show_default=True,
              help="Audio per chunk: the model runs each time this much new audio has arrived.")
@click.option("--lookahead-ms", type=float, default=0.0, show_default=True,
              help="A frame waits for this much audio after it (at most --context-ms).")
@click.option("--context-ms", type=float, default=None,
              help="Left context: audio before the first frame still owed that the model sees. Default: 2000.")
@click.option("--no-cache", is_flag=True, help="Recompute the CNN features of the whole window every chunk.")
@IDENTITY_OPT
@TEMPLATE_OPT
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def stream_cmd(checkpoint: str, audio: tuple[Path, ...], out: Path, heads: str, chunk_ms: float, lookahead_ms: float,
               context_ms: Optional[float], no_cache: bool, identity: str, template: Optional[Path], device: str,
               force: bool) -> None:
    """Animate audio as it arrives: fed in chunks, as a microphone would; each frame leaves as soon as its audio
    plus the look-ahead has arrived (algorithmic latency = chunk + look-ahead).

    Writes the frames `unitalker infer` writes (equal to them when one chunk holds the clip) and stream.json:
    settings, rtf (compute / audio time), compute_ms p50/p95/max, and per chunk the frames emitted and compute ms.

    \b
    Example:
      unitalker stream --checkpoint run speech.wav --heads D1 --chunk-ms 200 --lookahead-ms 0 --out live
    """
    from .infer.stream import stream_files

    settings = _stream_settings(chunk_ms, lookahead_ms, context_ms, not no_cache)
    for p in stream_files(checkpoint, list(audio), out, heads=heads, identity=identity, settings=settings,
                          device=device, template=template, force=force):
        click.echo(show(p))


@cli.command("import-official", context_settings=CTX)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--release", required=True, type=click.Path(path_type=Path),
              help="The unitalker_data_release_V1 folder (pca.npz, id_template.npy, split JSONs).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New run folder.")
@click.option("--datasets", default=None,
              help="Datasets the checkpoint was trained on (default: every dataset it has a head for).")
def import_official_cmd(checkpoint: Path, release: Path, out: Path, datasets: Optional[str]) -> None:
    """Turn a released UniTalker-B/-L checkpoint (.pt) into a run folder that predict, infer, finetune and bench take.

    The architecture (WavLM-base-plus or wav2vec2-large-xlsr-53 encoder, decoder, heads) is read from the tensor
    shapes; the release's PCA bases are used as shipped; the 935 identities keep the official order (pivot
    last), named D5/<subject> where the release names them and D3/#17 otherwise. Only tensors are unpickled.

    \b
    Example:
      unitalker import-official UniTalker-B-D0-D7.pt --release unitalker_data_release_V1 --out unitalker-b
    """
    from .release.convert import import_official

    click.echo(f"imported: {import_official(checkpoint, release, out, _ids(datasets) if datasets else None)}")


@cli.command("export-official", context_settings=CTX)
@click.argument("run")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .pt to write.")
@click.option("--weight-norm", type=click.Choice(["auto", "parametrizations", "weight_g"]), default="auto",
              show_default=True, help="Spelling of the positional conv's weight norm (auto: as imported, else "
              "current torch's); older torch/transformers need weight_g.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def export_official_cmd(run: str, out: Path, weight_norm: str, force: bool) -> None:
    """Write a checkpoint (run folder or file) as an official UniTalker state dict (.pt) for the official code.

    \b
    Example:
      unitalker export-official ft --out UniTalker-B-finetuned.pt
    """
    from .release.convert import export_official

    check_output(out, [run], force=force)  # never over the run's own files; an existing .pt needs --force
    click.echo(f"exported: {show(export_official(run, out, None if weight_norm == 'auto' else weight_norm))}")


@cli.command("bench", context_settings=CTX)
@click.option("--checkpoint", default=None, help="Checkpoint file or run folder to time.")
@click.option("--config", "config", default=None,
              help="Or a config (tiny, unitalker-b, unitalker-l, a YAML file): random weights of that architecture.")
@click.option("--seconds", type=click.FloatRange(0.5), default=10.0, show_default=True, help="Audio length.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True, help="Batch size of the throughput rows.")
@click.option("--runs", type=click.IntRange(20), default=20, show_default=True, help="Timed runs per row (median).")
@click.option("--compile", "use_compile", is_flag=True, help="Also torch.compile the fast mode.")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures as JSON.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def bench_cmd(checkpoint: Optional[str], config: Optional[str], seconds: float, device: str, batch: int, runs: int,
              use_compile: bool, as_json: Optional[Path], force: bool) -> None:
    """Time inference: our fast mode beside a reference mode (fp32, eager attention, no compile), same process.

    Model forward only (audio already in memory), warm-up first, median of RUNS runs timed with CUDA events
    (GPU) or perf_counter (CPU); the device and parameter counts are printed.

    \b
    Example:
      unitalker bench --config unitalker-b --seconds 10 --device cuda
    """
    from .infer.bench import bench, format_report

    if as_json:  # checked before the timing, not after it
        check_output(as_json, [checkpoint, config], force=force, option="--json")
    rep = bench(checkpoint, config, seconds=seconds, device=device, batch=batch, runs=runs, use_compile=use_compile)
    click.echo(format_report(rep))
    if as_json:
        from a2fbench.util.fsutil import write_json

        write_json(as_json, rep)


@cli.command("plot", context_settings=CTX)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write. Default: RUN/training.png (replaced on every plot).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
def plot_cmd(run: Path, out: Optional[Path], force: bool) -> None:
    """Training curves of a run as a PNG: loss per step and epoch, validation LVE against the static template.

    \b
    Example:
      unitalker plot runs/tiny --out tiny.png
    """
    from .train.plot import plot_run

    if out is not None:  # the default is the run's own plot; a path the user names is new or needs --force
        make_parent(check_output(out, [run / "log.csv", run / "val.csv"], force=force))
    click.echo(f"wrote {plot_run(run, out)}")


@cli.command("quickstart", context_settings=CTX)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Working folder. Default: $A2FBENCH_HOME/quickstart.")
@click.option("--size", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True,
              help="Stand-in size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Leaderboard to submit to. Default: $A2FBENCH_HOME/leaderboard.sqlite (the one "
                   "`a2fbench leaderboard show` reads).")
@click.option("--no-progress", is_flag=True, help="No progress bars (bars show on a terminal only anyway).")
@click.argument("overrides", nargs=-1)
def quickstart_cmd(out: Optional[Path], size: str, device: str, db_path: Optional[Path], no_progress: bool,
                   overrides: tuple[str, ...]) -> None:
    """The main job, end to end: synthesize D0..D7, prepare, PCA, train a small UniTalker, predict the test
    splits, evaluate, submit to the leaderboard (its synthetic track) and export its page; it ends with what the run
    showed, one line per dataset, and the next commands. Time on 2 CPU cores: 139 s idle, 20 min at load 10-12
    (training is 85-90% of it and uses the cores others leave free; each epoch's log line gives an ETA).

    \b
    Example:
      unitalker quickstart --out qs
    """
    from .quickstart import quickstart

    quickstart(out or (paths.home() / "quickstart"), size=size, device=device, overrides=list(overrides),
               progress=not no_progress, db=db_path)


def main() -> None:
    from a2fbench.cli import run_cli

    run_cli(cli, "unitalker")


if __name__ == "__main__":
    main()
