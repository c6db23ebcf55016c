"""Registry and data commands: list, info, download, synth, prepare, doctor, export-hf."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from ..errors import A2FBenchError
from ..registry import all_specs, get_space, resolve
from ..util import paths
from ..util.constants import SAMPLE_RATE
from ..util.fsutil import atomic_path
from ..util.guard import FORCE_HELP, check_output, real, show
from . import DATA_OPT, SEED

# prepare, sources.download, sources.synth and store are imported inside the commands that use them, not here:
# they load scipy, h5py and the raw readers. Measured (median of 5): this module imports in 0.006 s instead of
# 0.41 s, `a2fbench list` starts in 0.51 s instead of 1.11 s, `a2fbench --help` (every command module) 0.23 s.

RAW_OPT = click.option("--raw", type=click.Path(file_okay=False, path_type=Path), default=None,
                       help="Raw downloads root (RAW/<id>/). Default: $A2FBENCH_HOME/raw.")


@click.command("list")
@DATA_OPT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(data: Path | None, as_json: bool) -> None:
    """The dataset registry: id, name, space, fps, hours, licence, prepared?

    \b
    Example:
      a2fbench list --data ~/.a2fbench/data
    """
    from ..store import list_prepared

    data = data or paths.default_data()
    prepared = list_prepared(data) if Path(data).exists() else {}
    rows = [{"id": s.id, "aliases": list(s.aliases), "name": s.name, "space": s.space,
             "fps": f"{s.fps_native:g}->{s.fps:g}", "hours": s.hours, "licence": s.licence.split(";")[0][:48],
             "prepared": bool(prepared.get(s.id))} for s in all_specs()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'id':<4} {'name':<44} {'space':<20} {'fps':<7} {'hours':>5}  {'prepared':<8} licence")
    for r in rows:
        click.echo(f"{r['id']:<4} {r['name'][:44]:<44} {r['space']:<20} {r['fps']:<7} {r['hours']:>5.2f}  "
                   f"{'yes' if r['prepared'] else 'no':<8} {r['licence']}")
    click.echo(f"(prepared = a current store under {data})")


@click.command("info")
@click.argument("dataset")
@DATA_OPT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_cmd(dataset: str, data: Path | None, as_json: bool) -> None:
    """Dataset card: sources, licence, manual steps, expected files + sha256, splits, stats.

    \b
    Example:
      a2fbench info vocaset
      a2fbench info D0 --data ~/.a2fbench/data
    """
    from ..store import open_dataset

    specs = resolve(dataset)
    data = data or paths.default_data()
    for spec in specs:
        card = None
        try:
            ds = open_dataset(data, spec.id)
            card = ds.card
            ds.close()
        except A2FBenchError:
            pass
        if as_json:
            click.echo(json.dumps({"manifest": spec.model_dump(mode="json"), "card": card}, indent=1))
            continue
        sp = get_space(spec.space)
        click.echo(f"{spec.id}  {spec.name}  (aliases: {', '.join(spec.aliases)}; manifest v{spec.version})")
        click.echo(f"  space      {spec.space} ({sp.kind}, D={sp.dim}); units {spec.units}; fps {spec.fps_native:g} -> "
                   f"{spec.fps:g}; audio -> {SAMPLE_RATE} Hz")
        click.echo(f"  licence    {spec.licence}")
        click.echo(f"  homepage   {spec.homepage}")
        click.echo(f"  citation   {spec.citation}")
        click.echo(f"  layouts    {', '.join(spec.layouts)}")
        click.echo(f"  splits     {spec.splits.rule}: {spec.splits.source}")
        for name, s in spec.splits.sets.items():
            subs = "all subjects" if s.subjects == "all" else ", ".join(s.subjects)
            sent = f", sentences {s.sentences[0]}-{s.sentences[1]}" if s.sentences else ""
            click.echo(f"    {name:<7} {subs}{sent}")
        click.echo(f"  regions    default {spec.regions.default!r}; sets {', '.join(spec.regions.sets)}")
        click.echo("  sources (files go under RAW/%s/)" % spec.id)
        for src in spec.sources:
            click.echo(f"    - {src.name} [{src.kind}] licence: {src.licence}")
            if src.instructions:
                click.echo(f"      steps: {src.instructions}")
            if src.archive:
                click.echo(f"      archive: {src.archive.file} in RAW/{spec.id}/ or RAW/ is unpacked by `a2fbench download "
                           f"{spec.id}`{f' (only {src.archive.subdir}/)' if src.archive.subdir else ''}")
            for f in src.files:
                extra = f" sha256 {f.sha256}" if f.sha256 else ""
                extra += f" ({f.size} bytes)" if f.size else ""
                extra += f" count {f.count}" if f.count else ""
                extra += "" if f.required else " [optional]"
                click.echo(f"      {f.path}{extra}")
                if f.url:
                    click.echo(f"        <- {f.url}")
        if card:
            st = card["stats"]
            click.echo(f"  prepared   {st['n_sequences']} sequences, {st['n_frames']} frames, {st['hours']} h, "
                       f"{st['n_subjects']} subjects; fingerprint {card['fingerprint']}"
                       f"{'; SYNTHETIC stand-in' if card.get('synthetic') else ''}")
            for k, v in st["splits"].items():
                click.echo(f"    {k:<7} {v['n_sequences']} seq, {v['n_frames']} frames, {v['n_subjects']} subjects")
        else:
            click.echo(f"  prepared   no (under {data})")


@click.command("download")
@click.argument("datasets")
@RAW_OPT
@click.option("--no-verify", is_flag=True, help="Skip sha256 checks (not recommended).")
@click.option("--retries", type=click.IntRange(0, 100), default=3, show_default=True, help="Resumed retries of a dropped connection.")
def download_cmd(datasets: str, raw: Path | None, no_verify: bool, retries: int) -> None:
    """Fetch URL sources (resumable, sha256-checked); print the manual steps for the rest.

    Files the user placed for licence-gated sources are checked (counts, structure, sha256 where
    published; observed hashes go to RAW/<id>/.a2fbench-files.json). Missing manual files are listed
    under TO DO and are not an error. Set A2FBENCH_MIRROR="PREFIX=REPLACEMENT" to fetch from a mirror.

    \b
    Example:
      a2fbench download D0..D2 --raw ~/.a2fbench/raw
    """
    from ..sources.download import download_dataset

    raw = raw or paths.default_raw()
    failed = 0
    for spec in resolve(datasets):
        try:
            download_dataset(spec, raw, verify=not no_verify, echo=click.echo, retries=retries)
        except A2FBenchError as e:
            click.echo(f"error: {e}", err=True)
            failed += 1
    if failed:
        sys.exit(1)


@click.command("synth")
@click.argument("datasets")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="RAW root to write.")
@click.option("--size", type=click.Choice(["tiny", "small", "full"]), default="tiny", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--layout", default=None, help="Write another accepted layout (e.g. vertices_npy for D1; raw: the "
              "corpus as its authors ship it, e.g. D0's rigid_scans/faces/videos).")
@click.option("--splits", default=None, help="Only these splits, comma-separated (e.g. train).")
@click.option("--dry-run", is_flag=True, help="Print what would be written (sequences, hours, GB); write nothing.")
@click.option("--force", is_flag=True, help=FORCE_HELP + " An earlier stand-in is replaced without it; other files "
              "in OUT/<id>/ (a real download) only with it.")
def synth_cmd(datasets: str, out: Path, size: str, seed: int, layout: str | None, splits: str | None,
              dry_run: bool, force: bool) -> None:
    """Stand-in raw data in each dataset's native layout (audio-driven motion; see docs/datasets.md).

    \b
    Example:
      a2fbench synth D0..D7 --out raw --size tiny
      a2fbench synth vocaset --out raw --size small --layout vertices_npy
      a2fbench synth D0 --out raw --layout raw
      a2fbench synth D0..D7 --out raw --size full --dry-run
    """
    from ..sources.synth import plan_stats, synth_dataset

    if dry_run:
        for spec in resolve(datasets):
            st = plan_stats(spec, size, seed)  # type: ignore[arg-type]
            per = ", ".join(f"{k} {v['sequences']}" for k, v in st["splits"].items() if k != "None")
            rest = st["splits"].get("None", {}).get("sequences")
            click.echo(f"{spec.id}: {st['sequences']} sequences ({per}{f', in no split {rest}' if rest else ''}), "
                       f"{st['subjects']} subjects, {st['hours']} h, {st['bytes'] / 1e9:.2f} GB")
        return
    from ..sources.raw import SYNTH_MARKER

    for spec in resolve(datasets):  # before any is written: OUT/<id>/ is replaced whole
        target = out / spec.id
        if not force and target.exists() and not (target / SYNTH_MARKER).is_file():
            raise A2FBenchError(f"--out {show(out)}: expected {spec.id}/ to be new or an earlier stand-in, found "
                                f"{show(target)} holding other files (a real download?); pass --force to replace it, "
                                "or pick another --out")
    for spec in resolve(datasets):
        p = synth_dataset(spec, out, size=size, seed=seed, layout=layout,  # type: ignore[arg-type]
                          splits=splits.split(",") if splits else None)
        click.echo(f"{spec.id}: synthetic {size} stand-in written to {p}")


@click.command("prepare")
@click.argument("datasets")
@RAW_OPT
@click.option("--out", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Prepared store root. Default: $A2FBENCH_HOME/data.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Datasets prepared in parallel.")
@click.option("--force", is_flag=True, help=FORCE_HELP + " An earlier store is replaced without it; a DATA/<id>/ "
              "that holds no store only with it.")
def prepare_cmd(datasets: str, raw: Path | None, data: Path | None, workers: int, force: bool) -> None:
    """Raw native files -> verified store DATA/<id>/store.h5 (resumable; atomic per dataset).

    \b
    Example:
      a2fbench prepare D0..D7 --raw raw --out data --workers 2
    """
    from ..prepare import prepare_many

    raw = raw or paths.default_raw()
    data = data or paths.default_data()
    if real(data) == real(raw):  # DATA/<id>/ would replace RAW/<id>/, the download (beside or inside: no clash)
        raise A2FBenchError(f"--out {show(data)}: expected a folder apart from --raw, found the same folder; "
                            "prepared stores never replace the raw files; pass another --out")
    from ..store.dataset import CARD_FILE

    for spec in resolve(datasets):  # DATA/<id>/ is replaced whole: only a store of ours without --force
        target = Path(data) / spec.id
        if not force and target.exists() and not (target / CARD_FILE).is_file():
            raise A2FBenchError(f"--out {show(data)}: expected {spec.id}/ to be new or an earlier prepared store, "
                                f"found {show(target)} holding other files; pass --force to replace it, or pick "
                                "another --out")
    res = prepare_many(resolve(datasets), raw, data, workers=workers)
    failed = 0
    for sid, (card, err) in res.items():
        if err:
            click.echo(f"error: {err}", err=True)
            failed += 1
        else:
            st = card["stats"]  # type: ignore[index]
            splits = ", ".join(f"{k} {v['n_sequences']}" for k, v in st["splits"].items())
            click.echo(f"{sid}: {st['n_sequences']} sequences ({splits}), {st['hours']} h at {card['fps']:g} fps "
                       f"-> {Path(data) / sid}")
    if failed:
        sys.exit(1)


@click.command("doctor")
@click.argument("datasets", nargs=-1, required=True)
@click.option("--raw", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Raw downloads root to check (RAW/<id>/).")
@DATA_OPT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--strict", is_flag=True, help="Warnings (lengths apart by more than a frame, absent sequences) fail too.")
def doctor_cmd(datasets: tuple[str, ...], raw: Path | None, data: Path | None, as_json: bool, strict: bool) -> None:
    """Is a downloaded corpus whole? Checks RAW/<id>/ (and a prepared DATA/<id>/) against the manifest.

    Missing and half sequences (known-missing ones listed as such, with their source), frame gaps, unreadable
    or truncated archives and files, audio and motion lengths more than a frame apart, NaN, wrong dtypes,
    pinned checksums. Exit 1 when there is an error (or, with --strict, a warning); 0 when clean. Without
    --raw and --data: the default raw root, and the default store when one is prepared.

    \b
    Example:
      a2fbench doctor D0 --raw ~/.a2fbench/raw
      a2fbench doctor D0..D7 --data data --json
    """
    from ..prepare.doctor import doctor, format_report, to_json

    if raw is None and data is None:
        raw, data = paths.default_raw(), paths.default_data()
        data = data if Path(data).is_dir() else None
    reports = [doctor(spec, raw, data, progress=not as_json) for name in datasets for spec in resolve(name)]
    if as_json:
        click.echo(to_json(reports))
    else:
        for r in reports:
            click.echo(format_report(r))
    bad = [r["dataset"] for r in reports if not r["ok"] or (strict and r["counts"]["warning"])]
    if not as_json:
        click.echo(f"doctor: {'problems in ' + ', '.join(bad) if bad else 'clean'}"
                   f"{'' if bad else ' (warnings and notes above are for information)' if any(r['findings'] for r in reports) else ''}")
    if bad:
        sys.exit(1)


@click.command("export-hf")
@click.argument("dataset")
@DATA_OPT
@click.option("--split", default=None, help="One split (default: all sequences).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def export_hf_cmd(dataset: str, data: Path | None, split: str | None, out: Path, force: bool) -> None:
    """Export a prepared dataset to a Hugging Face `datasets` folder (load_from_disk).

    \b
    Example:
      a2fbench export-hf D1 --split test --out vocaset_test_hf
    """
    from ..store import open_dataset

    ds = open_dataset(data or paths.default_data(), resolve(dataset)[0].id)
    check_output(out, [ds.path], force=force)  # replaced whole: never the store, an existing folder only with --force
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.cache-") as cache, \
            atomic_path(out, is_dir=True) as tmp:
        hf = ds.to_hf(split, cache_dir=cache)  # Arrow cache beside the output, removed afterwards
        hf.save_to_disk(str(tmp))
        n = len(hf)
        del hf
    click.echo(f"{n} sequences -> {out} (load with datasets.load_from_disk)")
