"""``a2fbench export``: motion files of a dataset -> the formats animators load.

* ``arkit-csv`` (Live Link Face's layout, :mod:`.arkit_csv`): the weights of an ARKit head as they are; vertices
  of a blendshape topology through the bounded solve (:meth:`~a2fbench.spaces.BlendshapeConverter.to_weights`);
  any other topology only with a blendshape basis on it (``--basis``), else one line and nothing written.
* ``gltf`` (one ``.glb``, :mod:`.gltf`): the motion as morph-target weights. ARKit heads: the basis mesh with
  its named targets. Vertex heads: the dataset's PCA components (``DATA/<id>/pca.npz``) as targets over the
  subject's template, else a PCA fitted on the clip to a tolerance. FLAME parameters: the FLAME mesh, PCA of
  the clip.
* ``obj`` (:mod:`.obj`): a folder of ``frame_000000.obj``... with the dataset's faces.

One ``.npy`` makes one output at ``--out``; a folder of inputs makes ``--out/<name>.csv|.glb|/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import OutputError, StoreError
from ..registry import get_space, space_channels
from ..spaces import BlendshapeConverter
from ..spaces.pca import load_for, pca_path
from ..util.guard import check_output, show
from ..util.progress import bar
from . import FORMATS, arkit_csv, gltf, obj
from .heads import Frames, Head, collect_inputs, load_frames
from .render import plan_outputs, written_together

#: clip PCA tolerance: this fraction of the template's bounding-box diagonal (3e-5 m = 0.03 mm on FLAME)
CLIP_PCA_TOLERANCE = 1e-4


@dataclass
class Exported:
    path: Path
    notes: list[str] = field(default_factory=list)


def arkit_solver(head: Head, basis: Optional[dict[str, np.ndarray]]) -> tuple[Any, list[str]]:
    """(converter whose ``to_weights`` solves vertices, its channel names) for an ARKit CSV of ``head``; one line
    when the topology has neither ARKit meaning nor a basis."""
    if basis is None:
        if head.space.kind == "blendshape":
            return head.conv, head.channels or []
        raise OutputError(f"--format arkit-csv: {head.id} ({head.space.name}, {head.space.kind}) has no ARKit "
                          f"meaning and no blendshape basis on its {head.n_vertices}-vertex topology to solve through; "
                          "export --format gltf or obj, or pass --basis FILE.npz (meanshape + ARKit blendshapes on "
                          "this topology)")
    conv = BlendshapeConverter(basis["meanshape"], basis["blendshape"])
    if conv.n_vertices != head.n_vertices:
        raise OutputError(f"--basis: expected a blendshape basis on the {head.n_vertices}-vertex topology of "
                          f"{head.id}, found one on {conv.n_vertices} vertices; pass a basis of this topology")
    names = {52: space_channels(get_space("arkit52")), 51: space_channels(get_space("arkit51"))}.get(conv.n_params)
    if names is None:
        raise OutputError(f"--basis: expected 52 (or 51) ARKit blendshapes in EmoTalk's order, found {conv.n_params}")
    return conv, names


def export(src: str | os.PathLike, head: Head, fmt: str, out: str | os.PathLike, *,
           basis: Optional[dict[str, np.ndarray]] = None, progress: Optional[bool] = None, force: bool = False,
           inputs: Sequence[Any] = ()) -> list[Exported]:
    """Export INPUT ``src`` (see module doc) of ``head``'s dataset as ``fmt`` to ``out``. ``force``: replace
    existing outputs; ``inputs``: further files the command reads (never written over)."""
    if fmt not in FORMATS:
        raise OutputError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    items, one_file = collect_inputs(src, head)
    solver = arkit_solver(head, basis) if fmt == "arkit-csv" else None  # a meaningless CSV fails before any work
    inputs = [src, head.ds.path, *inputs]
    if fmt == "obj" and one_file:
        targets = [check_output(out, [*inputs, items[0].path], force=force)]
        _check_obj_folder(targets[0])
    else:
        targets = plan_outputs(items, one_file, out, FORMATS[fmt], inputs=inputs, force=force)
        if fmt == "obj":
            for t in targets:
                _check_obj_folder(t)
    # float64 for the ARKit solve and OBJ text; glTF stores float32 (and projects in float32)
    frames = [load_frames(it, head, np.float32 if fmt == "gltf" else np.float64) for it in items]
    done: list[Path] = []
    undo = written_together(done, None if one_file else Path(out), targets[0] if one_file else None)
    results = []
    try:
        with bar(total=sum(len(f) for f in frames), desc=f"export {head.id} {fmt}", unit="frame", show=progress) as pbar:
            for it, f, target in zip(items, frames, targets):
                if fmt == "arkit-csv":
                    notes = _csv(f, head, solver, target)
                elif fmt == "gltf":
                    notes = _gltf(f, head, target, it.seq_id)
                else:
                    obj.write_obj_sequence(target, f, head.faces, overwrite=target.exists(), progress=pbar.update)
                    notes = []
                done.append(target)
                if fmt != "obj":
                    pbar.update(len(f))
                results.append(Exported(target, notes + ([head.faces_note] if head.faces_note and fmt != "arkit-csv"
                                                         else [])))
    except BaseException:
        undo()
        raise
    return results


def _check_obj_folder(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(not p.name.endswith(".obj") for p in target.iterdir())):
        raise OutputError(f"--out {show(target)}: expected a new folder (or an old OBJ sequence) for the OBJ frames, found "
                          f"{'a file' if not target.is_dir() else 'a folder with other files'}; pick another path")


def _csv(f: Frames, head: Head, solver: Any, target: Path) -> list[str]:
    notes = []
    if f.kind == "parameters":  # an ARKit head's own weights
        weights, names = f.rows_array(), head.channels
    else:
        conv, names = solver
        weights, info = conv.to_weights(f.all(), return_info=True)
        rms = float(np.sqrt(np.mean(info["residual"] ** 2))) / np.sqrt(head.n_vertices)
        notes.append(f"{target.name}: ARKit weights solved from vertices (bounded least squares in [0, 1]); "
                     f"rms vertex residual {rms * head.error_scale:.4g} {head.error_units}")
    res = arkit_csv.write_arkit_csv(target, weights, head.fps, names=names)
    if res.clamped:
        notes.append(f"{target.name}: {res.clamped} weights outside [0, 1] were clamped (ARKit's range)")
    return notes


def _gltf(f: Frames, head: Head, target: Path, seq_id: Optional[str]) -> list[str]:
    if head.space.kind == "blendshape":
        conv = head.conv
        if f.kind == "parameters":
            weights, notes = f.rows_array().astype(np.float64), []
        else:
            weights = conv.to_weights(f.all())
            notes = [f"{target.name}: weights solved from vertices through the {head.space.name} basis"]
        V = conv.n_vertices
        gltf.write_morph_glb(target, conv.mean.reshape(V, 3), head.faces, conv.B.reshape(-1, V, 3), weights, head.fps,
                             head.channels, name=head.id)
        return notes
    frames = f.all()
    pca, why = _dataset_pca(head)
    if pca is not None:
        # float32 like the file it makes (one (T, 3V) x (3V, K) GEMM: ~0.15 s for 60 s of FLAME on 2 cores)
        template = head.template(seq_id).reshape(-1).astype(np.float32)
        y = frames.reshape(len(frames), -1).astype(np.float32)
        y -= template + pca.mean.astype(np.float32)
        coeffs = y @ pca.components.astype(np.float32, copy=False).T  # = pca.encode(frames - template)
        # orthonormal components: |y - c C|^2 = |y|^2 - |c|^2 per frame, without decoding
        r2 = np.einsum("td,td->t", y, y, dtype=np.float64) - np.einsum("tk,tk->t", coeffs, coeffs, dtype=np.float64)
        rms = float(np.sqrt(max(r2.sum(), 0.0) / (len(frames) * head.n_vertices)))
        gltf.export_pca_glb(target, head.faces, pca.mean, pca.components, coeffs, head.fps, template=template)
        return [f"{target.name}: {pca.n_components} morph targets from {pca_path(head.ds.path.parent, head.id)}; "
                f"rms vertex error of the projection {rms * head.error_scale:.3g} {head.error_units}"]
    extent = float(np.linalg.norm(np.ptp(head.template(seq_id), axis=0)))
    basis = gltf.export_vertex_sequence_glb(target, frames, head.faces, head.fps,
                                            max_error=CLIP_PCA_TOLERANCE * extent)
    met = "" if basis.tolerance_met else f" (cap of 512 reached before {CLIP_PCA_TOLERANCE:g} x the head's size)"
    return [f"{target.name}: {len(basis.targets)} morph targets from a PCA of the clip ({why}); largest vertex "
            f"error {basis.max_error * head.error_scale:.4g} {head.error_units}{met}"]


def _dataset_pca(head: Head) -> tuple[Any, str]:
    if not head.space.is_vertex:
        return None, f"{head.space.name} has no dataset PCA"
    data = head.ds.path.parent
    if not pca_path(data, head.id).is_file():
        return None, f"no {pca_path(data, head.id)}; `a2fbench pca {head.id}` makes one"
    try:
        return load_for(data, head.id), ""
    except StoreError as e:
        return None, f"dataset PCA unusable: {e}"
