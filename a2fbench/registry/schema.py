"""The manifest schema: what one dataset manifest (``manifests/D*.yaml``) and one output space
(``manifests/spaces.yaml``) may say, as strict pydantic models. Unknown keys are errors.

Takes: parsed YAML. Gives: :class:`DatasetSpec` and :class:`Space` objects (frozen). Loading and name
resolution live in :mod:`.catalog`; every field is documented in ``docs/datasets.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _leaves_root(v: str) -> bool:
    """Whether a manifest path could point outside the folder it is relative to (absolute, or a ``..`` part)."""
    return v.startswith("/") or ".." in Path(v).parts


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
        if _leaves_root(v):
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
        if _leaves_root(v):
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
    """How sequence ids are built: ``pattern`` with a ``subject`` group (and ``sentence`` for sentence splits).

    ``sentences``: a table sentence name -> number, for datasets whose files name sentences by their text
    (Multiface ``SEN_<text>``; FaceDiffuser's numbering). Without it the ``sentence`` group is the number.
    """

    pattern: str
    note: Optional[str] = None
    sentences: Optional[dict[str, int]] = None
    sentences_source: Optional[str] = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        rx = re.compile(v)
        if "subject" not in rx.groupindex:
            raise ValueError("naming.pattern needs a (?P<subject>...) group")
        return v

    @field_validator("sentences")
    @classmethod
    def _table(cls, v: Optional[dict[str, int]]) -> Optional[dict[str, int]]:
        if v is not None and len(set(v.values())) != len(v):
            raise ValueError("naming.sentences must give every sentence its own number")
        return v


class SplitSet(_Strict):
    subjects: Union[Literal["all"], tuple[str, ...]]
    sentences: Optional[tuple[int, int]] = None


class DerivedSplit(_Strict):
    """A split cut from another one: the sequences of ``of`` whose subject is number ``subject_numbers`` (1-based)
    in the sorted list of the dataset's subjects (e.g. FaceDiffuser's Multiface test subjects 1, 4, 5, 8)."""

    of: str
    subject_numbers: tuple[int, ...]
    source: str = ""


class Splits(_Strict):
    rule: Literal["subject_sentence", "subject_hash", "release_json"]
    source: str = ""
    defined_by_a2fbench: bool = False
    sets: dict[str, SplitSet] = Field(default_factory=dict)
    fractions: dict[str, float] = Field(default_factory=dict)
    derived: dict[str, DerivedSplit] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "Splits":
        if self.rule == "subject_sentence" and not self.sets:
            raise ValueError("rule subject_sentence needs sets")
        if self.rule == "subject_hash" and abs(sum(self.fractions.values()) - 1) > 1e-9:
            raise ValueError("rule subject_hash needs fractions summing to 1")
        return self


class RegionSource(_Strict):
    """Where one region's indices come from: ``file`` (or the first of ``also`` that exists, e.g. the same name
    under ``resources/binary_resources/`` as UniTalker's resources.zip unpacks) in ``format``."""

    file: str
    format: Literal["index_list", "pickle_dict", "weights", "index_npy", "basis_channels"]
    also: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    threshold: Optional[float] = None
    channels: tuple[str, ...] = ()


class RegionSet(_Strict):
    lips: RegionSource
    upper: RegionSource


class MouthPair(_Strict):
    """The two vertices whose distance is the mouth opening (``evaluate --metrics mtm,lip-lag,silence-opening``):
    the upper and the lower lip's midline vertex, where they meet. A fact of the mesh, so one per dataset (every
    region set of the mesh shares it); ``source`` says where it comes from, ``verified: false`` marks a pair
    chosen by A2F-Bench that no public script uses yet."""

    upper: int = Field(ge=0)
    lower: int = Field(ge=0)
    source: str
    verified: bool = False
    note: Optional[str] = None


class Regions(_Strict):
    default: str
    note: Optional[str] = None
    sets: dict[str, RegionSet]
    mouth_pair: Optional[MouthPair] = None

    @model_validator(mode="after")
    def _check(self) -> "Regions":
        if self.default not in self.sets:
            raise ValueError(f"regions.default {self.default!r} is not one of {sorted(self.sets)}")
        return self


