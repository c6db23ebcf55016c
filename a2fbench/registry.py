"""The dataset registry: one YAML manifest per dataset under ``manifests/``, validated by a strict schema.

A dataset is data, never a branch in code: everything ``prepare``, ``synth``, ``download`` and ``evaluate``
need to know about D0..D7 (layouts, naming, splits, regions, sources, units) is read from its manifest.
Unknown keys are errors. Names resolve from ids, aliases, comma lists and ranges (``D0..D7``, ``D0,D3``,
``vocaset``); a miss answers with did-you-mean.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SpecError, UnknownNameError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- spaces
class Space(_Strict):
    """An output space: what a motion vector means and how it becomes vertices."""

    name: str
    kind: Literal["vertices", "blendshape", "flame"]
    description: str = ""
    n_vertices: Optional[int] = None
    n_params: Optional[int] = None
    basis_file: Optional[str] = None
    model_file: Optional[str] = None
    channels: Optional[tuple[str, ...]] = None
    channels_from: Optional[str] = None
    drop_channels: tuple[str, ...] = ()
    layout: Optional[dict[str, tuple[int, int]]] = None

    @property
    def is_vertex(self) -> bool:
        return self.kind == "vertices"

    @property
    def dim(self) -> int:
        """Width D of one motion frame: 3V for vertex spaces, P for parameter spaces."""
        if self.is_vertex:
            assert self.n_vertices is not None
            return 3 * self.n_vertices
        assert self.n_params is not None
        return self.n_params

    @model_validator(mode="after")
    def _check(self) -> "Space":
        if self.kind == "vertices" and not self.n_vertices:
            raise ValueError("a vertex space needs n_vertices")
        if self.kind != "vertices" and not self.n_params:
            raise ValueError("a parameter space needs n_params")
        return self


# ------------------------------------------------------------------------------------------- datasets
class FileEntry(_Strict):
    path: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    size: Optional[int] = None
    required: bool = True
    count: Optional[int] = None
    alternatives: tuple[str, ...] = ()  # other paths that satisfy this entry (e.g. flame.npz for generic_model.pkl)
    note: Optional[str] = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v

    @property
    def is_glob(self) -> bool:
        return any(c in self.path for c in "*?[")

    @field_validator("path")
    @classmethod
    def _relpath(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("file paths are relative to RAW/<id>/ and may not leave it")
        return v


class Archive(_Strict):
    """An archive the user may place instead of its unpacked files; ``download`` unpacks it safely."""

    file: str  # looked up in RAW/<id>/ first, then in RAW/ (a release shared by several datasets)
    subdir: Optional[str] = None  # take only the members below a folder of this name (anywhere in the paths)
    note: Optional[str] = None

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("archive.file must be a plain relative name")
        return v


class Source(_Strict):
    name: str
    kind: Literal["url", "manual"]
    homepage: Optional[str] = None
    licence: str
    instructions: Optional[str] = None
    files: tuple[FileEntry, ...] = ()
    archive: Optional[Archive] = None

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if self.kind == "url":
            for f in self.files:
                if not f.url or not f.sha256:
                    raise ValueError(f"url source file {f.path} needs url and sha256")
        elif not self.instructions:
            raise ValueError("a manual source needs instructions")
        return self


class Naming(_Strict):
    pattern: str
    note: Optional[str] = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        rx = re.compile(v)
        if "subject" not in rx.groupindex:
            raise ValueError("naming.pattern needs a (?P<subject>...) group")
        return v


class SplitSet(_Strict):
    subjects: Union[Literal["all"], tuple[str, ...]]
    sentences: Optional[tuple[int, int]] = None


class Splits(_Strict):
    rule: Literal["subject_sentence", "subject_hash", "release_json"]
    source: str = ""
    defined_by_a2fbench: bool = False
    sets: dict[str, SplitSet] = Field(default_factory=dict)
    fractions: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "Splits":
        if self.rule == "subject_sentence" and not self.sets:
            raise ValueError("rule subject_sentence needs sets")
        if self.rule == "subject_hash" and abs(sum(self.fractions.values()) - 1) > 1e-9:
            raise ValueError("rule subject_hash needs fractions summing to 1")
        return self


class RegionSource(_Strict):
    file: str
    format: Literal["index_list", "pickle_dict", "weights", "index_npy", "basis_channels"]
    keys: tuple[str, ...] = ()
    threshold: Optional[float] = None
    channels: tuple[str, ...] = ()


class RegionSet(_Strict):
    lips: RegionSource
    upper: RegionSource


class Regions(_Strict):
    default: str
    note: Optional[str] = None
    sets: dict[str, RegionSet]

    @model_validator(mode="after")
    def _check(self) -> "Regions":
        if self.default not in self.sets:
            raise ValueError(f"regions.default {self.default!r} is not one of {sorted(self.sets)}")
        return self


class UnitalkerInfo(_Strict):
    dirname: str
    scale: float
    duplicate: int
    identities: int


class SynthSize(_Strict):
    sentences_per_split: Optional[int] = None
    subjects_per_split: Union[int, dict[str, int], None] = None
    subjects: Optional[int] = None
    clips_per_subject: Optional[int] = None
    sequences: Optional[int] = None  # total clips, spread over the subjects (overrides clips_per_subject)
    seconds: Optional[tuple[float, float]] = None


class SynthSpec(_Strict):
    audio_rate: int
    audio_dtype: Literal["float", "int16"] = "float"
    audio_format: Literal["wav", "npy"] = "wav"
    coord_scale: float = 1.0
    seconds: Union[tuple[float, float], dict[str, tuple[float, float]]] = (3.0, 6.0)
    subject_format: Optional[str] = None
    clip_format: Optional[str] = None
    clips_per_subject: Optional[int] = None
    tiny: SynthSize = SynthSize()
    small: SynthSize = SynthSize()
    full: SynthSize = SynthSize()


class Filters(_Strict):
    min_duration_s: float = 0.5
    max_av_mismatch_s: float = 0.5


class Evaluation(_Strict):
    split: str = "test"
    length_policy: Literal["truncate_pred_only", "truncate_both"] = "truncate_pred_only"


Layout = Literal["vertices_npy", "vocaset_release", "clip_pairs", "unitalker_release"]


class DatasetSpec(_Strict):
    """One dataset manifest (see ``docs/datasets.md`` for every field)."""

    id: str
    aliases: tuple[str, ...] = ()
    name: str
    version: int
    space: str
    fps_native: float
    fps: float
    fps_note: Optional[str] = None
    audio_rate: int = 16000
    units: str
    vertex_units: Optional[str] = None
    dtype: Literal["float32", "float64"]
    dtypes_accepted: Optional[tuple[Literal["float32", "float64"], ...]] = None
    dtype_note: Optional[str] = None
    display: dict[str, float]
    display_note: Optional[str] = None
    hours: float
    hours_note: Optional[str] = None
    licence: str
    citation: str
    homepage: str
    layouts: tuple[Layout, ...]
    naming: Optional[Naming] = None
    subjects: Optional[tuple[str, ...]] = None
    n_subjects: Optional[int] = None
    subjects_note: Optional[str] = None
    template: Literal["file", "zeros"] = "file"
    template_note: Optional[str] = None
    splits: Splits
    regions: Regions
    sources: tuple[Source, ...]
    unitalker: UnitalkerInfo
    synth: SynthSpec
    filters: Filters = Filters()
    evaluation: Evaluation = Evaluation()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"D\d+", v):
            raise ValueError("id must look like D0, D1, ...")
        return v

    @model_validator(mode="after")
    def _check(self) -> "DatasetSpec":
        if self.subjects is None and self.n_subjects is None:
            raise ValueError("give subjects or n_subjects")
        if self.splits.rule == "subject_sentence" and self.naming is None:
            raise ValueError("rule subject_sentence needs naming.pattern")
        if self.splits.rule == "release_json" and "unitalker_release" not in self.layouts:
            raise ValueError("rule release_json needs the unitalker_release layout")
        if not self.layouts:
            raise ValueError("layouts needs at least one layout")
        if self.dtypes_accepted is not None and self.dtype not in self.dtypes_accepted:
            raise ValueError(f"dtype {self.dtype} must be one of dtypes_accepted {list(self.dtypes_accepted)}")
        if self.splits.defined_by_a2fbench is False and self.splits.rule == "subject_hash":
            raise ValueError("rule subject_hash is a split A2F-Bench sets itself: say defined_by_a2fbench: true")
        if self.subjects is not None:
            known = set(self.subjects)
            for name, s in self.splits.sets.items():
                if s.subjects != "all":
                    unknown = set(s.subjects) - known
                    if unknown:
                        raise ValueError(f"split {name} names unknown subjects {sorted(unknown)}")
        return self

    # ---- derived facts
    @property
    def number(self) -> int:
        return int(self.id[1:])

    @property
    def space_spec(self) -> Space:
        return get_space(self.space)

    @property
    def subject_count(self) -> int:
        return len(self.subjects) if self.subjects is not None else int(self.n_subjects or 0)

    @property
    def split_names(self) -> list[str]:
        if self.splits.rule == "subject_sentence":
            return list(self.splits.sets)
        if self.splits.rule == "subject_hash":
            return list(self.splits.fractions)
        return ["train", "val", "test"]

    @property
    def accepted_dtypes(self) -> tuple[str, ...]:
        """Motion dtypes ``prepare`` accepts (``dtypes_accepted``, default the source's ``dtype`` only)."""
        return tuple(self.dtypes_accepted or (self.dtype,))

    @property
    def decimation(self) -> Optional[int]:
        """Whole-number ratio native/benchmark fps (``[::k]``), or None when time-based resampling is needed."""
        r = self.fps_native / self.fps
        k = round(r)
        return k if abs(r - k) < 1e-9 and k >= 1 else None

    def files(self) -> list[FileEntry]:
        return [f for s in self.sources for f in s.files]

    def parse_name(self, seq_id: str) -> Optional[dict[str, str]]:
        """Split a sequence id into its named parts (subject, sentence, ...) with the manifest pattern."""
        if self.naming is None:
            return None
        m = re.fullmatch(self.naming.pattern, seq_id)
        return m.groupdict() if m else None


# ---------------------------------------------------------------------------------------- loading
def manifests_dir() -> Path:
    env = os.environ.get("A2FBENCH_MANIFESTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
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
        raise UnknownNameError(f"unknown output space {name!r}{_did_you_mean(name, spaces)}; known: {', '.join(spaces)}")
    return spaces[name]


def _did_you_mean(name: str, options: Any) -> str:
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
        f"unknown dataset {name!r}{_did_you_mean(name, names)}; expected one of {', '.join(specs)} "
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
