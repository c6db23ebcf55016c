"""The ``a2fbench`` command line.

Subcommands live in their own modules and are imported only when used (``LazyGroup``), so ``a2fbench list``
starts fast and a broken optional dependency of one command cannot break the others. User errors
(:class:`~a2fbench.errors.A2FBenchError`) print one line and exit 1; bad usage exits 2; no traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from ..errors import A2FBenchError
from ..util.guard import Terminated, describe_os_error, printable, safe_streams, stop_on_signals

COMMANDS = {
    "list": "a2fbench.cli.data_cmds:list_cmd",
    "info": "a2fbench.cli.data_cmds:info_cmd",
    "download": "a2fbench.cli.data_cmds:download_cmd",
    "synth": "a2fbench.cli.data_cmds:synth_cmd",
    "prepare": "a2fbench.cli.data_cmds:prepare_cmd",
    "doctor": "a2fbench.cli.data_cmds:doctor_cmd",
    "export-hf": "a2fbench.cli.data_cmds:export_hf_cmd",
    "pca": "a2fbench.cli.space_cmds:pca_cmd",
    "convert-flame": "a2fbench.cli.space_cmds:convert_flame_cmd",
    "solve-arkit": "a2fbench.cli.space_cmds:solve_arkit_cmd",
    "evaluate": "a2fbench.cli.score_cmds:evaluate_cmd",
    "compare": "a2fbench.cli.score_cmds:compare_cmd",
    "render": "a2fbench.cli.output_cmds:render_cmd",
    "export": "a2fbench.cli.output_cmds:export_cmd",
    "report": "a2fbench.cli.output_cmds:report_cmd",
}
#: commands other installed packages add to ``a2fbench`` (the leaderboard adds ``leaderboard``); a2fbench never
#: names them itself, so it depends on no package above it
PLUGIN_GROUP = "a2fbench.commands"
#: every seed a user types (numpy's and torch's generators take all of these; a negative one is a usage error)
SEED = click.IntRange(0, 2**32 - 1)


class FiniteFloat(click.FloatRange):
    """A float option in ``[min, max]`` that is also finite: ``nan`` passes click's own range check, not this."""

    name = "finite float"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        rv = super().convert(value, param, ctx)
        if rv != rv or rv in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


#: the --data option of every command that reads prepared stores
DATA_OPT = click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Prepared store root (DATA/<id>/). Default: $A2FBENCH_HOME/data.")


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def _plugins(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            mod, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(mod), attr)
        plugins = self._plugins()
        if name in plugins:
            return plugins[name].load()
        return super().get_command(ctx, name)


def run_cli(group: click.Group, prog: str) -> None:
    """Run a click group with the project's error policy (one line, exit 1; usage exit 2): user errors and OS
    errors (permission, read-only or full disk, missing folder) print one line; SIGTERM/SIGHUP stop like Ctrl-C
    (temporaries removed); everything printed has its control characters escaped (:mod:`a2fbench.util.guard`)."""
    with stop_on_signals(), safe_streams():
        code = _run(group, prog)
    sys.exit(code)


def _run(group: click.Group, prog: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        rv = group.main(prog_name=prog, standalone_mode=False)
    except A2FBenchError as e:
        click.echo(f"error: {printable(e)}", err=True)
        return e.exit_code
    except click.exceptions.Abort as e:  # click turns KeyboardInterrupt (and so Terminated) into Abort
        if isinstance(e.__cause__, Terminated):
            click.echo(f"stopped by {e.__cause__}; temporary files removed, no partial output left", err=True)
            return 128 + e.__cause__.signum
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as e:  # click writes "Error:"; every message of ours starts "error:"
        if e.ctx is not None:
            click.echo(e.ctx.get_usage(), err=True)
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        click.echo(f"error: {printable(e.format_message())}{hint}", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {printable(e.format_message())}", err=True)
        return e.exit_code
    except Terminated as e:
        click.echo(f"stopped by {e}; temporary files removed, no partial output left", err=True)
        return 128 + e.signum
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # permission, read-only or full disk, missing folder: one line, never a traceback
        click.echo(f"error: {describe_os_error(e)}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="a2fbench")
def cli() -> None:
    """A2F-Bench: datasets, metrics and a leaderboard for audio-driven 3D facial animation.

    \b
    Start here:
      a2fbench list
      a2fbench synth D0..D7 --out raw --size tiny
      a2fbench prepare D0..D7 --raw raw --out data
      a2fbench evaluate PRED --dataset D1 --data data
    """


def main() -> None:
    run_cli(cli, "a2fbench")
