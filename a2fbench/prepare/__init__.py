"""``a2fbench prepare``: raw native files -> one verified, versioned store per dataset.

For each dataset: detect the layout, verify the files the manifest pins by sha256, read and check every
sequence, resample motion to the benchmark fps and the whole recording to 16 kHz mono (each keeps its own
length; the difference is recorded), assign the standard splits (validation and test sequences are never
dropped; training clips under the minimum length are, and are listed), and write ``DATA/<id>/store.h5`` with templates, regions, converter arrays and a dataset
card. Work goes to ``DATA/.<id>.incomplete/`` and is renamed into place on success. An interrupted prepare
(Ctrl-C, a killed process) leaves that folder and the next run resumes from the last finished sequence; a
user error (corrupt file, wrong shape, checksum mismatch) deletes it, so nothing half-written remains.
Datasets are independent: one failing does not stop the others.

Takes: RAW/<id>/ in a native layout (:mod:`a2fbench.sources`). Gives: DATA/<id>/ (:mod:`a2fbench.store`).
Modules: :mod:`.pipeline` (the steps), :mod:`.motion` (frame-rate conversion and the audio/motion mismatch).
"""

from .pipeline import prepare_dataset, prepare_many, verify_pinned_files

__all__ = ["prepare_dataset", "prepare_many", "verify_pinned_files"]
