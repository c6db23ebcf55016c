"""Plumbing shared by every stage, and nothing else: atomic writes and hashing (:mod:`.fsutil`), default
folders (:mod:`.paths`), the restricted unpickler (:mod:`.safepickle`), a background reader thread
(:mod:`.threads`), heap trimming (:mod:`.memory`) and the constants every stage agrees on (:mod:`.constants`).
No module here knows about datasets, stores or metrics."""
