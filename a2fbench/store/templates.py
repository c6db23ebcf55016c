"""Which neutral template a mesh sits on, decided in one place.

Every caller that adds offsets to a template or subtracts one from motion asks here: the outputs (render, export,
report), scoring (FDD's template), PCA (motion - template), and ``unitalker`` (training targets, ``predict``,
``infer``). The answer is a :class:`Template`: the (D,) values in the dataset's native units and space, and where
they came from, so that a record (predictions, an ``infer`` output's sidecar) can say which template was used.

Sources, in the order :func:`choose_template` prefers them:

* ``given``: a template the caller already holds for a reason it names (a user's mesh file, read by
  :func:`a2fbench.sources.meshes.read_template_file`; a checkpoint's identity row);
* ``subject``: the store's template of a subject (``templates/<subject>``);
* ``sequence``: the store's template of a sequence's subject.

There is no silent fallback: a sequence id the store does not hold, with no ``given`` template, is an error that
says what to pass, never "the first subject's".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import StoreError


@dataclass(frozen=True)
class Template:
    """A neutral template: ``values`` (D,) in the dataset's native units (a store template keeps the store's dtype, as
    motion does: scoring compares in it bit for bit; a file's is float64); ``source`` one of ``subject``,
    ``file``, ``identity-row``; ``detail`` the subject, the file path or the row it came from."""

    values: np.ndarray
    source: str
    detail: str

    def record(self) -> dict:
        """What a record stores about it (JSON-ready)."""
        return {"source": self.source, "detail": self.detail}


def subject_template(ds, subject: str) -> Template:
    """The store's template of ``subject`` (native units, the store's dtype)."""
    return Template(np.asarray(ds.template(subject)).reshape(-1), "subject", f"{ds.id}/{subject}")


def choose_template(ds, *, subject: Optional[str] = None, seq_id: Optional[str] = None,
                    given: Optional[Template] = None) -> Template:
    """The template a mesh of ``ds`` sits on (see the module doc for the order)."""
    if given is not None:
        D = int(ds.card.get("dim") or 0) if hasattr(ds, "card") else 0
        if D and given.values.size != D:
            raise StoreError(f"{given.source} template {given.detail}: expected {D} values for {ds.id}, found "
                             f"{given.values.size}; pass a neutral mesh of {ds.id}'s topology")
        return given
    if subject is None and seq_id is not None:
        if seq_id not in ds:
            raise StoreError(f"{seq_id!r} is not a sequence of {ds.id}, so its subject's template is unknown; pass "
                             "the template it was made on (e.g. the infer output's sidecar, or --template FILE)")
        subject = ds[seq_id].subject
    if subject is None:
        raise StoreError(f"{ds.id}: a template needs a subject, a sequence of the store or a given template")
    return subject_template(ds, subject)
