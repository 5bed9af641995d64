"""Mergeable error sums: by hand, equal to the per-series functions, merged over shards, and equal to the
independent M4 scorer on the same inputs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lstm_core.metrics import ErrorSums, interval_score, mase_scale, per_series
from lstm_core.panel import Panel
from tests.m4ref import m4_scorer


def rows_from(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray, **extra: np.ndarray) -> pd.DataFrame:
    s, h = actual.shape
    frame = pd.DataFrame({"series_id": pd.Series(np.repeat([f"s{i}" for i in range(s)], h), dtype="string"),
                          "cutoff": pd.Timestamp("2026-01-01"), "y": actual.ravel(), "yhat": forecast.ravel(),
                          "scale": np.repeat(scale, h)})
    for name, v in extra.items():
        frame[name] = v.ravel()
    return frame


def value(frame: pd.DataFrame, metric: str, model: str = "m", **where) -> float:
    sel = (frame["metric"] == metric) & (frame["model"] == model)
    for k, v in where.items():
        sel &= frame[k] == v
    assert sel.sum() == 1, (metric, where)
    return float(frame.loc[sel, "value"].iloc[0])


def test_interval_score_by_hand():
    # a = 0.05: inside pays the width; below pays width + 40 x shortfall; above likewise
    y = np.array([5.0, 0.0, 12.0])
    np.testing.assert_allclose(interval_score(y, np.full(3, 2.0), np.full(3, 10.0), 95), [8.0, 8 + 40 * 2, 8 + 40 * 2])
    np.testing.assert_allclose(interval_score(np.array([1.0]), np.array([2.0]), np.array([3.0]), 80), [1 + 10 * 1])


def test_error_sums_by_hand():
    actual = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    fc = np.array([[2.0, 2.0, 1.0, 4.0], [0.0, 1.0, 2.0, 3.0]])
    lo, hi = fc - 1.0, fc + 1.0  # series 0: point 3 (y=3, [0, 2]) is outside by 1
    rows = rows_from(actual, fc, np.array([0.5, 2.0]), yhat_lo_95=lo, yhat_hi_95=hi)
    sums = ErrorSums.from_rows(rows, forecasts={"m": "yhat"}, keys=("series_id",), interval_model="m", levels=[95])
    wide = sums.per_key().set_index("series_id")
    np.testing.assert_allclose(wide["mae"], [0.75, 0.5])
    np.testing.assert_allclose(wide["rmse"], [math.sqrt(5 / 4), math.sqrt(2 / 4)])
    np.testing.assert_allclose(wide["mase"], [1.5, 0.25])
    np.testing.assert_allclose(wide["coverage_95"], [0.75, 1.0])
    # MSIS: mean interval score / scale; widths 2, and series 0's miss adds 40 x 1
    np.testing.assert_allclose(wide["msis_95"], [(2 + 40 / 4) / 0.5, 2 / 2.0])
    assert list(wide["points"]) == [4, 4]
    pooled = sums.totals().finalize()
    assert value(pooled, "mae") == pytest.approx(0.625)
    assert value(pooled, "coverage_95") == pytest.approx(7 / 8)  # points pooled
    assert value(pooled, "msis_95") == pytest.approx(((2 + 10) / 0.5 + 1.0) / 2)


def test_per_key_values_equal_the_array_functions():
    rng = np.random.default_rng(3)
    actual = rng.normal(10, 3, (7, 5))
    fc = actual + rng.normal(0, 1, (7, 5))
    scale = rng.uniform(0.5, 2, 7)
    sums = ErrorSums.from_rows(rows_from(actual, fc, scale), forecasts={"m": "yhat"}, keys=("series_id",))
    wide = sums.per_key().set_index("series_id")
    expected = per_series(actual, fc, scale)
    for metric in ("mae", "rmse", "smape", "mase"):
        np.testing.assert_allclose(wide[metric].to_numpy(), expected[metric], rtol=1e-12)


def test_sums_of_shards_merge_to_the_sums_of_the_whole():
    rng = np.random.default_rng(4)
    actual = rng.uniform(1, 20, (10, 6))
    fc = actual * rng.uniform(0.7, 1.3, (10, 6))
    lo, hi = fc * 0.8, fc * 1.2
    rows = rows_from(actual, fc, rng.uniform(0.5, 2, 10), yhat_lo_80=lo, yhat_hi_80=hi,
                     naive=actual[:, :1].repeat(6, 1))
    kw = dict(forecasts={"m": "yhat", "seasonal_naive": "naive"}, interval_model="m", levels=[80])
    whole = ErrorSums.from_rows(rows, **kw)
    shard_of = rows["series_id"].isin(["s1", "s4", "s7"])
    a, b = ErrorSums.from_rows(rows[shard_of], **kw), ErrorSums.from_rows(rows[~shard_of], **kw)
    merged = a.merge(b)
    pd.testing.assert_frame_equal(merged.per_key(), whole.per_key(), check_exact=False, rtol=1e-12)
    # totals merge too: shard totals pooled equal the whole's pooled figures
    pooled = a.totals().merge(b.totals()).finalize()
    pd.testing.assert_frame_equal(pooled, whole.totals().finalize(), check_exact=False, rtol=1e-12)
    # the same key split in two (points of one window arriving in two parts) adds up as well
    first, second = rows.iloc[::2], rows.iloc[1::2]
    halves = ErrorSums.from_rows(first, **kw).merge(ErrorSums.from_rows(second, **kw))
    pd.testing.assert_frame_equal(halves.per_key(), whole.per_key(), check_exact=False, rtol=1e-12)
    with pytest.raises(ValueError, match="cannot merge"):
        whole.merge(ErrorSums.from_rows(rows, forecasts={"m": "yhat"}))


def test_nan_forecasts_and_zero_scales_are_left_out_like_nanmean():
    actual = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    fc = np.array([[1.5, np.nan], [3.0, 5.0], [5.0, 7.0]])
    sums = ErrorSums.from_rows(rows_from(actual, fc, np.array([1.0, 0.0, 2.0])), forecasts={"m": "yhat"},
                               keys=("series_id",))
    wide = sums.per_key().set_index("series_id")
    assert np.isnan(wide.loc["s0", "mae"]) and np.isnan(wide.loc["s1", "mase"]) and wide.loc["s1", "mae"] == 0.5
    pooled = sums.totals().finalize()
    assert value(pooled, "mae") == pytest.approx((0.5 + 0.5) / 2)  # s0 left out, as np.nanmean would
    assert value(pooled, "mase") == pytest.approx(0.25)  # only s2 has a MASE


def test_rows_missing_columns_are_refused():
    rows = rows_from(np.ones((1, 2)), np.ones((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="yhat_lo_95"):
        ErrorSums.from_rows(rows, forecasts={"m": "yhat"}, interval_model="m", levels=[95])
    with pytest.raises(ValueError, match="interval_model"):
        ErrorSums.from_rows(rows, forecasts={"m": "yhat"}, interval_model="other", levels=[95])


@pytest.mark.parametrize("season", [1, 4])
def test_pooled_metrics_agree_with_the_m4_scorer(season):
    m4 = m4_scorer()
    rng = np.random.default_rng(season)
    s, n, h = 12, 40, 6
    ids = [f"W{i}" for i in range(s)]
    ds = pd.date_range("2020-01-06", periods=n + h, freq="W-MON")
    level = rng.uniform(5, 200, s)[:, None]
    y = level * (1 + 0.1 * np.sin(np.arange(n + h) * 2 * np.pi / 4)[None, :]) + rng.normal(0, 3, (s, n + h))
    train = pd.DataFrame({"series_id": np.repeat(ids, n), "ds": np.tile(ds[:n], s), "y": y[:, :n].ravel()})
    test = pd.DataFrame({"series_id": np.repeat(ids, h), "ds": np.tile(ds[n:], s), "y": y[:, n:].ravel()})
    fc = y[:, n:] + rng.normal(0, 4, (s, h))
    width = rng.uniform(2, 12, (s, 1))
    forecast = test[["series_id", "ds"]].assign(yhat=fc.ravel(), yhat_lo_95=(fc - width).ravel(),
                                                yhat_hi_95=(fc + width).ravel(), yhat_lo_80=(fc - width / 2).ravel(),
                                                yhat_hi_80=(fc + width / 2).ravel())
    panel = Panel.from_frame(train.astype({"series_id": "string"}), "W-MON")
    scale = mase_scale(panel, season)
    rows = forecast.merge(test, on=["series_id", "ds"]).assign(cutoff=ds[n - 1])
    rows["scale"] = rows["series_id"].map(dict(zip(panel.series_ids, scale)))
    sums = ErrorSums.from_rows(rows, forecasts={"m": "yhat"}, interval_model="m", levels=[80, 95])
    ours = sums.totals().finalize()
    for level in (95, 80):
        ref = m4.score(train, test, forecast, "yhat", season, level)
        assert value(ours, f"coverage_{level}") == pytest.approx(ref[f"coverage_{level}"], abs=6e-5)
        assert value(ours, f"msis_{level}") == pytest.approx(ref[f"msis_{level}"], abs=6e-4)
        assert 0 < ref[f"coverage_{level}"] < 1  # the case exercises both hits and misses
    assert value(ours, "smape") == pytest.approx(ref["smape"], abs=6e-4)
    assert value(ours, "mase") == pytest.approx(ref["mase"], abs=6e-4)
