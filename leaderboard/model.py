"""What an entry carries besides its scores: method metadata, and the reported (claimed) rows.

Every string here is user-supplied and ends up in a terminal, a JSON answer and an HTML page. The rules:
no control characters (a name is one printable line; this also keeps ANSI escapes out of ``show``), bounded
length, and URLs only with an ``http``/``https`` scheme. Nothing is HTML-escaped here: escaping happens where
a string meets HTML (``render.py``), so the stored text is exactly what the user typed, ``<script>`` included.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from a2fbench.errors import A2FBenchError, UnknownNameError
from a2fbench.registry import get_spec
from a2fbench.scoring.metrics.table import NAMES
from a2fbench.util.fsutil import JSON_MAX_BYTES, JSON_MAX_DEPTH, json_depth, read_json
from a2fbench.util.guard import show

#: Metrics shown as columns, in order (the metric table's). Reported rows may only use these names.
METRICS = NAMES
MAX_NAME = 200
MAX_TEXT = 2000


class LeaderboardError(A2FBenchError):
    """A submission, a reported-rows file or a database that the leaderboard cannot accept."""


def clean_text(value: Any, field: str, max_len: int = MAX_TEXT, *, required: bool = False) -> Optional[str]:
    """Strip a user string; refuse control characters and over-long text (one-line messages)."""
    if value is None:
        if required:
            raise ValueError(f"{field} is required")
        return None
    s = str(value).strip()
    if not s:
        if required:
            raise ValueError(f"{field} is empty")
        return None
    bad = [c for c in s if unicodedata.category(c) == "Cc"]
    if bad:
        raise ValueError(f"{field} contains a control character ({ascii(bad[0])}); use printable text on one line")
    if len(s) > max_len:
        raise ValueError(f"{field} is {len(s)} characters long; at most {max_len} are accepted")
    return s


def clean_url(value: Any, field: str = "code_url") -> Optional[str]:
    s = clean_text(value, field, 500)
    if s is None:
        return None
    if not re.match(r"^https?://[^\s/]+", s, flags=re.I):
        raise ValueError(f"{field} must be an http:// or https:// URL, found {s[:60]!r}")
    return s


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def parse_params(value: Any) -> Optional[int]:
    """``96050000``, ``96.05M``, ``317e6``, ``1.2B`` -> an int count of parameters."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgG]?)\s*", str(value))
        if not m:
            raise ValueError(f"params must be a count such as 96050000, 96.05M or 1.2B, found {value!r}")
        n = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"params must be a non-negative count, found {value!r}")
    return int(round(n))


def parse_seconds(value: Any) -> Optional[float]:
    """``0.0175``, ``17.5ms``, ``2.7s`` -> seconds (float)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        s = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ms|s)?\s*", str(value))
        if not m:
            raise ValueError(f"inference time must be seconds such as 0.0175, 17.5ms or 2.7s, found {value!r}")
        s = float(m.group(1)) * (1e-3 if m.group(2) == "ms" else 1.0)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"inference time must be a non-negative number of seconds, found {value!r}")
    return s


class MethodMeta(BaseModel):
    """Method metadata stored with an entry (all optional except the name)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    version: Optional[str] = None
    params: Optional[int] = None
    inference_s: Optional[float] = None     # wall seconds to animate a 10.0 s clip (docs/leaderboard.md)
    inference_device: Optional[str] = None
    training_data: Optional[str] = None
    code_url: Optional[str] = None
    trained_on_test_ids: Optional[bool] = None

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> str:
        return clean_text(v, "method name", MAX_NAME, required=True)  # type: ignore[return-value]

    @field_validator("version", "inference_device", mode="before")
    @classmethod
    def _short(cls, v: Any, info: Any) -> Optional[str]:
        return clean_text(v, info.field_name, MAX_NAME)

    @field_validator("training_data", mode="before")
    @classmethod
    def _long(cls, v: Any) -> Optional[str]:
        return clean_text(v, "training_data")

    @field_validator("code_url", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Optional[str]:
        return clean_url(v)

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v: Any) -> Optional[int]:
        return parse_params(v)

    @field_validator("inference_s", mode="before")
    @classmethod
    def _secs(cls, v: Any) -> Optional[float]:
        return parse_seconds(v)


