"""The prepared store: one self-describing HDF5 file per dataset, ``DATA/<id>/store.h5``.

Layout (every path below is inside ``store.h5``)::

    attrs: format_version, card (JSON), complete
    sequences/<seq_id>/motion   (T, D)  source dtype (BIWI float64), benchmark fps, absolute positions or params
    sequences/<seq_id>/audio    (N,)    float32 mono 16 kHz: the whole recording (N need not match T)
    sequences/<seq_id>.attrs    subject, n_frames, n_samples, av_mismatch_s (audio s - motion s), source
    templates/<subject>         (D,)    neutral template, same space and units; the source's array and dtype
    regions/<set>/lips|upper    int64 vertex indices (vertex spaces and spaces that convert to vertices)
    splits/<name>               sequence ids, canonical order
    space/<key>                 converter arrays of a parameter space (blendshape basis, FLAME model)
    mesh/faces                  (F, 3) int32 triangles of the topology (manifest ``mesh`` file or FLAME ``f``), if any

One sequence is read without touching the others (h5py random access). ``card.json`` beside the file is a
copy of the card for humans. This package is the only place that knows these names.

Takes: prepared arrays (:class:`StoreWriter`, used by ``prepare``). Gives: :func:`open_dataset` -> :class:`Dataset`
(card, splits, sequences read lazily, templates, regions, converter arrays, a Hugging Face export).
"""

from .dataset import (
                      CARD_FILE,
                      STORE_FILE,
                      STORE_FORMAT,
                      UNITALKER_MAX_SECONDS,
                      UNITALKER_MIN_SECONDS,
                      Dataset,
                      Sequence,
                      common_length,
                      incomplete_dir,
                      list_prepared,
                      open_dataset,
                      store_dir,
)
from .writer import StoreWriter

__all__ = ["CARD_FILE", "STORE_FILE", "STORE_FORMAT", "UNITALKER_MAX_SECONDS", "UNITALKER_MIN_SECONDS", "Dataset",
           "Sequence", "common_length", "incomplete_dir", "list_prepared", "open_dataset", "store_dir", "StoreWriter"]
