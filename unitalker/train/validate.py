"""Validation during training: LVE per dataset in native units, pooled over frames, beside the LVE of the
static template (the ratio says whether the model beats standing still)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from a2fbench.errors import StoreError
from a2fbench.registry import get_space
from a2fbench.scoring.metrics.functional import lve_frames
from a2fbench.spaces import converter

from .batches import collate, eval_batches
from .data import ClipSet, IdentityTable, Source, open_sources
from ..model.model import UniTalker
from ..model.runtime import amp_context

log = logging.getLogger("unitalker.train.loop")


class Validator:
    """Validation LVE per dataset (native units, pooled over frames) and its static-template ratio."""

    def __init__(self, data: str | Path, datasets: list[str], cfg: dict, idt: IdentityTable, normalize: bool):
        split = cfg["data"]["val_split"]
        self.sources = [s for s in open_sources(data, datasets, cfg, split=split) if s.ids]
        vcfg = json.loads(json.dumps(cfg))
        if not cfg["data"]["cut_eval"]:  # UniTalker cuts every split to max_seconds (data.cut_eval: true)
            vcfg["data"]["max_seconds"] = 1e9
        self.clips = ClipSet(self.sources, idt, vcfg, normalize, split=split)
        self.static: dict[str, float] = {}
        self._conv: dict[str, Any] = {}
        self._lips: dict[str, Optional[np.ndarray]] = {}

    def _vertices(self, s: Source, x: np.ndarray) -> np.ndarray:
        space = get_space(s.spec.space)
        if space.is_vertex:
            return x.reshape(len(x), -1, 3)
        if s.space not in self._conv:
            self._conv[s.space] = converter(space, s.ds.space_arrays())
        return self._conv[s.space].to_vertices(x)

    def lips(self, s: Source) -> Optional[np.ndarray]:
        if s.spec.id not in self._lips:
            try:
                self._lips[s.spec.id] = np.asarray(s.ds.regions["lips"], np.int64)
            except StoreError as e:
                log.info("no validation LVE for %s: %s", s.spec.id, e)
                self._lips[s.spec.id] = None
        return self._lips[s.spec.id]

    @torch.no_grad()
    def __call__(self, model: UniTalker, device: torch.device, amp: str) -> dict[str, dict]:

        was = model.training
        model.eval()
        frames: dict[str, list[np.ndarray]] = {}
        static: dict[str, list[np.ndarray]] = {}
        for batch_idx in eval_batches(self.clips, 60.0 if device.type == "cpu" else 320.0):
            items = [self.clips[i] for i in batch_idx]
            b = collate(items)
            groups = {sp: g["rows"].to(device) for sp, g in b["groups"].items()}
            with amp_context(device, amp):
                out = model(b["audio"].to(device), b["n_samples"].to(device), b["n_frames"].to(device),
                            b["identity"].to(device), groups, decode=False)
            for sp, g in b["groups"].items():
                offset, z = out[sp]
                head = model.heads[sp]
                for j, r in enumerate(g["rows"].tolist()):
                    it = items[r]
                    s = self.sources[it["source"]]
                    lips = self.lips(s)
                    if lips is None:
                        continue
                    T = int(it["n_frames"])
                    sc = s.scale
                    gt_s = it["target"]["motion"].double().numpy()  # scaled units
                    tmpl = it["target"]["template"].double().numpy()
                    if get_space(s.spec.space).is_vertex:  # lip vertices only
                        cols_np = (3 * lips[:, None] + np.arange(3)[None]).reshape(-1)
                        cols = torch.from_numpy(cols_np).to(device)
                        off = head.decode_columns(z[j, :T].float(), cols) if head.is_pca else offset[j, :T][:, cols]
                        pred = ((off.double().cpu().numpy() + tmpl[cols_np][None]) / sc).reshape(T, -1, 3)
                        gt = (gt_s[:, cols_np] / sc).reshape(T, -1, 3)
                        st = np.broadcast_to((tmpl[cols_np] / sc).reshape(1, -1, 3), gt.shape)
                        idx = np.arange(len(lips))
                    else:  # parameters -> vertices with the space's converter, native units
                        pred = self._vertices(s, (offset[j, :T].double().cpu().numpy() + tmpl[None]) / sc)
                        gt = self._vertices(s, gt_s / sc)
                        st = self._vertices(s, np.repeat(tmpl[None] / sc, T, 0)) if s.spec.id not in self.static \
                            else None
                        idx = lips
                    frames.setdefault(s.spec.id, []).append(lve_frames(gt, pred, idx, np.float64))
                    if s.spec.id not in self.static and st is not None:
                        static.setdefault(s.spec.id, []).append(lve_frames(gt, st, idx, np.float64))
        for d, v in static.items():
            self.static[d] = float(np.mean(np.concatenate(v)))
        model.train(was)
        out = {}
        for d, v in frames.items():
            val = float(np.mean(np.concatenate(v)))
            st_v = self.static.get(d, float("nan"))
            out[d] = {"LVE": val, "static": st_v, "ratio": val / st_v if st_v > 0 else float("nan")}
        return out
