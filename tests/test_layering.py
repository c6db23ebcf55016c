"""The dependency rule, as data: data flows one way.

``a2fbench`` never imports ``unitalker`` or ``leaderboard`` (not even by a string such as
``"leaderboard.cli:leaderboard_group"``); ``unitalker`` and ``leaderboard`` never import each other; inside
``a2fbench`` each subpackage imports only the stages below it (:data:`ALLOWED`). Also: no import cycles, no
module reaching for another module's ``_private`` names, no module over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("a2fbench", "unitalker", "leaderboard")

#: which packages may import which (besides themselves and the standard/third-party libraries)
PACKAGE_DEPS = {"a2fbench": set(), "unitalker": {"a2fbench"}, "leaderboard": {"a2fbench"}}

#: inside a2fbench: the subpackages (and top-level modules) each one may import. ``cli`` is the composition
#: root; ``util`` and ``errors`` are plumbing every stage may use. The root package (``__version__``) counts
#: as its own.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "util": {"errors"},
    "registry": {"errors", "util"},
    "store": {"errors", "util", "registry"},
    "spaces": {"errors", "util", "registry", "store"},  # spaces.pca reads a prepared store
    "sources": {"errors", "util", "registry", "store", "spaces"},  # region files and bases read through the spaces;
    # a user's template mesh is read into the store's Template (store.templates: which template a mesh sits on)
    "prepare": {"errors", "util", "registry", "sources", "spaces", "store"},
    "scoring": {"errors", "util", "registry", "spaces", "store"},
    "outputs": {"errors", "util", "registry", "spaces", "store", "scoring"},
    "cli": {"errors", "util", "registry", "sources", "prepare", "store", "spaces", "scoring", "outputs"},
    "__init__": {"errors", "registry", "store"},
}
#: inside unitalker: the baseline's life by stage. ``model`` (config, network, checkpoint, loading) is the base;
#: ``train``, ``infer`` and ``release`` each build on it and never on each other; the CLI and the quickstart
#: (top-level modules, the composition root) may use them all.
UNITALKER_ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "train": {"model"},
    "infer": {"model"},
    "release": {"model"},
    "cli": {"model", "train", "infer", "release", "quickstart"},
    "quickstart": {"model", "train", "infer"},
    "__main__": {"cli"},
    "__init__": set(),
}
#: sub-packages of unitalker at most, and modules in each at most (a room that needs more is two rooms)
UNITALKER_MAX_TOP_MODULES, UNITALKER_MAX_SUB_MODULES = 4, 9
MAX_LINES = 450
#: strings that equal an upper package's name but name something else (file, string, why)
NOT_MODULE_NAMES = {
    ("a2fbench/scoring/protocols.py", "unitalker"): "the UniTalker scoring protocol's name (`--protocol unitalker`)",
}
_STRING_REF = re.compile(r"^(unitalker|leaderboard)([.:][A-Za-z_]|$)")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


MODULES = _modules()


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    is_pkg = path.name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((_resolve(mod, path, node), [a.name for a in node.names], node.lineno))
    return out


def _stage(mod: str) -> str:
    parts = mod.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_packages_import_only_downwards() -> None:
    bad = []
    for mod, path in MODULES.items():
        pkg = mod.split(".")[0]
        for target, _names, line in _imports(mod, path):
            tp = target.split(".")[0]
            if tp in PACKAGES and tp != pkg and tp not in PACKAGE_DEPS[pkg]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not bad, bad


def test_no_string_references_to_upper_packages() -> None:
    """``a2fbench`` may not name ``unitalker``/``leaderboard`` modules even in strings (lazy imports, entry
    points): an upper package plugs itself in through the ``a2fbench.commands`` entry point instead."""
    bad = []
    for mod, path in MODULES.items():
        if not mod.startswith("a2fbench"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and _STRING_REF.match(node.value)
                    and node.value.split(":")[0] in MODULES
                    and (str(path.relative_to(REPO)), node.value) not in NOT_MODULE_NAMES):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} names {node.value!r}")
    assert not bad, bad


def test_a2fbench_stages_follow_the_allowed_dependencies() -> None:
    stages = {p.stem if p.is_file() else p.name for p in (REPO / "a2fbench").iterdir()
              if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__main__.py"}
    assert stages <= set(ALLOWED), f"stages without a rule in ALLOWED: {sorted(stages - set(ALLOWED))}"
    bad = []
    for mod, path in MODULES.items():
        if not mod.startswith("a2fbench"):
            continue
        src = _stage(mod)
        for target, names, line in _imports(mod, path):
            if not target.startswith("a2fbench"):
                continue
            if target == "a2fbench":  # the root package: only __version__ (and, from cli, the public API)
                if set(names) - {"__version__"} and src not in ("cli", "__init__"):
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {names} from the root package")
                continue
            dst = _stage(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {src} may not import {dst} ({target})")
    assert not bad, bad


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, names, _line in _imports(mod, path):
            for t in [target, *(f"{target}.{n}" for n in names)]:
                if t in MODULES and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    sys.setrecursionlimit(10000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_module_imports_private_names_of_another() -> None:
    bad = []
    for mod, path in MODULES.items():
        for target, names, line in _imports(mod, path):
            if target.split(".")[0] in PACKAGES and target != mod:
                priv = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if priv:
                    bad.append(f"{path.relative_to(REPO)}:{line} takes {priv} from {target}")
    assert not bad, bad


def test_no_long_modules() -> None:
    long = {str(p.relative_to(REPO)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_a2fbench_top_level_holds_few_modules() -> None:
    top = [p.name for p in (REPO / "a2fbench").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 2, top


def test_unitalker_stages_follow_the_allowed_dependencies() -> None:
    pkg = REPO / "unitalker"
    stages = {p.stem if p.is_file() else p.name for p in pkg.iterdir()
              if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert stages <= set(UNITALKER_ALLOWED), f"stages without a rule in UNITALKER_ALLOWED: {sorted(stages - set(UNITALKER_ALLOWED))}"
    bad = []
    for mod, path in MODULES.items():
        if not mod.startswith("unitalker"):
            continue
        src = _stage(mod)
        for target, _names, line in _imports(mod, path):
            if not target.startswith("unitalker.") or target == "unitalker":
                continue
            dst = _stage(target)
            if dst != src and dst not in UNITALKER_ALLOWED[src]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {src} may not import {dst} ({target})")
    assert not bad, bad


def test_unitalker_reads_as_a_few_rooms() -> None:
    pkg = REPO / "unitalker"
    top = [p.name for p in pkg.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= UNITALKER_MAX_TOP_MODULES, top
    subs = [p for p in pkg.iterdir() if (p / "__init__.py").is_file()]
    assert 3 <= len(subs) <= 8, [p.name for p in subs]
    for sub in subs:
        mods = [p.name for p in sub.glob("*.py") if p.name != "__init__.py"]
        assert len(mods) <= UNITALKER_MAX_SUB_MODULES, (sub.name, mods)
