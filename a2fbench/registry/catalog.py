"""The registry: every manifest under ``manifests/`` loaded, validated and looked up by name.

Takes: the manifests folder (next to the package, or ``$A2FBENCH_MANIFESTS``). Gives: :func:`get_spec` by id or
alias, :func:`resolve` for ``D0..D7`` / ``D0,D3`` / ``vocaset`` (a miss answers with did-you-mean),
:func:`get_space`, and the channel names of parameter spaces.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from ..errors import SpecError, UnknownNameError
from .schema import DatasetSpec, Space


def manifests_dir() -> Path:
    env = os.environ.get("A2FBENCH_MANIFESTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent  # the a2fbench package
    for cand in (here / "_manifests", here.parent / "manifests"):
        if cand.is_dir():
            return cand
    raise SpecError(f"expected the manifests folder next to the package ({here.parent / 'manifests'}), found none; "
                    "reinstall a2fbench or set A2FBENCH_MANIFESTS")


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path) -> Any:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: expected valid YAML, found a syntax error ({e}); fix the manifest") from None


def _fmt_validation(path: Path, e: ValidationError) -> str:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{path.name}: invalid manifest field '{loc}': {first['msg']} ({e.error_count()} problem(s)); fix the manifest"


@functools.lru_cache(maxsize=4)
def _load_all(root: str) -> tuple[dict[str, DatasetSpec], dict[str, Space]]:
    d = Path(root)
    raw_spaces = _read_yaml(d / "spaces.yaml") or {}
    spaces: dict[str, Space] = {}
    for name, body in raw_spaces.items():
        try:
            spaces[name] = Space(name=name, **body)
        except ValidationError as e:
            raise SpecError(_fmt_validation(d / "spaces.yaml", e)) from None
    defaults = _read_yaml(d / "_defaults.yaml") or {}
    specs: dict[str, DatasetSpec] = {}
    for p in sorted(d.glob("D*.yaml")):
        body = _read_yaml(p) or {}
        try:
            spec = DatasetSpec(**_deep_merge(defaults, body))
        except ValidationError as e:
            raise SpecError(_fmt_validation(p, e)) from None
        if spec.space not in spaces:
            raise SpecError(f"{p.name}: space {spec.space!r} is not declared in spaces.yaml (known: {sorted(spaces)})")
        if spec.id in specs:
            raise SpecError(f"{p.name}: dataset id {spec.id} is declared twice")
        specs[spec.id] = spec
    _check_aliases(specs)
    return dict(sorted(specs.items(), key=lambda kv: kv[1].number)), spaces


def _check_aliases(specs: dict[str, DatasetSpec]) -> None:
    seen: dict[str, str] = {}
    for s in specs.values():
        for a in (s.id, *s.aliases):
            k = a.lower()
            if k in seen and seen[k] != s.id:
                raise SpecError(f"alias {a!r} is used by both {seen[k]} and {s.id}; make it unique")
            seen[k] = s.id


def all_specs() -> list[DatasetSpec]:
    return list(_load_all(str(manifests_dir()))[0].values())


def all_spaces() -> dict[str, Space]:
    return dict(_load_all(str(manifests_dir()))[1])


def get_space(name: str) -> Space:
    spaces = all_spaces()
    if name not in spaces:
        raise UnknownNameError(f"unknown output space {name!r}{did_you_mean(name, spaces)}; known: {', '.join(spaces)}")
    return spaces[name]


def did_you_mean(name: str, options: Any) -> str:
    """' (did you mean 'X'?)' for the closest of ``options`` to ``name`` (case-insensitive), or ''."""
    lower = {str(o).lower(): str(o) for o in options}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def get_spec(name: str) -> DatasetSpec:
    """One dataset by id or alias (case-insensitive)."""
    specs = _load_all(str(manifests_dir()))[0]
    key = name.strip().lower()
    for s in specs.values():
        if key == s.id.lower() or key in (a.lower() for a in s.aliases):
            return s
    names = [n for s in specs.values() for n in (s.id, *s.aliases)]
    raise UnknownNameError(
        f"unknown dataset {name!r}{did_you_mean(name, names)}; expected one of {', '.join(specs)} "
        f"or an alias ({', '.join(a for s in specs.values() for a in s.aliases)}); see `a2fbench list`"
    )


def resolve(arg: str | list[str] | tuple[str, ...]) -> list[DatasetSpec]:
    """Resolve ``"D0..D7"``, ``"D0,D3"``, ``"vocaset"`` (or a list of such) to specs in registry order.

    >>> [s.id for s in resolve("D0..D2,hdtf")]
    ['D0', 'D1', 'D2', 'D3']
    """
    parts = [arg] if isinstance(arg, str) else list(arg)
    wanted: list[DatasetSpec] = []
    for part in parts:
        for tok in str(part).split(","):
            tok = tok.strip()
            if not tok:
                continue
            if ".." in tok:
                a, b = (get_spec(x) for x in tok.split("..", 1))
                lo, hi = sorted((a.number, b.number))
                wanted += [s for s in all_specs() if lo <= s.number <= hi]
            else:
                wanted.append(get_spec(tok))
    if not wanted:
        raise UnknownNameError("expected at least one dataset (e.g. D0..D7, D1,D3 or vocaset), found none")
    order = {s.id: s.number for s in wanted}
    return [get_spec(i) for i in sorted(order, key=order.get)]


def space_channels(space: Space) -> Optional[list[str]]:
    """Channel names of a parameter space, in order (ARKit), resolving ``channels_from``/``drop_channels``."""
    if space.channels is not None:
        return list(space.channels)
    if space.channels_from:
        base = space_channels(get_space(space.channels_from)) or []
        return [c for c in base if c not in space.drop_channels]
    return None


def match_channels(channels: list[str], patterns: tuple[str, ...]) -> list[int]:
    """Indices of the channels matching any glob pattern (``'mouth*'``)."""
    return [i for i, c in enumerate(channels) if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
