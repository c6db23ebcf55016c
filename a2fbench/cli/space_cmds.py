"""Output-space commands: pca, convert-flame, solve-arkit (see docs/spaces.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SpaceError
from ..registry import get_space, resolve
from ..util import paths
from ..util.fsutil import write_npy
from ..util.guard import FORCE_HELP, check_output
from . import DATA_OPT, SEED, FiniteFloat

# numpy, spaces, spaces.pca and store are imported inside the commands that use them, not here: they load
# scipy and h5py, and `a2fbench --help` imports every command module. Measured (python -X importtime, median
# of 5): this module imports in 0.005 s instead of 0.47 s.



@click.command("pca")
@click.argument("datasets")
@DATA_OPT
@click.option("--components", type=click.IntRange(min=1), default=None,
              help="Principal components kept. Default: 512 (UniTalker's), or as many as a split with fewer "
                   "frames allows (frames - 1, e.g. on tiny stand-ins), with a note. A number given here is "
                   "never lowered: too many is an error.")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda[:N] to fit on a GPU with torch.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random sketch (same seed, same file).")
@click.option("--split", default="train", show_default=True, help="Split whose frames are fitted.")
@click.option("--passes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Reads of the data (block Krylov depth); more passes, more accurate tail components.")
@click.option("--oversample", type=click.IntRange(min=0), default=None,
              help="Extra columns per Krylov block. Default: 16 + components/32.")
def pca_cmd(datasets: str, data: Path | None, components: int | None, device: str, seed: int, split: str,
            passes: int, oversample: int | None) -> None:
    """PCA of vertex datasets (training motion minus template) -> DATA/<id>/pca.npz, UniTalker's layout.

    Streams the store in blocks (memory does not grow with the dataset); with --device cuda the same
    algorithm runs in torch on the GPU. Every dataset is checked before any is fitted.

    \b
    Example:
      a2fbench pca D0..D2 --data ~/.a2fbench/data
      a2fbench pca vocaset --data data --components 64 --device cuda
    """
    from ..spaces.pca import DEFAULT_COMPONENTS, check_dataset, fit_dataset, load
    from ..store import open_dataset

    data = data or paths.default_data()
    specs = resolve(datasets)
    wanted: dict[str, int] = {}
    for spec in specs:  # one clear line before anything is fitted or written
        ds = open_dataset(data, spec.id)
        try:
            check_dataset(ds)
            n = sum(ds[s].n_frames for s in ds.split(split))
            wanted[spec.id] = components or min(DEFAULT_COMPONENTS, max(1, n - 1), int(ds.card["dim"]))
            if components is None and wanted[spec.id] < DEFAULT_COMPONENTS:
                click.echo(f"note: {spec.id} {split} has {n} frames: fitting {wanted[spec.id]} components instead "
                           f"of {DEFAULT_COMPONENTS}", err=True)
        finally:
            ds.close()
    for spec in specs:
        path = fit_dataset(spec.id, data, components=wanted[spec.id], device=device, seed=seed, split=split,
                           passes=passes, oversample=oversample)

        p = load(path)
        click.echo(f"{spec.id}: {p.n_components} components explain {p.meta['explained_variance']:.6f} of the "
                   f"{split} variance ({p.n_samples} frames x {p.dim}) in {p.meta['fit_seconds']:.1f} s -> {path}")


@click.command("convert-flame")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help=FORCE_HELP)
def convert_flame_cmd(src: Path, dst: Path, force: bool) -> None:
    """FLAME 2020 generic_model.pkl -> plain-array flame.npz (no chumpy needed, to read or to write).

    The pickle is read with a restricted unpickler: chumpy arrays become numpy arrays without importing
    chumpy, the sparse J_regressor becomes dense, and nothing else is allowed to load.

    \b
    Example:
      a2fbench convert-flame ~/Downloads/FLAME2020/generic_model.pkl raw/D5/flame.npz
    """
    from ..spaces import convert_flame, read_flame_model

    check_output(dst, [src], force=force, option="DST")
    out = convert_flame(src, dst)
    a = read_flame_model(out)
    click.echo(f"{out}: FLAME model, {a['v_template'].shape[0]} vertices, {a['J_regressor'].shape[0]} joints, "
               f"{a['shapedirs'].shape[2]} shape+expression directions")


@click.command("solve-arkit")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output .npy (one input file) or folder (several inputs, or a folder).")
@click.option("--basis", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Blendshape basis npz (meanshape + blendshape, UniTalker layout).")
@click.option("--space", default=None, help="arkit52 or arkit51: checks the basis width and names the channels.")
@click.option("--dataset", default=None, help="Take the basis (and space) of a prepared dataset instead, e.g. D3.")
@DATA_OPT
@click.option("--lower", type=FiniteFloat(), default=0.0, show_default=True)
@click.option("--upper", type=FiniteFloat(), default=1.0, show_default=True)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def solve_arkit_cmd(inputs: tuple[Path, ...], out: Path, basis: Path | None, space: str | None,
                    dataset: str | None, data: Path | None, lower: float, upper: float, force: bool) -> None:
    """Vertices -> blendshape weights: bounded least squares in [0, 1] per frame, through a basis.

    Each input .npy holds vertices (T, V, 3) or (T, 3V) in the basis topology and units; each output .npy
    holds (T, K) weights in the space's channel order (ARKit: EmoTalk's alphabetical order for arkit52).
    Exact when the vertices come from weights inside the bounds; otherwise the closest bounded fit.

    \b
    Example:
      a2fbench solve-arkit pred/clip.npy --dataset D3 --data data --out clip_weights.npy
      a2fbench solve-arkit verts/ --basis EmoTalk.npz --space arkit52 --out weights/
    """
    import numpy as np

    from ..spaces import BlendshapeConverter, converter, read_blendshape_basis

    if (basis is None) == (dataset is None):
        raise click.UsageError("give exactly one of --basis FILE or --dataset D")
    if dataset is not None:
        from ..store import open_dataset

        ds = open_dataset(data or paths.default_data(), resolve(dataset)[0].id)
        sp = get_space(ds.card["space"])
        arrays = ds.space_arrays()
        ds.close()
        if sp.kind != "blendshape":
            raise SpaceError(f"expected a blendshape dataset (D3, D4, D6, D7), found {ds.id} in {sp.name} "
                             f"({sp.kind}); pick a dataset whose space is arkit52 or arkit51")
        conv = converter(sp, arrays)
    elif space is not None:
        sp = get_space(space)
        if sp.kind != "blendshape":
            raise SpaceError(f"expected a blendshape space (arkit52, arkit51), found {space} ({sp.kind})")
        conv = converter(sp, read_blendshape_basis(basis, sp))  # type: ignore[arg-type]
    else:
        z = np.load(basis, allow_pickle=False)  # type: ignore[arg-type]
        missing = {"meanshape", "blendshape"} - set(z.files)
        if missing:
            raise SpaceError(f"{basis}: expected keys meanshape and blendshape, found {sorted(z.files)}")
        conv = BlendshapeConverter(z["meanshape"], z["blendshape"])
    files: list[tuple[Path, Path]] = []
    many = len(inputs) > 1 or any(p.is_dir() for p in inputs)
    for p in inputs:
        srcs = sorted(p.glob("*.npy")) if p.is_dir() else [p]
        for f in srcs:
            files.append((f, (out / f.name) if many else out))
    if not files:
        raise SpaceError(f"expected .npy vertex files in {', '.join(map(str, inputs))}, found none")
    for _, dst in files:  # every output checked before the first is written
        check_output(dst, [*inputs, basis, data if dataset else None], force=force)
    for src, dst in files:
        try:
            v = np.load(src, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise SpaceError(f"{src}: expected a .npy of vertices, found an unreadable file ({e})") from None
        try:
            w, info = conv.to_weights(v, lower, upper, return_info=True)  # type: ignore[union-attr]
        except SpaceError as e:
            raise SpaceError(f"{src}: {e}") from None
        write_npy(dst, w.astype(np.float32))
        click.echo(f"{src.name}: {w.shape[0]} frames -> {dst} (rms residual {float(np.sqrt(np.mean(info['residual'] ** 2))):.3g})")
