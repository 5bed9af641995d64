"""Metrics against hand-computed values; the seasonal-naive reference."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lstm_core.metrics import mase_scale, metrics_frame, per_series, seasonal_naive
from lstm_core.panel import Panel


def panel_from(series: dict[str, list[float]]) -> Panel:
    frames = [pd.DataFrame({"series_id": sid, "ds": pd.date_range("2026-01-01", periods=len(v), freq="h"), "y": v})
              for sid, v in series.items()]
    return Panel.from_frame(pd.concat(frames, ignore_index=True).astype({"series_id": "string"}), "h")


def test_per_series_metrics_by_hand():
    actual = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    forecast = np.array([[2.0, 2.0, 1.0, 4.0], [0.0, 1.0, 2.0, 3.0]])
    m = per_series(actual, forecast, scale=np.array([0.5, 2.0]))
    # series 0: errors -1, 0, 2, 0;  series 1: errors 0, -1, 0, -1
    np.testing.assert_allclose(m["mae"], [0.75, 0.5])
    np.testing.assert_allclose(m["rmse"], [math.sqrt(5 / 4), math.sqrt(2 / 4)])
    # sMAPE = mean(200 |e| / (|a| + |f|)); 0/0 counts as 0
    np.testing.assert_allclose(m["smape"], [(200 / 3 + 0 + 100 + 0) / 4, (0 + 200 + 0 + 200 / 5) / 4])
    np.testing.assert_allclose(m["mase"], [0.75 / 0.5, 0.5 / 2.0])


def test_mase_scale_is_mean_absolute_seasonal_difference_within_each_series():
    p = panel_from({"a": [1, 3, 2, 5, 4], "b": [10, 10, 13, 16]})
    # a, m=2: |2-1|, |5-3|, |4-2| -> 5/3;  b, m=2: |13-10|, |16-10| -> 4.5 (never a-to-b differences)
    np.testing.assert_allclose(mase_scale(p, 2), [5 / 3, 4.5])
    np.testing.assert_allclose(mase_scale(p, 1), [(2 + 1 + 3 + 1) / 4, (0 + 3 + 3) / 3])
    zero = per_series(np.ones((1, 2)), np.zeros((1, 2)), np.array([0.0]))
    assert np.isnan(zero["mase"][0])  # undefined, not inf


def test_seasonal_naive_repeats_the_last_season():
    p = panel_from({"a": [1, 2, 3, 10, 20, 30], "b": [5, 6, 7, 8, 9, 11]})
    np.testing.assert_array_equal(seasonal_naive(p, 7, 3), [[10, 20, 30, 10, 20, 30, 10], [8, 9, 11, 8, 9, 11, 8]])
    np.testing.assert_array_equal(seasonal_naive(p, 3, 1), [[30, 30, 30], [11, 11, 11]])


def test_seasonal_naive_with_a_season_longer_than_the_series():
    p = panel_from({"a": [1, 2, 3]})
    np.testing.assert_array_equal(seasonal_naive(p, 4, 24), [[1, 2, 3, 1]])


def test_metrics_frame_has_per_series_and_overall_rows_for_each_model():
    ids = np.array(["a", "b"], dtype=object)
    actual = np.array([[1.0, 2.0], [3.0, 5.0]])
    fc = {"lstm": np.array([[1.0, 3.0], [3.0, 3.0]]), "seasonal_naive": np.array([[2.0, 2.0], [5.0, 5.0]])}
    m = metrics_frame(ids, actual, fc, scale=np.array([1.0, 2.0]))
    assert list(m.columns) == ["series_id", "metric", "value", "model"]
    assert len(m) == 2 * 4 * 3  # models x metrics x (2 series + overall)
    overall = m[m["series_id"].isna()]
    assert set(zip(overall["model"], overall["metric"])) == {(mo, me) for mo in fc for me in
                                                             ("mae", "rmse", "smape", "mase")}
    get = lambda model, metric, sid=None: float(m.loc[(m["model"] == model) & (m["metric"] == metric) & (
        m["series_id"].isna() if sid is None else m["series_id"] == sid), "value"].iloc[0])
    assert get("lstm", "mae", "a") == 0.5 and get("lstm", "mae", "b") == 1.0
    assert get("lstm", "mae") == 0.75  # overall = mean of per-series figures
    assert get("seasonal_naive", "mae") == pytest.approx((0.5 + 1.0) / 2)
    assert get("lstm", "mase", "b") == pytest.approx(0.5)
    assert m["series_id"].dtype == "string" and m["model"].dtype == "string"