class ReportedMetric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float
    unit: str = "as printed; unit unverified"
    ci95: Optional[tuple[float, float]] = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v

    @field_validator("unit", mode="before")
    @classmethod
    def _unit(cls, v: Any) -> str:
        return clean_text(v, "unit", MAX_NAME, required=True)  # type: ignore[return-value]


class ReportedEntry(MethodMeta):
    """A number claimed somewhere (a paper, an issue thread), kept apart from what we measured."""

    dataset: str
    split: str
    protocol: str
    metrics: dict[str, ReportedMetric]
    citation: str
    source_url: Optional[str] = None
    source_type: str = "paper"
    note: str = "protocol and units as claimed by the source; not verified by A2F-Bench"

    @field_validator("split", "protocol", "source_type", mode="before")
    @classmethod
    def _req_short(cls, v: Any, info: Any) -> str:
        return clean_text(v, info.field_name, MAX_NAME, required=True)  # type: ignore[return-value]

    @field_validator("citation", "note", mode="before")
    @classmethod
    def _req_long(cls, v: Any, info: Any) -> str:
        return clean_text(v, info.field_name, MAX_TEXT, required=True)  # type: ignore[return-value]

    @field_validator("source_url", mode="before")
    @classmethod
    def _surl(cls, v: Any) -> Optional[str]:
        return clean_url(v, "source_url")

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v: Any) -> str:
        s = clean_text(v, "dataset", MAX_NAME, required=True)
        try:
            return get_spec(s).id  # type: ignore[arg-type]
        except UnknownNameError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _metrics(self) -> "ReportedEntry":
        if not self.metrics:
            raise ValueError("metrics is empty; give at least one of " + ", ".join(METRICS))
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; expected one of {', '.join(METRICS)}")
        return self

    def fingerprint(self) -> str:
        """Content fingerprint: re-adding the same claim is idempotent."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "reported:sha256:" + hashlib.sha256(body.encode()).hexdigest()


def _fmt_validation(source: str, e: ValidationError, index: Optional[int] = None) -> str:
    first = e.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    where = f"entry {index}" if index is not None else "entry"
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{source}: {where}, field '{loc}': {msg}"


def method_meta(**kwargs: Any) -> MethodMeta:
    """Build :class:`MethodMeta` from CLI options, turning validation errors into one-line user errors."""
    try:
        return MethodMeta(**kwargs)
    except ValidationError as e:
        first = e.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise LeaderboardError(f"invalid method metadata '{'.'.join(map(str, first['loc']))}': {msg}") from None


def load_reported(path: str | Path) -> list[ReportedEntry]:
    """Read reported rows from YAML or JSON: a list of entries, or ``{"reported": [...]}``."""
    p = Path(path)
    what = "a YAML/JSON file of reported rows"
    try:
        if p.suffix.lower() == ".json":
            doc = read_json(p, what=what, error=LeaderboardError)
        else:  # the same limits as every JSON a user hands in
            if p.stat().st_size > JSON_MAX_BYTES:
                raise LeaderboardError(f"{show(p)}: expected {what} of at most {JSON_MAX_BYTES >> 20} MiB, found "
                                       f"{p.stat().st_size / 2**20:.0f} MiB")
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
            if json_depth(doc) > JSON_MAX_DEPTH:
                raise RecursionError
    except FileNotFoundError:
        raise LeaderboardError(f"{p}: expected {what}, found nothing") from None
    except RecursionError:
        raise LeaderboardError(f"{show(p)}: expected {what} nested at most {JSON_MAX_DEPTH} levels deep, found "
                               "deeper nesting") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LeaderboardError(f"{p}: expected YAML/JSON, found a malformed file ({' '.join(str(e).split())[:200]})") from None
    rows = doc.get("reported") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not rows:
        raise LeaderboardError(f"{p}: expected a list of reported rows (or a mapping with key 'reported'), "
                               f"found {type(rows).__name__}; see docs/leaderboard.md for the format")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LeaderboardError(f"{p}: entry {i} is a {type(row).__name__}, expected a mapping")
        try:
            out.append(ReportedEntry(**row))
        except ValidationError as e:
            raise LeaderboardError(_fmt_validation(str(p), e, i) + "; see docs/leaderboard.md") from None
    return out


def seed_path() -> Path:
    """The reported rows shipped with A2F-Bench (facts we can cite; see docs/leaderboard.md)."""
    return Path(__file__).with_name("reported.yaml")
