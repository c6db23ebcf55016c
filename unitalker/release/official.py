"""The official UniTalker checkpoint layout (X-niper/UniTalker; facts in shared/spec/official-release.md): its key
names beside ours, the architecture a state dict implies (read from tensor shapes only), and the order of its
identity table.

Official keys -> ours:

==================================================================  ==============================================
``audio_encoder.<k>``                                               ``encoder.hf.<k>`` (stock transformers names)
``decoder.learnable_style_emb.weight``                              ``identity.weight``
``decoder.audio_feature_map.*``                                     ``decoder.proj.*``
``decoder.tcn.first_net.conv_layers.<i>.{conv,norm}.*``             ``decoder.blocks.<i>.{conv,norm}.*``
``decoder.tcn.first_net.conv_layers.<i>.residual_layer.0.*``        ``decoder.blocks.<i>.residual.*``
``decoder.transformer_decoder.*`` (``decoder.type: transformer``)   ``decoder.transformer.*``
``decoder.PPE.pe`` (transformer; a fixed encoding)                  not stored (rebuilt from the period)
``out_head_dict.<annotation type>.*``                               ``heads.<space>.linear.*``
(PCA bases: ``pca_layer_dict.*``, removed from released files)      ``heads.<space>.{components,mean}``
==================================================================  ==============================================

The positional convolution's weight norm is spelled ``parametrizations.weight.original0/1`` by current torch and
``weight_g`` / ``weight_v`` by older versions; both are read, and :func:`spell_weight_norm` writes either.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import torch

from a2fbench.errors import ConfigError
from a2fbench.registry import get_spec

from ..model.encoder import KNOWN_ARCH
from ..model.model import periodic_encoding

#: annotation type (the official head name) of each dataset
ANNOT_TYPES = {"D0": "BIWI_23370_vertices", "D1": "FLAME_5023_vertices", "D2": "meshtalk_6172_vertices",
               "D3": "3DETF_blendshape_weight", "D4": "3DETF_blendshape_weight", "D5": "flame_params_from_dadhead",
               "D6": "inhouse_blendshape_weight", "D7": "inhouse_blendshape_weight"}
DATASETS = list(ANNOT_TYPES)  # the official order of the identity table's blocks
PPE_MAX_LEN = 3000  # the official PeriodicPositionalEncoding's max_seq_len
WN_NEW = ("parametrizations.weight.original0", "parametrizations.weight.original1")
WN_OLD = ("weight_g", "weight_v")

_RULES = [  # (our prefix, official prefix); "<i>" is a layer index
    ("encoder.hf.", "audio_encoder."),
    ("identity.weight", "decoder.learnable_style_emb.weight"),
    ("decoder.proj.", "decoder.audio_feature_map."),
    ("decoder.blocks.<i>.residual.", "decoder.tcn.first_net.conv_layers.<i>.residual_layer.0."),
    ("decoder.blocks.<i>.", "decoder.tcn.first_net.conv_layers.<i>."),
    ("decoder.transformer.", "decoder.transformer_decoder."),
]


def _rx(prefix: str) -> re.Pattern:
    return re.compile("^" + re.escape(prefix).replace(re.escape("<i>"), r"(\d+)"))


_TO = [(_rx(a), b) for a, b in _RULES]
_FROM = [(_rx(b), a) for a, b in _RULES]


def _apply(rules: list, key: str) -> Optional[str]:
    for rx, tmpl in rules:
        m = rx.match(key)
        if m:
            head = tmpl.replace("<i>", m.group(1)) if m.groups() else tmpl
            return head + key[m.end():]
    return None


def to_official(key: str, annot_of_space: dict[str, str]) -> Optional[str]:
    """Our state-dict key -> the official one (None: not in official files, e.g. PCA buffers)."""
    if key.startswith("heads."):
        _, space, rest = key.split(".", 2)
        if not rest.startswith("linear."):
            return None
        return f"out_head_dict.{annot_of_space[space]}.{rest[len('linear.'):]}"
    return _apply(_TO, key)


def from_official(key: str, space_of_annot: dict[str, str]) -> Optional[str]:
    """An official key -> ours (None: a key we do not keep, e.g. ``decoder.PPE.pe``)."""
    if key.startswith("out_head_dict."):
        _, annot, rest = key.split(".", 2)
        return f"heads.{space_of_annot[annot]}.linear.{rest}" if annot in space_of_annot else None
    if key == "decoder.PPE.pe":
        return None
    return _apply(_FROM, key)


def weight_norm_spelling(keys: Any) -> str:
    """``parametrizations`` or ``weight_g`` (the spelling of the positional convolution's weight norm)."""
    return "weight_g" if any(k.endswith(".weight_g") for k in keys) else "parametrizations"


def spell_weight_norm(key: str, spelling: str) -> str:
    """A key in the given weight-norm spelling (other keys unchanged)."""
    new, old = (WN_NEW, WN_OLD) if spelling == "weight_g" else (WN_OLD, WN_NEW)
    for a, b in zip(new, old):
        if key.endswith("." + a):
            return key[: -len(a)] + b
    return key


def ppe_buffer(period: int, hidden: int) -> torch.Tensor:
    """The official ``decoder.PPE.pe``: the periodic encoding repeated to cover ``PPE_MAX_LEN`` frames."""
    return periodic_encoding(period, hidden)[None].repeat(1, PPE_MAX_LEN // period + 1, 1)


def ppe_period(pe: torch.Tensor) -> int:
    """The period of a ``decoder.PPE.pe`` buffer (its first repeat of row 0)."""
    rows = pe.reshape(-1, pe.shape[-1])
    for p in range(1, rows.shape[0]):
        if torch.equal(rows[p], rows[0]):
            return p
    return rows.shape[0]


# ------------------------------------------------------------------------------------ architecture
class LayoutError(ConfigError):
    """A state dict that is not a UniTalker checkpoint in the official layout."""


def _need(shapes: dict[str, tuple], key: str) -> tuple:
    if key not in shapes:
        some = ", ".join(sorted(shapes)[:3])
        raise LayoutError(f"expected an official UniTalker state dict with {key!r}, found {len(shapes)} tensors "
                          f"without it (e.g. {some}); pass a UniTalker-B/-L checkpoint (.pt)")
    return shapes[key]


def _count(shapes: dict[str, tuple], rx: str) -> int:
    pat = re.compile(rx)
    return len({m.group(1) for k in shapes for m in [pat.match(k)] if m})


def encoder_config(shapes: dict[str, tuple]) -> tuple[str, dict, bool]:
    """(hub id of the family, transformers config dict, normalise audio) from ``audio_encoder.*`` shapes.

    WavLM (a relative-position embedding in layer 0) -> ``microsoft/wavlm-base-plus``'s settings, wav2vec2 ->
    ``facebook/wav2vec2-large-xlsr-53``'s, with the sizes read from the tensors: width, depth, FF width, conv
    channels and kernels, conv bias, feature-extractor norm, positional conv; WavLM heads and buckets from its
    relative-position embedding, wav2vec2 heads from the width (64 per head, as every published wav2vec2).
    """
    p = "audio_encoder."
    hidden = _need(shapes, p + "masked_spec_embed")[0]
    wavlm = any(k.startswith(p + "encoder.layers.0.attention.rel_attn_embed") for k in shapes)
    name = "microsoft/wavlm-base-plus" if wavlm else "facebook/wav2vec2-large-xlsr-53"
    base = dict(KNOWN_ARCH[name])
    normalize = bool(base.pop("normalize_audio"))
    n_conv = _count(shapes, re.escape(p) + r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight")
    convs = [_need(shapes, f"{p}feature_extractor.conv_layers.{i}.conv.weight") for i in range(n_conv)]
    if n_conv != len(base["conv_stride"]):
        raise LayoutError(f"expected {len(base['conv_stride'])} feature-extractor conv layers ({name}), found {n_conv}")
    layers = _count(shapes, re.escape(p) + r"encoder\.layers\.(\d+)\.")
    pos = [s for k, s in shapes.items() if k.startswith(p + "encoder.pos_conv_embed.conv.")
           and (k.endswith("original1") or k.endswith("weight_v"))]
    if not pos:
        _need(shapes, p + "encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    cfg = dict(base, hidden_size=hidden, num_hidden_layers=layers,
               intermediate_size=_need(shapes, p + "encoder.layers.0.feed_forward.intermediate_dense.weight")[0],
               conv_dim=[int(s[0]) for s in convs], conv_kernel=[int(s[2]) for s in convs],
               conv_bias=f"{p}feature_extractor.conv_layers.0.conv.bias" in shapes,
               feat_extract_norm=("layer" if f"{p}feature_extractor.conv_layers.1.layer_norm.weight" in shapes
                                  else "group"),
               num_conv_pos_embeddings=int(pos[0][2]), num_conv_pos_embedding_groups=int(hidden // pos[0][1]))
    cfg["do_stable_layer_norm"] = cfg["feat_extract_norm"] == "layer"  # as the published large / base models
    if wavlm:
        buckets, heads = _need(shapes, p + "encoder.layers.0.attention.rel_attn_embed.weight")
        cfg.update(num_buckets=int(buckets), num_attention_heads=int(heads))
    else:
        cfg["num_attention_heads"] = max(1, hidden // 64)
    return name, cfg, normalize


def decoder_config(shapes: dict[str, tuple]) -> dict:
    """``model.decoder`` keys implied by the ``decoder.*`` shapes (conv or transformer)."""
    hidden, _ = _need(shapes, "decoder.audio_feature_map.weight")
    n_ids, id_dim = _need(shapes, "decoder.learnable_style_emb.weight")
    if any(k.startswith("decoder.transformer_decoder.") for k in shapes):
        layers = _count(shapes, r"decoder\.transformer_decoder\.layers\.(\d+)\.")
        ff = _need(shapes, "decoder.transformer_decoder.layers.0.linear1.weight")[0]
        return {"type": "transformer", "hidden": int(hidden), "transformer": {"heads": 4, "ff": int(ff),
                "layers": layers, "period": 30}}
    layers = _count(shapes, r"decoder\.tcn\.first_net\.conv_layers\.(\d+)\.conv\.weight")
    if not layers:
        _need(shapes, "decoder.tcn.first_net.conv_layers.0.conv.weight")
    return {"type": "conv", "hidden": int(hidden), "identity_dim": int(id_dim), "layers": layers}


def head_widths(shapes: dict[str, tuple]) -> dict[str, int]:
    """{annotation type: output width} of the ``out_head_dict`` heads."""
    out = {}
    for k, s in shapes.items():
        m = re.match(r"^out_head_dict\.([^.]+)\.weight$", k)
        if m:
            out[m.group(1)] = int(s[0])
    if not out:
        _need(shapes, "out_head_dict.<annotation type>.weight")
    return out


def datasets_for(heads: dict[str, int], n_rows: int, given: Optional[list[str]] = None) -> list[str]:
    """The datasets a checkpoint was trained on: ``given``, or the one choice of datasets with a head each (D3/D4
    share a head, as D6/D7 do) whose subject counts (manifests' ``unitalker.identities``) + the pivot equal the
    identity rows."""
    count = lambda ds: sum(int(get_spec(d).unitalker.identities) for d in ds) + 1  # noqa: E731
    if given:
        for d in given:
            if d not in ANNOT_TYPES:
                raise ConfigError(f"--datasets: expected UniTalker datasets ({', '.join(DATASETS)}), found {d}")
            if ANNOT_TYPES[d] not in heads:
                raise LayoutError(f"expected a head {ANNOT_TYPES[d]!r} for {d}, found heads {', '.join(heads)}")
        if count(given) != n_rows:
            raise LayoutError(f"expected {count(given)} identity rows (the subjects of {','.join(given)} + the pivot), "
                              f"found {n_rows}; name the datasets the checkpoint was trained on with --datasets")
        return [d for d in DATASETS if d in given]
    choices: list[list[str]] = [[]]
    for annot in dict.fromkeys(ANNOT_TYPES[d] for d in DATASETS if ANNOT_TYPES[d] in heads):
        members = [d for d in DATASETS if ANNOT_TYPES[d] == annot]
        subsets = [[d] for d in members] + ([members] if len(members) > 1 else [])
        choices = [c + s for c in choices for s in subsets]
    fits = [sorted(c, key=DATASETS.index) for c in choices if count(c) == n_rows]
    if len(fits) != 1:
        full = sorted(choices[-1], key=DATASETS.index) if choices else []
        raise LayoutError(f"expected identity rows = subjects of the trained datasets + the pivot ({count(full)} for "
                          f"{','.join(full)}), found {n_rows} rows{' matching several choices' if fits else ''}; name "
                          "the datasets the checkpoint was trained on with --datasets")
    return fits[0]


def identity_rows(keys: list[str], datasets: list[str], id_lists: dict[str, list[str]]) -> list[Optional[int]]:
    """Our identity rows laid out as the official table: for each dataset (in order) its ``unitalker.identities``
    slots, our row for a subject placed at its official index (``D3/#17`` -> 17, a name -> its place in the
    release's ``id_list``), other subjects of the dataset in the free slots in order; None = a slot no subject
    of ours fills (it takes the pivot row, as official fine-tuning starts new rows)."""
    out: list[Optional[int]] = []
    for d in datasets:
        n = int(get_spec(d).unitalker.identities)
        names = {str(x): i for i, x in enumerate(id_lists.get(d, []))}
        slots: list[Optional[int]] = [None] * n
        rest = []
        for r, key in enumerate(keys):
            ds, subj = key.split("/", 1)
            if ds != d:
                continue
            m = re.fullmatch(r"#(\d+)", subj)
            i = int(m.group(1)) if m else names.get(subj)
            if i is not None and i < n and slots[i] is None:
                slots[i] = r
            else:
                rest.append(r)
        free = [i for i, s in enumerate(slots) if s is None]
        if len(rest) > len(free):
            raise ConfigError(f"{d}: expected at most {n} subjects (the official identity table's rows for {d}), "
                              f"found {len(rest) + n - len(free)}; the official code cannot hold this model's {d} "
                              "identities")
        for i, r in zip(free, rest):
            slots[i] = r
        out += slots
    return out
