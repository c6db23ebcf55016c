"""The global identity table: which row of the decoder's identity embedding belongs to which dataset's subject."""

from __future__ import annotations

import difflib
from typing import Optional

from a2fbench.errors import ConfigError


class IdentityTable:
    """Global identity rows: ``"D1/subject"`` for every training subject, in dataset then first-seen order,
    and one pivot row last (UniTalker's ``Σ subjects + 1``)."""

    def __init__(self, keys: list[str]):
        self.keys = list(keys)
        self.index = {k: i for i, k in enumerate(self.keys)}

    @property
    def pivot(self) -> int:
        return len(self.keys)

    @property
    def n_rows(self) -> int:
        return len(self.keys) + 1

    def row(self, dataset: str, subject: str) -> Optional[int]:
        return self.index.get(f"{dataset}/{subject}")

    def lookup(self, name: str) -> int:
        """``pivot``, a row number, ``D1/subject`` or a subject name unique among the datasets."""
        if name == "pivot":
            return self.pivot
        if name.isdigit():
            i = int(name)
            if 0 <= i <= self.pivot:
                return i
        if name in self.index:
            return self.index[name]
        hits = [k for k in self.keys if k.split("/", 1)[1] == name]
        if len(hits) == 1:
            return self.index[hits[0]]

        close = difflib.get_close_matches(name, self.keys + [k.split("/", 1)[1] for k in self.keys], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = "is ambiguous" if hits else "is not a training identity of this checkpoint"
        raise ConfigError(f"identity {name!r} {what}{hint}; expected pivot, a row 0..{self.pivot}, or DATASET/SUBJECT "
                          f"(e.g. {self.keys[0] if self.keys else 'D1/FaceTalk_...'})")
