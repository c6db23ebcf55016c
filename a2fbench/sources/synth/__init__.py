"""``a2fbench synth``: stand-in raw data in each dataset's native layout.

The real datasets are licence-gated. The stand-ins have the real structure (layout, file names, dtypes, frame
and audio rates, vertex counts or parameter widths, subject names and split membership) and motion that
depends on the audio (see :mod:`.face`). Sizes: ``tiny`` (seconds, for tests), ``small``,
``full`` (the scale of the paper's Table 1: tens of GB for the vertex datasets). Non-public resources
(region masks, blendshape bases, a FLAME-like model) are written in their real formats too.

Each stand-in folder carries ``.a2fbench-synth.json``; ``prepare`` records it in the dataset card, so a score
on synthetic data can never pass for a score on the real dataset.

Takes: a dataset spec, a size and a seed. Gives: ``RAW/<id>/`` in the layout's native files
(:mod:`a2fbench.sources.layouts` writes them). Modules: :mod:`.plan` (which sequences), :mod:`.face` (the
face model, audio and articulation), :mod:`.generate` (one sequence's audio and motion), :mod:`.resources`
(region masks, meshes, bases, the FLAME-like model).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from ... import __version__
from ...errors import A2FBenchError
from ...registry import DatasetSpec
from ...util.fsutil import atomic_path
from ...util.progress import bar as progress_bar
from ..layouts import LAYOUTS
from ..raw import SYNTH_MARKER
from .generate import Generator
from .plan import SeqPlan, Size, estimate_bytes, plan, plan_stats
from .resources import write_blendshape_basis, write_flame_model, write_resources

__all__ = ["synth_dataset", "Size", "SeqPlan", "estimate_bytes", "plan", "plan_stats", "write_blendshape_basis",
           "write_flame_model", "write_resources", "Generator", "SYNTH_MARKER"]


def synth_dataset(spec: DatasetSpec, out: str | os.PathLike, size: Size = "tiny", seed: int = 0,
                  layout: Optional[str] = None, progress: bool = True,
                  splits: Optional[list[str]] = None) -> Path:
    """Write the stand-in of one dataset to ``out/<id>/`` (atomically) and return that folder.

    ``layout``: one of the manifest's layouts, or ``raw`` for its raw-corpus layout (D0: ``biwi_raw``).
    ``splits`` keeps only the sequences of those splits (benchmarks use it to build, e.g., the full-size
    BIWI training split without the rest).
    """
    layout = layout or spec.layouts[0]
    if layout == "raw":  # the corpus as its authors ship it, when the manifest has that layout
        raw = [name for name in spec.layouts if getattr(LAYOUTS[name], "RAW_CORPUS", False)]
        if not raw:
            raise A2FBenchError(f"{spec.id} has no raw-corpus layout; expected one of {', '.join(spec.layouts)}")
        layout = raw[0]
    if layout not in spec.layouts:
        raise A2FBenchError(f"{spec.id} has no layout {layout!r}; expected one of {', '.join(spec.layouts)}")
    target = Path(out) / spec.id
    keep = (lambda p: p.split in splits) if splits else (lambda p: True)
    need = estimate_bytes(spec, size, seed, keep)
    Path(out).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if need > 0.95 * free:
        raise A2FBenchError(f"synth {spec.id} --size {size}: expected {need / 1e9:.1f} GB free disk, found "
                            f"{free / 1e9:.1f} GB; free space or choose a smaller --size")
    plans = [p for p in plan(spec, size, seed) if keep(p)]
    gen = Generator(spec, seed)
    with atomic_path(target, is_dir=True) as tmp:
        with progress_bar(total=len(plans), desc=f"synth {spec.id}", unit="seq", show=progress, leave=False) as bar:
            LAYOUTS[layout].write(gen, tmp, plans, bar)
        write_resources(gen, tmp)
        (tmp / SYNTH_MARKER).write_text(json.dumps({"dataset": spec.id, "size": size, "seed": seed, "layout": layout,
                                              "a2fbench_version": __version__, "n_sequences": len(plans)}, indent=1))
    return target
