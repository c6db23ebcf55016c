"""The dataset registry: one YAML manifest per dataset under ``manifests/``, validated by a strict schema.

A dataset is data, never a branch in code: everything ``prepare``, ``synth``, ``download`` and ``evaluate``
need to know about D0..D7 (layouts, naming, splits, regions, sources, units) is read from its manifest.

Takes: ``manifests/*.yaml``. Gives: :class:`DatasetSpec` / :class:`Space` objects (:mod:`.schema`), lookup by
id, alias, list or range with did-you-mean (:mod:`.catalog`), and the standard splits (:mod:`.splits`).
"""

from .catalog import (
                      all_spaces,
                      all_specs,
                      did_you_mean,
                      get_space,
                      get_spec,
                      manifests_dir,
                      match_channels,
                      resolve,
                      space_channels,
)
from .schema import (
                      Archive,
                      DatasetSpec,
                      FileEntry,
                      RegionSource,
                      Source,
                      Space,
                      SynthSize,
                      UnitalkerInfo,
)
from .splits import assign_splits, expected_ids, sentence_id

__all__ = ["all_spaces", "all_specs", "did_you_mean", "get_space", "get_spec", "manifests_dir", "match_channels",
           "resolve", "space_channels", "Archive", "DatasetSpec", "FileEntry", "RegionSource", "Source", "Space",
           "SynthSize", "UnitalkerInfo", "assign_splits", "expected_ids", "sentence_id"]
