"""The standard splits, assigned from a manifest's rule: named subject and sentence ranges
(``subject_sentence``), whole subjects cut by a hash of their names (``subject_hash``), or the split a release
ships (``release_json``).

Takes: a spec and the sequences found (anything with ``id``, ``subject`` and ``split`` attributes: the raw
items ``prepare`` reads, or the plans ``synth`` makes). Gives: ``{split: ids in canonical order}``.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Protocol, Sequence

from ..errors import RawDataError
from .schema import DatasetSpec


class Named(Protocol):
    """What a split rule looks at: a sequence's id, its subject, and the split its layout names (or None)."""

    id: str
    subject: str
    split: Optional[str]


def assign_splits(spec: DatasetSpec, items: Sequence[Named]) -> tuple[dict[str, list[str]], list[dict], str]:
    """{split: ids in canonical order}, the items in no split (with reasons), and the split source; the
    manifest's derived splits (:func:`derived_splits`) are added."""
    out, unassigned, source = _assign(spec, items)
    return {**out, **derived_splits(spec, items, out)}, unassigned, source


def derived_splits(spec: DatasetSpec, items: Sequence[Named], splits: dict[str, list[str]]) -> dict[str, list[str]]:
    """The manifest's ``splits.derived``: each the sequences of its parent split whose subject has one of the
    given numbers (1-based) in the sorted list of every subject found. A parent split absent here gives none.

    >>> from types import SimpleNamespace as N
    >>> from a2fbench.registry import get_spec
    >>> its = [N(id=f"s{i}_{j}", subject=f"s{i:02d}", split=None) for i in range(1, 14) for j in (1, 2)]
    >>> derived_splits(get_spec("D2"), its, {"test": [i.id for i in its if i.id.endswith("_2")]})
    {'test_facediffuser': ['s1_2', 's4_2', 's5_2', 's8_2']}
    """
    subjects = sorted({i.subject for i in items})
    subject_of = {i.id: i.subject for i in items}
    out = {}
    for name, d in spec.splits.derived.items():
        if d.of not in splits:
            continue
        chosen = {subjects[k - 1] for k in d.subject_numbers if 0 < k <= len(subjects)}
        out[name] = [sid for sid in splits[d.of] if subject_of.get(sid) in chosen]
    return out


def _assign(spec: DatasetSpec, items: Sequence[Named]) -> tuple[dict[str, list[str]], list[dict], str]:
    rule = spec.splits.rule
    if any(i.split for i in items):
        source = "release_json"
        groups: dict[str, list[Named]] = {}
        for it in items:
            groups.setdefault(it.split or "", []).append(it)
        return {k: [i.id for i in v] for k, v in groups.items() if k}, [], source
    if rule == "release_json":
        raise RawDataError(f"{spec.id}: expected split information from the release JSONs, found none")
    out: dict[str, list[str]] = {s: [] for s in spec.split_names}
    unassigned: list[dict] = []
    if rule == "subject_sentence":
        keyed = []
        for it in items:
            sent = spec.sentence_number(it.id)
            hit = None
            for name, s in spec.splits.sets.items():
                subs = s.subjects
                if subs != "all" and it.subject not in subs:
                    continue
                if s.sentences is not None and (sent is None or not s.sentences[0] <= sent <= s.sentences[1]):
                    continue
                hit = name
                order = subs.index(it.subject) if subs != "all" else 0
                keyed.append((name, order, it.subject if subs == "all" else "", sent or 0, it.id))
                break
            if hit is None:
                unassigned.append({"id": it.id, "reason": "belongs to no split of the manifest"})
        for name, *_rest, sid in sorted(keyed, key=lambda k: (k[1], k[2], k[3], k[4])):
            out[name].append(sid)
        return out, unassigned, "manifest"
    # subject_hash: whole subjects, ordered by sha256 of the name, cut by fractions (at least one each)
    subjects = sorted({i.subject for i in items}, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    names = list(spec.splits.fractions)
    n = len(subjects)
    cuts, acc = [], 0.0
    for nm in names:
        acc += spec.splits.fractions[nm]
        cuts.append(int(round(acc * n)))
    if n >= len(names):  # guarantee one subject per split
        for j in range(len(names)):
            lo = cuts[j - 1] if j else 0
            if cuts[j] <= lo:
                cuts[j] = lo + 1
        for j in range(len(names) - 1, -1, -1):
            hi = n if j == len(names) - 1 else cuts[j + 1] - 1
            cuts[j] = min(cuts[j], hi) if j < len(names) - 1 else n
    which = {}
    lo = 0
    for nm, hi in zip(names, cuts):
        for s in subjects[lo:hi]:
            which[s] = nm
        lo = hi
    for it in sorted(items, key=lambda i: (i.subject, i.id)):
        out[which[it.subject]].append(it.id)
    return out, unassigned, "manifest"


def sentence_id(spec: DatasetSpec, subject: str, sentence: int) -> str:
    """The sequence id of a subject's sentence in the manifest's naming (``F2_e01``, ``..._sentence01``, or a
    sentence-table name)."""
    pat = spec.naming.pattern if spec.naming else ""
    if "_e(?P<sentence>" in pat:
        return f"{subject}_e{sentence:02d}"
    if "_sentence(?P<sentence>" in pat:
        return f"{subject}_sentence{sentence:02d}"
    name = spec.sentence_name(sentence)
    if name is not None:  # a sentence table (Multiface SEN_<text>)
        return f"{subject}_{name}"
    raise RawDataError(f"{spec.id}: expected a naming pattern with a sentence number, found {pat!r}")


def expected_ids(spec: DatasetSpec) -> dict[str, str]:
    """{sequence id: split} of every sequence the manifest's standard splits name (rule ``subject_sentence``
    with subject lists and sentence ranges); empty for rules that name no sequences."""
    out: dict[str, str] = {}
    if spec.splits.rule != "subject_sentence":
        return out
    for name, s in spec.splits.sets.items():
        if s.subjects == "all" or not s.sentences:
            continue
        for subj in s.subjects:
            for n in range(s.sentences[0], s.sentences[1] + 1):
                out.setdefault(sentence_id(spec, subj, n), name)
    return out
