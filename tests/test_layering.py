"""The dependency rule: data flows one way, a2fbench never imports unitalker or leaderboard."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_a2fbench_never_imports_upper_layers():
    bad = []
    for p in (REPO / "a2fbench").rglob("*.py"):
        hit = _imports(p) & {"unitalker", "leaderboard"}
        if hit:
            bad.append(f"{p.relative_to(REPO)} imports {sorted(hit)}")
    assert not bad, bad


def test_leaderboard_never_imports_unitalker():
    bad = [str(p) for p in (REPO / "leaderboard").rglob("*.py") if "unitalker" in _imports(p)]
    assert not bad, bad


def test_unitalker_never_imports_leaderboard():
    bad = [str(p) for p in (REPO / "unitalker").rglob("*.py") if "leaderboard" in _imports(p)]
    assert not bad, bad
