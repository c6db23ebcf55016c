"""Configuration: shipped defaults, then a YAML file (a shipped name or a path), then ``key=value`` overrides.

>>> cfg = load_config("tiny", ["train.epochs=3", "model.decoder.hidden=32"])
>>> cfg["train"]["epochs"], cfg["model"]["decoder"]["hidden"], cfg["train"]["lr"]
(3, 32, 0.002)

Every key must exist in ``configs/defaults.yaml`` (a typo is an error with did-you-mean), except under
:data:`FREE_FORM`: ``model.encoder.arch`` passes keys through to the transformers model config, and
``data.duplicate`` takes any dataset id (``data.duplicate={D5: 2}``; a mapping merges with the default one).
Values are parsed as YAML (``train.lr=1e-4``, ``data.duplicate=[10,5,4,1,1,1,1,1]``) and must have the
default's type.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from a2fbench.errors import ConfigError
from a2fbench.registry import all_specs, did_you_mean

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: sub-trees whose keys are not checked against the defaults, not flattened, not filled in by :func:`with_defaults`
#: (``data.duplicate``: its keys are dataset ids and its values positive integers, both checked by :func:`validate`)
FREE_FORM = ("model.encoder.arch", "data.duplicate")


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``tiny``, ``unitalker-b``, ``unitalker-l``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "defaults")


def _read(path: Path) -> dict:
    try:
        with open(path) as f:
            body = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: expected a readable YAML config, found {e.strerror}; check the path") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: expected valid YAML, found a syntax error ({str(e).splitlines()[0]}); "
                          "fix the file") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of config keys, found {type(body).__name__}")
    return body


def defaults() -> dict:
    return _read(CONFIG_DIR / "defaults.yaml")


def resolve_config_file(name_or_path: str | os.PathLike) -> Path:
    """A shipped config name (``tiny``) or a YAML path."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.suffix in (".yaml", ".yml") or os.sep in s or p.is_file():
        if not p.is_file():
            raise ConfigError(f"expected a config file at {p}, found nothing; give a path to a YAML file or one of "
                              f"the shipped names: {', '.join(shipped_configs())}")
        return p
    cand = CONFIG_DIR / f"{s}.yaml"
    if s == "defaults" or not cand.is_file():
        close = difflib.get_close_matches(s, shipped_configs(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config {s!r}{hint}; expected a YAML path or one of {', '.join(shipped_configs())}")
    return cand


def free_form(path: str) -> bool:
    """Whether a dotted config path is (inside) a :data:`FREE_FORM` sub-tree."""
    return any(path == f or path.startswith(f + ".") for f in FREE_FORM)


def _check_type(path: str, default: Any, value: Any) -> Any:
    if default is None or value is None or free_form(path):
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path}: expected true or false, found {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {path}: expected a number, found {value!r}")
        return float(value) if isinstance(default, float) else (value if isinstance(value, int) else value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {path}: expected a mapping, found {value!r}")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"config key {path}: expected a string, found {value!r}")
    return value


def merge(base: dict, over: dict, prefix: str = "") -> dict:
    """Deep-merge ``over`` into a copy of ``base``, rejecting keys ``base`` does not have."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        path = f"{prefix}{k}"
        if k not in out and not free_form(prefix.rstrip(".")):
            close = difflib.get_close_matches(str(k), [str(x) for x in out], n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            where = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"unknown config key {path!r}{hint}; known keys under {where}: "
                              f"{', '.join(map(str, out))}")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not free_form(path):
            out[k] = merge(out[k], v, path + ".")
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = _check_type(path, out.get(k), v)
    return out


def parse_overrides(items: Iterable[str]) -> dict:
    """``["train.lr=1e-3", "model.pca=false"]`` -> nested dict with YAML-parsed values."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected a key=value override (e.g. train.epochs=5), found {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"expected a dotted key before '=' (e.g. train.lr=1e-4), found {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _looks_float(value):
            value = float(value)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {p}")
        node[parts[-1]] = value
    return out


def _looks_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def with_defaults(cfg: dict, _defaults: dict | None = None, _prefix: str = "") -> dict:
    """A copy of ``cfg`` with the keys added since it was saved (an older checkpoint's config) at their defaults."""
    d = defaults() if _defaults is None else _defaults
    out = copy.deepcopy(cfg)
    for k, v in d.items():
        path = f"{_prefix}{k}"
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out[k], dict) and not free_form(path):
            out[k] = with_defaults(out[k], v, path + ".")
    return out


def load_config(config: str | os.PathLike | None = None, overrides: Iterable[str] = (), *,
                base: dict | None = None) -> dict:
    """Resolve a config: ``base`` (default: the shipped defaults) + file + overrides, validated."""
    cfg = with_defaults(base) if base is not None else defaults()
    if config:
        cfg = merge(cfg, _read(resolve_config_file(config)))
    cfg = merge(cfg, parse_overrides(overrides))
    validate(cfg)
    return cfg


TRAINABLE = ("encoder", "decoder", "identity", "heads")  # parameter groups (``train.trainable``)

_CHOICES = {
    "model.encoder.attention": ("sdpa", "eager"),
    "model.interpolate": ("after_encoder",),
    "model.decoder.type": ("conv", "transformer"),
    "train.amp": ("bf16", "none"),
    "train.lr_schedule": ("constant", "cosine"),
}


#: real-valued keys: (path, lower bound, bound excluded, upper bound or None)
#: train.lr = 0 is allowed (the weights stay as initialised; a test pins the unit handling that way)
_REALS = (("train.lr", 0.0, False, None),
          ("train.lr_final", 0.0, False, None), ("train.grad_clip", 0.0, False, None),
          ("train.pca_weight", 0.0, False, None), ("train.param_weight", 0.0, False, None),
          ("train.flame_param_weight", 0.0, False, None), ("model.decoder.dropout", 0.0, False, 1.0),
          ("data.max_seconds", 0.0, True, None), ("data.min_seconds", 0.0, False, None))


def get(cfg: dict, path: str) -> Any:
    node: Any = cfg
    for p in path.split("."):
        node = node[p]
    return node


def validate(cfg: dict) -> None:
    for path, choices in _CHOICES.items():
        v = get(cfg, path)
        if v not in choices:
            raise ConfigError(f"config key {path}: expected one of {', '.join(choices)}, found {v!r}")
    na = get(cfg, "model.encoder.normalize_audio")
    if na not in ("auto", True, False):
        raise ConfigError(f"config key model.encoder.normalize_audio: expected auto, true or false, found {na!r}")
    for path in ("train.epochs", "train.batch_size", "model.decoder.hidden", "model.decoder.identity_dim",
                 "model.pca_dim", "train.bucket_factor"):
        if int(get(cfg, path)) < 1:
            raise ConfigError(f"config key {path}: expected a positive integer, found {get(cfg, path)!r}")
    for path in ("train.warmup_epochs", "train.checkpoint_every_steps", "train.threads", "data.num_workers"):
        if int(get(cfg, path)) < 0:
            raise ConfigError(f"config key {path}: expected an integer >= 0, found {get(cfg, path)!r}")
    for path in ("model.decoder.layers", "train.keep_checkpoints", "train.val_every_epochs"):
        if int(get(cfg, path)) < 1:
            raise ConfigError(f"config key {path}: expected a positive integer, found {get(cfg, path)!r}")
    if not 0 <= int(get(cfg, "train.seed")) < 2**32:
        raise ConfigError(f"config key train.seed: expected a seed in 0..{2**32 - 1}, found {get(cfg, 'train.seed')!r}")
    if int(get(cfg, "train.lr_warmup_steps")) < 0:
        raise ConfigError(f"config key train.lr_warmup_steps: expected an integer >= 0, found "
                          f"{get(cfg, 'train.lr_warmup_steps')!r}")
    for path, lo, lo_open, hi in _REALS:  # every real number a user can type: finite, in its range
        v = float(get(cfg, path))
        if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)):
            rng = f"{'(' if lo_open else '['}{lo:g}, {'inf)' if hi is None else f'{hi:g}]'}"
            raise ConfigError(f"config key {path}: expected a finite number in {rng}, found {get(cfg, path)!r}")
    p = float(get(cfg, "train.pivot_prob"))
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"config key train.pivot_prob: expected a probability in [0, 1], found {p}")
    f = float(get(cfg, "data.fraction"))
    if not 0.0 < f <= 1.0:
        raise ConfigError(f"config key data.fraction: expected a fraction in (0, 1], found {f}")
    groups = str(get(cfg, "train.trainable")).split(",")
    if groups != ["all"] and (not groups or any(g.strip() not in TRAINABLE for g in groups)):
        raise ConfigError(f"config key train.trainable: expected all or a comma list of {', '.join(TRAINABLE)}, found "
                          f"{get(cfg, 'train.trainable')!r}")
    if get(cfg, "model.identities") not in ("train", "all"):
        raise ConfigError(f"config key model.identities: expected train or all, found {get(cfg, 'model.identities')!r}")
    _validate_duplicate(get(cfg, "data.duplicate"))


