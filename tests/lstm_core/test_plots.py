"""Run plots: PNG bytes from plain data, readable in edge cases (NaN errors, one series, no history)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from lstm_core import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _image(data: bytes) -> np.ndarray:
    assert data[:8] == PNG
    return imread(io.BytesIO(data), format="png")


def test_loss_curves_draw_each_member_and_the_note():
    hist = {"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.7, 0.72]}
    img = _image(plots.loss_curves([hist, hist], title="model v1", best_epochs=[2, 2], note="loaded"))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img.std() > 0.05  # something is drawn, not a blank canvas


def test_loss_curves_without_history_still_render():
    assert plots.loss_curves([{}], title="nothing recorded")[:8] == PNG


def test_pick_examples_ignores_nan_and_orders_by_error():
    mase = np.array([0.9, np.nan, 0.2, 1.5, 0.7])
    assert plots.pick_examples(mase) == {"best": 2, "median": 4, "worst": 3}
    assert plots.pick_examples(np.array([np.nan, np.inf])) == {}
    assert plots.pick_examples(np.array([0.4])) == {"best": 0, "median": 0, "worst": 0}


def test_holdout_examples_and_error_distribution():
    ds = pd.date_range("2026-01-01", periods=60, freq="h").to_numpy()
    ex = plots.SeriesExample("best", "s01", ds[:48], np.sin(np.arange(48)), ds[48:], np.sin(np.arange(48, 60)),
                             {"LSTM": np.zeros(12), "seasonal naive": np.ones(12)}, {"LSTM": 0.5, "naive": 0.8})
    img = _image(plots.holdout_examples([ex, ex, ex]))
    assert img.shape[0] > img.shape[1] * 0.6  # three stacked panels
    assert plots.holdout_examples([])[:8] == PNG
    a = np.array([0.5, 0.7, np.nan, 1.2])
    b = np.array([0.6, 0.6, 0.9, np.inf])
    assert _image(plots.error_distribution(a, b)).std() > 0.05
    assert plots.error_distribution(np.array([np.nan]), np.array([np.nan]))[:8] == PNG


def _backtest_and_forecast():
    from lstm_core.backtest import backtest
    from lstm_core.engine import predictions_frame
    from lstm_core.metrics import seasonal_naive
    from lstm_core.panel import Panel
    from tests.conftest import make_frame

    df = make_frame(n_series=5, length=200)
    panel = Panel.from_frame(df, "h")
    naive = lambda history, horizon, future: seasonal_naive(history, horizon, 24)  # noqa: E731
    bt = backtest(panel, naive, horizon=12, season_length=24, windows=3)
    yhat = naive(panel, 12, None)
    preds = predictions_frame(panel, yhat, "h")
    for col, v in bt.intervals.predict(panel, yhat).items():
        preds[col] = v.reshape(-1)
    m = bt.metrics("m")
    mase = m[(m["metric"] == "mase") & (m["model"] == "m") & m["series_id"].notna() & m["window"].isna()]
    return df, bt, preds, mase.set_index("series_id")["value"]


def test_forecast_intervals_pick_best_median_worst_and_draw_the_bands():
    df, bt, preds, mase = _backtest_and_forecast()
    examples = plots.interval_examples(df, preds, mase)
    order = mase.sort_values()
    assert [(e.label, e.series_id) for e in examples] == [("best", order.index[0]), ("median", order.index[2]),
                                                           ("worst", order.index[-1])]
    ex = examples[0]
    assert len(ex.history_y) == 36 and len(ex.yhat) == 12 and set(ex.bands) == {80.0, 95.0}
    assert (ex.bands[95.0][0] <= ex.bands[80.0][0]).all() and ex.mase == pytest.approx(order.iloc[0])
    with_bands = _image(plots.forecast_intervals(examples))
    without = _image(plots.forecast_intervals([plots.IntervalExample(e.label, e.series_id, e.history_ds, e.history_y,
                                                                     e.ds, e.yhat, {}, e.mase) for e in examples]))
    assert with_bands.shape == without.shape and np.abs(with_bands - without).sum() > 100  # the bands are drawn
    assert plots.forecast_intervals([])[:8] == PNG


def test_backtest_windows_draw_each_window_even_without_intervals():
    df, bt, _, mase = _backtest_and_forecast()
    examples = plots.backtest_examples(bt.frame, df, mase)
    assert len(examples) == 3 and all(len(e.windows) == 3 for e in examples)
    first = examples[0].windows[0]
    assert np.isnan(first.bands[95.0][0]).all()  # the earliest window has no earlier one to calibrate on
    assert np.isfinite(examples[0].windows[2].bands[95.0][0]).all()
    assert len(examples[0].y) == 12 + 36  # one horizon of history, then the three windows
    img = _image(plots.backtest_windows(examples))
    assert img.shape[0] > img.shape[1] * 0.6 and img.std() > 0.05
    assert plots.backtest_windows([])[:8] == PNG
    one = plots.backtest_examples(bt.frame, df, mase.iloc[:1])
    assert [e.label for e in one] == ["best"]  # one series: shown once, not three times
