"""Metric functions against the slow reference oracles and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from a2fbench.scoring.evaluate import score_arrays
from a2fbench.scoring.metrics import functional as F
from a2fbench.scoring.metrics import reference as R
from a2fbench.scoring.metrics import stats
from a2fbench.scoring.metrics.table import (
    METRICS,
    NAMES,
    RANKED,
    SEQUENCE_COLUMNS,
)


def _case(seed: int, gt_dtype=np.float64, pred_dtype=np.float32, sorted_regions: bool = True):
    """Random sequences of random lengths; predictions at least as long as the ground truth."""
    rng = np.random.default_rng(seed)
    V = int(rng.integers(4, 120))
    n = int(rng.integers(1, 5))
    scale = 10.0 ** rng.uniform(-3, 1)
    gts, preds, tms = [], [], []
    for _ in range(n):
        T = int(rng.integers(1, 40))
        tm = rng.standard_normal((V, 3)) * scale
        g = tm + rng.standard_normal((T, V, 3)) * scale * 0.1
        p = np.concatenate([g, g[-1:].repeat(int(rng.integers(0, 4)), 0)]) + rng.standard_normal((1, V, 3)) * scale * 0.05
        p = p + rng.standard_normal(p.shape) * scale * 0.02
        gts.append(g.astype(gt_dtype).reshape(T, -1) if rng.random() < 0.5 else g.astype(gt_dtype))
        preds.append(p.astype(pred_dtype))
        tms.append(tm.astype(gt_dtype).reshape(-1))
    lips = rng.choice(V, int(rng.integers(1, V + 1)), replace=False)
    upper = rng.choice(V, int(rng.integers(1, V + 1)), replace=False)
    if sorted_regions:
        lips, upper = np.sort(lips), np.sort(upper)
    return gts, preds, tms, lips, upper, V


def _fast(gts, preds, tms, lips, upper, V, *, protocol: str, chunk: int = 7):
    """The evaluator's streaming code path (a2fbench.scoring.evaluate.score_arrays), chunked by ``chunk`` frames."""
    return score_arrays(gts, preds, tms, lips, upper, protocol, chunk_frames=chunk)["metrics"]


def _bits(x) -> bytes:
    return np.asarray(x).tobytes()


@pytest.mark.parametrize("seed", range(40))
def test_codetalker_bitwise_float64_gt_float32_pred(seed: int) -> None:
    gts, preds, tms, lips, upper, V = _case(seed, sorted_regions=seed % 3 != 0)
    ref = R.codetalker(gts, preds, tms, lips, upper, V)
    got = _fast(gts, preds, tms, lips, upper, V, protocol="codetalker", chunk=1 + seed % 9)
    assert _bits(got["LVE"]) == _bits(ref["LVE"]) and np.asarray(got["LVE"]).dtype == np.asarray(ref["LVE"]).dtype
    assert _bits(got["FDD"]) == _bits(ref["FDD"])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)])
def test_codetalker_bitwise_other_dtypes(seed: int, dtypes) -> None:
    """Same arithmetic as the reference on whatever dtypes it is given (float32 stays float32)."""
    gts, preds, tms, lips, upper, V = _case(1000 + seed, *dtypes)
    ref = R.codetalker(gts, preds, tms, lips, upper, V)
    got = _fast(gts, preds, tms, lips, upper, V, protocol="codetalker", chunk=3 + seed)
    assert np.asarray(got["LVE"]).dtype == np.asarray(ref["LVE"]).dtype
    assert _bits(got["LVE"]) == _bits(ref["LVE"])
    assert _bits(got["FDD"]) == _bits(ref["FDD"])


def test_reference_rejects_short_prediction() -> None:
    g = np.zeros((5, 4, 3))
    with pytest.raises(ValueError):
        R.codetalker([g], [g[:4]], [np.zeros((4, 3))], [0], [1], 4)