def _validate_duplicate(dup: Any) -> None:
    """``data.duplicate`` (free-form): "manifest" (configs before 0.2), a list of positive integers, or a mapping
    dataset id -> positive integer (not a bool: true is no count)."""
    ok = (dup == "manifest" or (isinstance(dup, list) and all(isinstance(x, int) and x >= 1 for x in dup))
          or (isinstance(dup, dict)
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in dup.values())))
    if not ok:
        raise ConfigError(f"config key data.duplicate: expected a mapping dataset -> passes ({{D0: 10, D1: 5}}) or "
                          f"a list of positive integers, one per dataset, found {dup!r}")
    if isinstance(dup, dict):
        ids = [s.id for s in all_specs()]
        for k in dup:
            if k not in ids:
                raise ConfigError(f"unknown config key {f'data.duplicate.{k}'!r}{did_you_mean(str(k), ids)}; "
                                  f"known keys under data.duplicate: the dataset ids {', '.join(ids)}")


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


# The part of the config that fixes the network's shape: two checkpoints are compatible iff these agree.
ARCH_KEYS = ("model.encoder.name", "model.encoder.arch", "model.interpolate", "model.decoder.type",
             "model.decoder.hidden", "model.decoder.identity_dim", "model.decoder.layers",
             "model.decoder.transformer", "model.pca", "model.pca_dim")


def arch_diff(a: dict, b: dict) -> list[str]:
    """Architecture keys on which two configs differ (``path: a -> b``)."""
    out = []
    for k in ARCH_KEYS:
        try:
            va, vb = get(a, k), get(b, k)
        except (KeyError, TypeError):
            out.append(f"{k}: missing")
            continue
        if va != vb:
            out.append(f"{k}: {va!r} -> {vb!r}")
    return out
