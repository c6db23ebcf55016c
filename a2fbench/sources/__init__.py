"""Where raw data come from, and how each native layout is read and written.

Takes: a dataset's manifest. Gives: ``RAW/<id>/`` as the sources ship it, and that folder read back as
:class:`~.raw.RawData`. Modules: :mod:`.download` (URL sources with resume and sha256, manual steps and
checks) with :mod:`.archives` (safe unpacking), :mod:`.synth` (stand-ins with the real structure),
:mod:`.layouts` (one module per native layout: its reader and its stand-in writer), :mod:`.raw` (the checked
loaders they share), :mod:`.regions` (lip and upper-face index files) and :mod:`.audio` (any audio to mono
16 kHz float32).
"""