@pytest.mark.parametrize("seed", range(15))
def test_facediffuser_parity(seed: int) -> None:
    """LVE and FDD are CodeTalker's code (bitwise); MVE differs only in summation order (tolerance)."""
    gts, preds, tms, lips, upper, V = _case(2000 + seed)
    rng = np.random.default_rng(seed)
    preds = [p[: max(1, p.shape[0] - int(rng.integers(0, 6)))] for p in preds]  # some shorter than GT
    ref = R.facediffuser(gts, preds, tms, lips, upper, V)
    got = _fast(gts, preds, tms, lips, upper, V, protocol="facediffuser", chunk=4)
    assert _bits(got["LVE"]) == _bits(ref["LVE"])
    assert _bits(got["FDD"]) == _bits(ref["FDD"])
    assert got["FDD_abs"] == pytest.approx(ref["FDD_abs"], rel=1e-12, abs=1e-300)
    assert got["MVE"] == pytest.approx(ref["MVE"], rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_a2f_matches_literal_definitions(seed: int) -> None:
    rng = np.random.default_rng(3000 + seed)
    V = int(rng.integers(3, 25))
    gts, preds, tms, lips, upper, _ = _case(3000 + seed)
    # small V for the literal per-vertex oracle
    gts = [F.as_vertices(g)[:, :V] for g in gts]
    preds = [F.as_vertices(p)[:, :V] for p in preds]
    tms = [t.reshape(-1, 3)[:V] for t in tms]
    lips = np.unique(rng.integers(0, V, 1 + V // 3))
    upper = np.unique(rng.integers(0, V, 1 + V // 2))
    ref = R.a2f(gts, preds, tms, lips, upper, V)
    got = _fast(gts, preds, tms, lips, upper, V, protocol="a2f", chunk=5)
    for m in ("LVE", "MVE", "UFVE", "FDD_abs"):
        assert got[m] == pytest.approx(ref[m], rel=1e-9), m
    assert got["FDD"] == pytest.approx(ref["FDD"], rel=1e-7, abs=1e-12 * ref["FDD_abs"])


def test_closed_forms() -> None:
    rng = np.random.default_rng(7)
    g = rng.standard_normal((30, 50, 3))
    lips, upper = np.arange(5, 20), np.arange(30, 50)
    c = np.array([0.001, 0.002, -0.002])
    sq = F.squared_distances(g, g)
    assert F.lip_errors(sq, lips).max() == 0.0 and F.mean_distances(sq).max() == 0.0
    assert F.fdd_sequence(g, g.copy(), g[0], upper) == 0.0
    t = F.frame_terms(g, g + c, lips, upper, ("LVE", "MVE", "UFVE"), np.float64)
    assert np.allclose(t["LVE"], (c ** 2).sum(), rtol=1e-9, atol=0)
    assert np.allclose(t["MVE"], np.linalg.norm(c), rtol=1e-9, atol=0)
    assert np.allclose(t["UFVE"], np.linalg.norm(c), rtol=1e-9, atol=0)


def test_known_values_by_hand() -> None:
    # one frame, two vertices; vertex 1 is 3 away in z; lips = {1}
    g = np.zeros((2, 2, 3))
    p = g.copy()
    p[0, 1] = [0, 0, 3]
    p[1, 0] = [1, 2, 2]
    assert F.lve_frames(g, p, np.array([1])).tolist() == [9.0, 0.0]
    assert F.mve_frames(g, p).tolist() == [1.5, 1.5]
    assert F.mve_frames(g, p, np.array([0])).tolist() == [0.0, 3.0]
    # FDD: template 0; GT vertex 0 displacement^2 = 0 then 4 (std 2); prediction still (std 0): FDD = +2
    g2 = np.zeros((2, 1, 3))
    g2[1, 0] = [2, 0, 0]
    assert F.fdd_sequence(g2, np.zeros((2, 1, 3)), np.zeros(3), np.array([0])) == 2.0
    assert F.pooled_mean([np.array([1.0, 2.0]), np.array([6.0])]) == 3.0
    assert F.mean_over_sequences([1.0, -3.0]) == -1.0 and F.mean_abs_over_sequences([1.0, -3.0]) == 2.0
    assert stats.aggregate("LVE", [1.5, 6.0], [2, 1]) == 3.0
    assert stats.aggregate("FDD_abs", [1.5, -6.0], [2, 1]) == 3.75


def test_metric_table() -> None:
    """One table says what each metric is; the derived lists follow from it."""
    assert METRICS["LVE"].unit("m") == "m^2" and METRICS["MVE"].unit("m") == "m"
    assert METRICS["FDD"].unit("codetalker_area_normalised") == "(codetalker_area_normalised)^2"
    assert all(not m.higher_is_better and m.version >= 1 for m in METRICS.values())
    assert NAMES == ("LVE", "MVE", "UFVE", "FDD", "FDD_abs", "LVD")
    assert tuple(n for n, m in METRICS.items() if m.aggregation == "pooled_frames") == ("LVE", "MVE", "UFVE")
    assert RANKED == ("LVE", "MVE", "UFVE", "FDD_abs")
    # stored score blobs depend on this order: columns are appended, never reordered
    assert SEQUENCE_COLUMNS == ("LVE", "MVE", "UFVE", "FDD", "LVD")
    assert METRICS["LVD"].unit("m") == "m" and METRICS["LVD"].aggregation == "mean_sequences"
    assert METRICS["FDD_abs"].per_sequence_key == "FDD" and METRICS["FDD"].ranked_by_abs


def test_bootstrap_ci_behaves() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(5.0, 2.0, 400)
    lo, hi = stats.bootstrap_ci("FDD", v, np.ones(400), n_resamples=4000, seed=1)
    half = 1.96 * v.std() / np.sqrt(len(v))  # normal theory for a mean
    assert lo < v.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert stats.bootstrap_ci("FDD", v, np.ones(400), n_resamples=4000, seed=1) == (lo, hi)  # seeded
    assert stats.bootstrap_ci("LVE", [2.0, 2.0, 2.0], [5, 7, 9]) == (2.0, 2.0)  # degenerate
    assert stats.bootstrap_ci("LVE", [2.0], [5]) == (2.0, 2.0)
    # pooled weighting: one-frame outlier sequence barely moves a resample drawn with 1000-frame ones
    lo, hi = stats.bootstrap_ci("LVE", [1.0] * 5 + [100.0], [1000] * 5 + [1], n_resamples=2000)
    assert lo == 1.0 and hi < 1.2
    lo, hi = stats.bootstrap_ci("FDD", [1.0] * 5 + [100.0], [1000] * 5 + [1], n_resamples=2000)  # unweighted
    assert hi > 30.0


def test_bootstrap_matches_scipy_percentile_method() -> None:
    """Our numpy bootstrap is the percentile method of scipy.stats.bootstrap (different draws, same law)."""
    from scipy import stats as sps

    rng = np.random.default_rng(5)
    v, f = rng.gamma(2.0, 1.0, 30), rng.integers(50, 300, 30).astype(float)
    for metric in ("LVE", "FDD", "FDD_abs"):
        lo, hi = stats.bootstrap_ci(metric, v - (1.0 if metric != "LVE" else 0.0), f, n_resamples=20000, seed=3)
        vv = v - (1.0 if metric != "LVE" else 0.0)
        ref = sps.bootstrap((np.arange(30),), lambda i, axis=-1, m=metric, x=vv: stats.aggregate_indexed(m, x, f, i, axis),
                            vectorized=True, method="percentile",
                              n_resamples=20000, rng=np.random.default_rng(4)).confidence_interval
        width = ref.high - ref.low
        assert abs(lo - ref.low) < 0.05 * width and abs(hi - ref.high) < 0.05 * width, metric
