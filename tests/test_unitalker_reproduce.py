"""unitalker reproduce: the paper column equals the seeded reported rows; verdicts and reasons from a record."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unitalker.infer.reproduce import paper_table, row_for

REPORTED = Path(__file__).resolve().parent.parent / "leaderboard" / "reported.yaml"


def test_paper_column_is_the_seeded_table_6() -> None:
    table = paper_table()
    rows = yaml.safe_load(REPORTED.read_text())["reported"]
    t6 = [r for r in rows if "Table 6" in str(r.get("protocol", ""))]
    assert t6, "leaderboard/reported.yaml holds Table 6"
    for enc, model in table["models"].items():
        tag = "WavLM-Base-Plus" if "wavlm" in enc else "XLSR-53"
        for d, v in model["LVE"].items():
            hits = [r for r in t6 if r["dataset"] == d and tag in str(r.get("version", "")) + str(r.get("method", ""))]
            assert len(hits) == 1, (enc, d)
            lve = hits[0]["metrics"]["LVE"]
            assert lve["value"] == pytest.approx(v, abs=1e-9)
            assert float(str(lve["unit"]).split()[0]) == table["printed_scale"][d]


def _doc(value: float, ci: tuple[float, float], synthetic: bool = False, version: int = 2) -> dict:
    return {"dataset": {"id": "D1", "split": "test", "synthetic": synthetic, "n_sequences": 40,
                        "regions": {"set": "unitalker" if version == 2 else "facediffuser"}},
            "protocol": {"name": "unitalker", "version": version, "scale": 1.0, "skipped": []},
            "metrics": {"LVE": {"value": value, "ci95": list(ci), "unit": "m^2"}}}


def test_verdicts_and_reasons() -> None:
    table = paper_table()
    enc = "microsoft/wavlm-base-plus"
    paper = 8.136e-6
    rec = {"precision": "fp32", "sequences": {"a": {"identity_from": "release_template"}}}
    r = row_for(_doc(8.0e-6, (7.5e-6, 8.5e-6)), rec, enc, table)
    assert r["paper"] == pytest.approx(paper) and r["verdict"] == "within the 95% CI" and r["reasons"] == []
    assert r["ratio"] == pytest.approx(8.0e-6 / paper)
    r = row_for(_doc(1.0e-5, (9.5e-6, 1.05e-5)), rec, enc, table)
    assert r["verdict"] == f"outside the 95% CI (x{1.0e-5 / paper:.3g})"
    rec2 = {"precision": "bf16 autocast", "sequences": {"a": {"identity_from": "pivot_unseen"}}}
    r = row_for(_doc(8.0e-6, (7.5e-6, 8.5e-6), synthetic=True, version=3), rec2, enc, table)
    assert r["verdict"] == "not comparable (stand-in data)"
    joined = " | ".join(r["reasons"])
    for want in ("stand-in data", "no UniTalker mouth list", "identity fallback: 1 of 1", "precision bf16"):
        assert want in joined