class MeshSource(_Strict):
    """The dataset's topology file in RAW/<id>/ (``.ply`` or ``.obj``): ``prepare`` keeps its faces in the
    store (``mesh/faces``) for rendering and mesh export. One of the manifest's source files."""

    file: str
    note: Optional[str] = None

    @field_validator("file")
    @classmethod
    def _mesh_file(cls, v: str) -> str:
        if _leaves_root(v) or Path(v).suffix.lower() not in (".ply", ".obj"):
            raise ValueError("mesh.file must be a relative .ply or .obj path inside RAW/<id>/")
        return v


class UnitalkerInfo(_Strict):
    """How the UniTalker release holds this dataset: facts of the release that a2fbench itself reads (the folder
    name in ``unitalker_data_release_V1/``, the coordinate scale its ``pca.npz`` and in-loop metric use, the
    number of rows the dataset takes in the 935-row identity table). Training recipe choices (how often each
    dataset is repeated per epoch) belong to ``unitalker``'s configs, not here (docs/architecture.md)."""

    dirname: str
    scale: float
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


class KnownMissing(_Strict):
    """Sequences a public source reports absent from the distributed corpus (``a2fbench doctor`` lists them
    as known-missing, not as damage), and that source."""

    source: str
    ids: tuple[str, ...] = ()


class Filters(_Strict):
    min_duration_s: float = 0.5
    max_av_mismatch_s: float = 0.5


class Evaluation(_Strict):
    split: str = "test"
    length_policy: Literal["truncate_pred_only", "truncate_both"] = "truncate_pred_only"


class CoordinateRange(_Strict):
    min: tuple[float, float, float]
    max: tuple[float, float, float]


class FaceDiffuserInfo(_Strict):
    """How FaceDiffuser preprocesses this dataset (protocol ``facediffuser_multiface``): its per-axis min/max
    normalisation of every coordinate to [-1, 1] and the region set its metric script uses."""

    source: str = ""
    normalise: CoordinateRange
    regions: str


Layout = Literal["vertices_npy", "vocaset_release", "clip_pairs", "unitalker_release", "biwi_raw"]


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
    mesh: Optional[MeshSource] = None
    splits: Splits
    regions: Regions
    sources: tuple[Source, ...]
    unitalker: UnitalkerInfo
    synth: SynthSpec
    filters: Filters = Filters()
    known_missing: Optional[KnownMissing] = None
    evaluation: Evaluation = Evaluation()
    facediffuser: Optional[FaceDiffuserInfo] = None

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
        if self.mesh is not None and self.mesh.file not in {f.path for f in self.files()}:
            raise ValueError(f"mesh.file {self.mesh.file!r} must be one of the manifest's source files")
        if self.dtypes_accepted is not None and self.dtype not in self.dtypes_accepted:
            raise ValueError(f"dtype {self.dtype} must be one of dtypes_accepted {list(self.dtypes_accepted)}")
        if self.splits.defined_by_a2fbench is False and self.splits.rule == "subject_hash":
            raise ValueError("rule subject_hash is a split A2F-Bench sets itself: say defined_by_a2fbench: true")
        if self.facediffuser is not None and self.facediffuser.regions not in self.regions.sets:
            raise ValueError(f"facediffuser.regions {self.facediffuser.regions!r} is not one of {sorted(self.regions.sets)}")
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

    def sentence_number(self, seq_id: str) -> Optional[int]:
        """The sentence number of a sequence id: the ``sentence`` group, through ``naming.sentences`` when the
        manifest has that table (an unknown sentence name gives None)."""
        parts = self.parse_name(seq_id) or {}
        sent = parts.get("sentence")
        if not sent:
            return None
        table = self.naming.sentences if self.naming else None
        if table is not None:
            return table.get(sent)
        return int(sent) if sent.isdigit() else None

    def sentence_name(self, number: int) -> Optional[str]:
        """The inverse of the sentence table (None without one or for a number not in it)."""
        table = self.naming.sentences if self.naming else None
        return next((k for k, v in table.items() if v == number), None) if table else None
