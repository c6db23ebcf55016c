"""Scoring: a predictions folder against a prepared split, under a named protocol, into a results file; and
two results files against each other.

Takes: ``PRED/`` (:mod:`.predictions`) and ``DATA/<id>/`` (:mod:`a2fbench.store`). Gives: the results JSON
(:mod:`.results`) and paired comparisons (:mod:`.compare`). Modules: :mod:`.metrics` (the metric table, the
arithmetic, the statistics), :mod:`.protocols` (and :mod:`.options`, what a protocol takes from the dataset),
:mod:`.evaluate` (the entry point), :mod:`.pipeline` / :mod:`.parallel` / :mod:`.streams` (streamed reading in
one or several processes), :mod:`.accumulate` (chunks into per-sequence scores and runs), :mod:`.document`
(the results JSON of one evaluation).
"""
