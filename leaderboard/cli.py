"""``a2fbench leaderboard ...``: submit, show, edit, remove, serve, export, add-reported.

Plugged into ``a2fbench`` through the ``a2fbench.commands`` entry point (pyproject.toml). Each command imports
what it needs when it runs (numpy, scipy and the a2fbench stages take about a second), so that
``a2fbench --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from a2fbench.util.guard import FORCE_HELP, check_output

DB_OPT = click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="Leaderboard database. Default: $A2FBENCH_HOME/leaderboard.sqlite.")


def _db(path: Optional[Path]) -> Path:
    from a2fbench.util.paths import default_db

    return Path(path) if path is not None else default_db()


def _open_for_reading(path: Path):
    """An existing database, or (with a note) an in-memory one holding only the shipped reported rows."""
    from . import db

    if not path.exists():
        click.echo(f"note: no leaderboard at {path} yet; showing the reported rows only (add entries with "
                   "`a2fbench leaderboard submit results.json --method NAME`)", err=True)
        return db.connect(":memory:")
    return db.connect(path)


@click.group("leaderboard", context_settings={"help_option_names": ["-h", "--help"]})
def leaderboard_group() -> None:
    """The local leaderboard: evaluated results beside numbers reported in papers.

    \b
    Examples:
      a2fbench evaluate PRED --dataset D1 --data DATA --out results.json
      a2fbench leaderboard submit results.json --method MyTalker --params 96M --inference-time 17.5ms
      a2fbench leaderboard show --dataset D1
      a2fbench leaderboard serve            # http://127.0.0.1:8000/
      a2fbench leaderboard export --html leaderboard.html
    """


def _meta_options(f):  # noqa: ANN001, ANN202 - the metadata options shared by submit and edit
    for opt in reversed([
        click.option("--version", "version", default=None, help="Method version or checkpoint name."),
        click.option("--params", default=None, help="Number of parameters: 96050000, 96.05M, 1.2B."),
        click.option("--inference-time", "inference_time", default=None,
                     help="Wall time to animate a 10 s clip: seconds (0.0175) or with a unit (17.5ms, 2.7s)."),
        click.option("--inference-device", default=None, help="Where that time was measured, e.g. 'H100, bf16, batch 1'."),
        click.option("--training-data", default=None, help="What the method was trained on, e.g. 'D0..D7 train splits'."),
        click.option("--code-url", default=None, help="http(s) link to the code."),
        click.option("--trained-on-test-ids/--not-trained-on-test-ids", "trained_on_test_ids", default=None,
                     help="Whether training saw the test identities (unknown if neither is given)."),
    ]):
        f = opt(f)
    return f


@leaderboard_group.command("submit")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", default=None,
              help="Method name as it should appear on the board (default: the method the results file records, "
                   "from `evaluate --method` or `unitalker predict`).")
@_meta_options
@click.option("--verify", "verify_pred", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Predictions folder: re-run the evaluation on the local store and mark the entry verified "
                   "only if the numbers agree.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Prepared store root for --verify. Default: $A2FBENCH_HOME/data.")
@DB_OPT
def submit_cmd(results: Path, method: Optional[str], version: Optional[str], params: Optional[str],
               inference_time: Optional[str], inference_device: Optional[str], training_data: Optional[str],
               code_url: Optional[str], trained_on_test_ids: Optional[bool], verify_pred: Optional[Path],
               data: Optional[Path], db_path: Optional[Path]) -> None:
    """Add a results file written by `a2fbench evaluate` (idempotent: the same file twice adds one row;
    submitting it again with other options updates that entry's metadata).

    \b
    Examples:
      a2fbench leaderboard submit results.json --method MyTalker
      a2fbench leaderboard submit results.json --method MyTalker --version v2 --params 96M \\
          --inference-time 17.5ms --inference-device "H100 fp32" --training-data "D0..D7" \\
          --code-url https://github.com/me/mytalker --not-trained-on-test-ids
      a2fbench leaderboard submit results.json --method MyTalker --verify PRED --data DATA
    """
    from .model import method_meta
    from .submit import load_results, recorded_method, submit_file

    if data is not None and verify_pred is None:
        raise click.UsageError("--data is only used with --verify PRED")
    doc = None
    if not method:  # the name the file records: load it here, once, and hand it to submit_file
        doc = load_results(results)
        method = recorded_method(doc, results)
    meta = method_meta(method=method, version=version, params=params, inference_s=inference_time,
                       inference_device=inference_device, training_data=training_data, code_url=code_url,
                       trained_on_test_ids=trained_on_test_ids)
    outcome = submit_file(_db(db_path), results, meta, verify_pred=verify_pred, data=data, doc=doc)
    click.echo(outcome.message)


@leaderboard_group.command("show")
@click.option("--dataset", default=None, help="Only these datasets: D1, vocaset, D0,D1 or D0..D7.")
@click.option("--kind", type=click.Choice(["all", "evaluated", "reported"]), default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: {\"entries\": [...], \"overall\": [...]}.")
@DB_OPT
def show_cmd(dataset: Optional[str], kind: str, as_json: bool, db_path: Optional[Path]) -> None:
    """Print the leaderboard: a table per dataset, best per column, ties, and the overall rank.

    \b
    Examples:
      a2fbench leaderboard show
      a2fbench leaderboard show --dataset vocaset --kind evaluated
      a2fbench leaderboard show --dataset D1 --json | jq '.entries[] | {method, kind, LVE: .metrics.LVE.value}'
    """
    from a2fbench.registry import resolve

    from .render import json_rows, load_ranked, terminal_table

    datasets = [s.id for s in resolve(dataset)] if dataset else None
    path = _db(db_path)
    conn = _open_for_reading(path)
    try:
        entries, overall = load_ranked(conn, datasets, None if kind == "all" else kind)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(json_rows(entries, overall, str(path)), indent=1, allow_nan=False))
    else:
        click.echo(terminal_table(entries, overall), nl=False)


@leaderboard_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--no-cache", is_flag=True, hidden=True, help="Rebuild the page on every request (benchmarking).")
@DB_OPT
def serve_cmd(host: str, port: int, no_cache: bool, db_path: Optional[Path]) -> None:
    """Serve the leaderboard as a small web app (read-only; Ctrl-C stops it).

    \b
    Examples:
      a2fbench leaderboard serve
      a2fbench leaderboard serve --port 8080 --db runs/leaderboard.sqlite
    """
    from .server import serve

    path = _db(db_path)
    if not path.exists():
        click.echo(f"note: creating an empty leaderboard at {path} (it shows the reported rows until you submit)",
                   err=True)
    try:
        serve(path, host, port, cache=not no_cache)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


@leaderboard_group.command("export")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write one self-contained HTML page here (no external resources).")
@click.option("--reports", is_flag=True,
              help="Also write each evaluated entry's report page into <HTML stem>_reports/ and link it "
                   "(0.2-0.6 s per entry on 2 cores).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@DB_OPT
def export_cmd(html_out: Path, reports: bool, force: bool, db_path: Optional[Path]) -> None:
    """Write the whole leaderboard (with per-sequence drill-down) as one HTML file.

    \b
    Example:
      a2fbench leaderboard export --html leaderboard.html --reports
    """
    from .render import export_html

    check_output(html_out, [_db(db_path)], force=force, option="--html")  # before the database is opened
    if reports:
        check_output(html_out.with_name(html_out.stem + "_reports"), [_db(db_path)], force=force, option="--reports")
    conn = _open_for_reading(_db(db_path))
    try:
        n = export_html(conn, html_out, reports=reports)
    finally:
        conn.close()
    click.echo(f"wrote {html_out} ({n} entries)")


@leaderboard_group.command("add-reported")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@DB_OPT
def add_reported_cmd(file: Path, db_path: Optional[Path]) -> None:
    """Add numbers claimed in a paper (YAML or JSON, each with its citation; see docs/leaderboard.md).

    \b
    Example:
      a2fbench leaderboard add-reported my_paper_table2.yaml
    """
    from . import db
    from .model import load_reported

    rows = load_reported(file)
    conn = db.connect(_db(db_path))
    try:
        for o in db.add_reported(conn, rows):
            click.echo(o.message)
    finally:
        conn.close()


@leaderboard_group.command("edit")
@click.argument("entry_id", type=click.IntRange(1))
@click.option("--method", default=None, help="Rename the method.")
@_meta_options
@DB_OPT
def edit_cmd(entry_id: int, method: Optional[str], version: Optional[str], params: Optional[str],
             inference_time: Optional[str], inference_device: Optional[str], training_data: Optional[str],
             code_url: Optional[str], trained_on_test_ids: Optional[bool], db_path: Optional[Path]) -> None:
    """Change an entry's metadata (its numbers come from its results file and never change).

    ENTRY_ID is the number in the `id` column of `a2fbench leaderboard show`. Resubmitting the same results
    file with new options does the same.

    \b
    Examples:
      a2fbench leaderboard edit 12 --params 96.05M --inference-time 17.5ms --inference-device "H100 fp32"
      a2fbench leaderboard edit 12 --method MyTalker-v2
    """
    from . import db
    from .model import method_meta

    conn = db.connect(_db(db_path))
    try:
        current = db.fetch_entries(conn, ids=[entry_id])
        name = method or (current[0]["method"] if current else "unknown")
        meta = method_meta(method=name, version=version, params=params, inference_s=inference_time,
                           inference_device=inference_device, training_data=training_data, code_url=code_url,
                           trained_on_test_ids=trained_on_test_ids)
        click.echo(db.edit_entry(conn, entry_id, meta, rename=method is not None).message)
    finally:
        conn.close()


@leaderboard_group.command("remove")
@click.argument("entry_id", type=click.IntRange(1))
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")
@DB_OPT
def remove_cmd(entry_id: int, yes: bool, db_path: Optional[Path]) -> None:
    """Delete one entry by its id (the `id` column of `show`), after asking.

    \b
    Examples:
      a2fbench leaderboard remove 12           # shows the entry and asks
      a2fbench leaderboard remove 12 --yes     # scripts
    """
    from . import db
    from .model import LeaderboardError

    conn = db.connect(_db(db_path))
    try:
        rows = db.fetch_entries(conn, ids=[entry_id])
        if not rows:
            raise LeaderboardError(f"expected an entry #{entry_id}, found none; the ids are in the `id` column of "
                                   "`a2fbench leaderboard show`; nothing was removed")
        e = rows[0]
        what = (f"entry #{e['id']}: {e['method']}{' (' + e['version'] + ')' if e.get('version') else ''}, {e['kind']}, "
                f"{e['dataset']}/{e['split']}/{e['protocol']}")
        if not yes:
            if not sys.stdin.isatty():
                raise LeaderboardError(f"refusing to remove {what} without confirmation: not on a terminal; "
                                       f"pass --yes to remove it")
            if not click.confirm(f"remove {what}?", default=False):
                click.echo("nothing removed")
                return
        r = db.remove_entry(conn, entry_id)
    finally:
        conn.close()
    click.echo(f"removed entry #{r['id']} ({r['method']}, {r['kind']})")


def main() -> None:  # pragma: no cover - `python -m leaderboard.cli`
    from a2fbench.cli import run_cli

    run_cli(leaderboard_group, "a2fbench leaderboard")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
