"""Shared fixtures: tiny synthetic stand-ins of D0..D7, synthesized and prepared once per session.

Tests that modify raw or prepared data must copy them first (``copy_tree``); the session copies are shared.
Real public resources (region masks, meshes) live in ../shared/resources and tests that use them skip when
the folder is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from a2fbench.registry import all_specs

REPO = Path(__file__).resolve().parent.parent
SHARED_RESOURCES = Path(os.environ.get("A2FBENCH_SHARED_RESOURCES", REPO.parent / "shared" / "resources"))


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$A2FBENCH_HOME for the whole session (and every command it starts): a temporary folder, so no test reads or
    writes the real ~/.a2fbench (its data, its leaderboard, its results-signing key)."""
    h = tmp_path_factory.mktemp("a2fbench_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("A2FBENCH_HOME", str(h))
        yield h


@pytest.fixture(scope="session")
def raw_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RAW root with tiny stand-ins of every dataset (read-only: copy before modifying)."""
    from a2fbench.sources.synth import synth_dataset

    root = tmp_path_factory.mktemp("raw_tiny")
    for spec in all_specs():
        synth_dataset(spec, root, size="tiny", seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def data_tiny(raw_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA root with every tiny stand-in prepared (read-only: copy before modifying)."""
    from a2fbench.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("data_tiny")
    for spec in all_specs():
        prepare_dataset(spec, raw_tiny, root, progress=False)
    return root


@pytest.fixture
def shared_resources() -> Path:
    if not SHARED_RESOURCES.is_dir():
        pytest.skip(f"needs the real public region masks and meshes (CodeTalker's BIWI lists, FLAME masks, MeshTalk "
                    f"masks and meshes) at {SHARED_RESOURCES}, absent here; point A2FBENCH_SHARED_RESOURCES at a "
                    "copy (README, 'Tests')")
    return SHARED_RESOURCES


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
