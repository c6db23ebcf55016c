"""Output commands: render (mp4 with sound), export (ARKit CSV, glTF, OBJ), report (one HTML page per
evaluation). See docs/outputs.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import click

from ..errors import A2FBenchError, OutputError
from ..outputs import FORMATS
from ..registry import get_space
from ..util import paths
from ..util.guard import FORCE_HELP, show
from . import DATA_OPT

# numpy, outputs.export, .heads, .render, sources.audio, .meshes and spaces are imported inside the functions
# that use them, not here: they load scipy, h5py and PyAV, and `a2fbench --help` imports every command module.
# Measured (python -X importtime, median of 5): this module imports in 0.008 s instead of 0.60 s.
if TYPE_CHECKING:
    import numpy as np

    from ..outputs.heads import Head

DATASET_OPT = click.option("--dataset", required=True, help="Dataset id or alias whose head made INPUT (D0..D7).")
MESH_OPT = click.option("--mesh", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="A .ply/.obj with the dataset's topology, used instead of the store's faces.")
PROGRESS_OPT = click.option("--no-progress", is_flag=True, help="No progress bar.")
FORCE_OPT = click.option("--force", is_flag=True, help=FORCE_HELP)


def _mesh(mesh: Optional[Path]) -> Optional[tuple]:
    """The ``--mesh`` file's (vertices, faces), or None; an unreadable file is one line naming the option."""
    from ..sources.meshes import read_mesh

    if mesh is None:
        return None
    try:
        return read_mesh(mesh)
    except A2FBenchError as e:
        raise OutputError(f"--mesh {e}") from None


def _head(dataset: str, data: Optional[Path], mesh: Optional[Path]) -> Head:
    from ..outputs.heads import open_head

    return open_head(data or paths.default_data(), dataset, _mesh(mesh))


def _notes(notes: Iterable[str]) -> None:
    """Each distinct note once, on stderr."""
    for note in dict.fromkeys(notes):
        click.echo(f"note: {note}", err=True)


def _audio_reader(path: Path) -> np.ndarray:
    from ..sources.audio import read_audio

    try:
        return read_audio(path)
    except A2FBenchError as e:
        raise OutputError(f"audio {e}") from None


@click.command("render")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@DATASET_OPT
@DATA_OPT
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The .mp4 (one INPUT file) or a folder of <name>.mp4 (a predictions or infer folder).")
@click.option("--audio", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Audio to mux in (one INPUT file). Default: the sequence's audio from the store.")
@click.option("--gt", is_flag=True, help="Put the ground truth (from the store, by sequence name) on the right.")
@click.option("--errors", is_flag=True, help="Colour each vertex by its distance to the ground truth (colour bar).")
@click.option("--size", type=click.IntRange(16, 4096), default=512, show_default=True,
              help="Panel size in pixels, 16 to 4096.")
@MESH_OPT
@PROGRESS_OPT
@FORCE_OPT
def render_cmd(input_path: Path, dataset: str, data: Optional[Path], out: Path, audio: Optional[Path], gt: bool,
               errors: bool, size: int, mesh: Optional[Path], no_progress: bool, force: bool) -> None:
    """Render motion (vertices or the dataset's parameters) to mp4 with sound, offscreen, on the CPU.

    \b
    INPUT: one .npy (then --out is a file), a predictions folder of <seq_id>.npy, or an `unitalker infer`
    output folder (then --out is a folder of videos).
    Examples:
      a2fbench render pred/FaceTalk_170809_00138_TA_sentence21.npy --dataset D1 --gt --errors --out clip.mp4
      a2fbench render pred/ --dataset vocaset --out videos/
      a2fbench render infer_out/ --dataset D3 --out videos/
    """
    from ..outputs.render import render

    head = _head(dataset, data, mesh)
    try:
        wav = _audio_reader(audio) if audio is not None else None
        done = render(input_path, head, out, gt=gt, errors=errors, size=size, audio=wav, read_audio=_audio_reader,
                      progress=False if no_progress else None, force=force, inputs=[audio, mesh])
    finally:
        head.close()
    for r in done:
        click.echo(f"{show(r.path)}: {r.info.frames} frames at {r.info.fps:g} fps, {r.info.width}x{r.info.height}, "
                   f"{'with' if r.info.has_audio else 'without'} sound")
    _notes(n for r in done for n in r.notes)


@click.command("export")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@DATASET_OPT
@DATA_OPT
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="arkit-csv: Live Link Face CSV; gltf: one .glb with morph-target animation; obj: one OBJ per frame.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The output file (OBJ: folder) for one INPUT file, else a folder of them.")
@click.option("--basis", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="arkit-csv of a vertex topology: a blendshape basis npz (meanshape + 52 ARKit blendshapes) on it.")
@MESH_OPT
@PROGRESS_OPT
@FORCE_OPT
def export_cmd(input_path: Path, dataset: str, data: Optional[Path], fmt: str, out: Path, basis: Optional[Path],
               mesh: Optional[Path], no_progress: bool, force: bool) -> None:
    """Export motion as an ARKit CSV (Live Link Face), a glTF binary with morph targets, or OBJ frames.

    \b
    Examples:
      a2fbench export pred/clip.npy --dataset D3 --format arkit-csv --out clip.csv
      a2fbench export pred/clip.npy --dataset D1 --format gltf --out clip.glb
      a2fbench export pred/clip.npy --dataset D1 --format obj --out clip_obj/
    """
    from ..outputs.export import export
    from ..spaces import read_blendshape_basis

    b = None
    if basis is not None:
        b = read_blendshape_basis(basis, (get_space("arkit52"), get_space("arkit51")))
    head = _head(dataset, data, mesh)
    try:
        done = export(input_path, head, fmt, out, basis=b, progress=False if no_progress else None, force=force,
                      inputs=[basis, mesh])
    finally:
        head.close()
    for r in done:
        click.echo(show(r.path))
    _notes(n for r in done for n in r.notes)


@click.command("report")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pred", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The predictions folder that was evaluated: adds the error and velocity maps and the worst "
                   "sequences.")
@DATA_OPT
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .html page.")
@click.option("--worst", type=click.IntRange(0, 100), default=5, show_default=True, help="Worst sequences listed.")
@click.option("--videos", is_flag=True, help="Also render the worst sequences (pred | GT, errors) beside the page.")
@MESH_OPT
@PROGRESS_OPT
@FORCE_OPT
def report_cmd(results: Path, pred: Optional[Path], data: Optional[Path], out: Path, worst: int, videos: bool,
               mesh: Optional[Path], no_progress: bool, force: bool) -> None:
    """One self-contained HTML page for a results JSON: metrics with CIs, per-sequence distributions, and with
    --pred the per-vertex error map and the upper-face velocity maps (UniTalker Fig. 6) on the template.

    \b
    Example:
      a2fbench evaluate pred/ --dataset D1 --out r.json
      a2fbench report r.json --pred pred/ --data data --out report.html
    """
    from ..outputs.report import write_report  # matplotlib takes 0.4 s to import; render and export need none

    page = write_report(results, out, pred=pred, data=data or paths.default_data(), worst=worst, videos=videos,
                        mesh=_mesh(mesh), read_audio=_audio_reader, progress=False if no_progress else None,
                        force=force, inputs=[mesh])
    click.echo(f"report written to {show(page)}")
