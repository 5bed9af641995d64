"""Rolling-origin backtests: the windows' layout, no look-ahead (a planted spike), short series,
refit, covariates, today's holdout as one window, and metrics equal to the M4 scorer's."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core import engine
from lstm_core.backtest import FRAME_COLUMNS, backtest, backtest_from_config, backtest_metrics, cutoff_drops
from lstm_core.metrics import mase_scale, metrics_frame, seasonal_naive
from lstm_core.panel import Panel
from tests.conftest import fast_config, make_frame, prepare
from tests.m4ref import m4_scorer

H = 12


def snaive(history: Panel, horizon: int, future) -> np.ndarray:
    return seasonal_naive(history, horizon, 24)


@pytest.fixture(scope="module")
def cfg():
    return fast_config()


@pytest.fixture(scope="module")
def panel(cfg):
    return prepare(make_frame(n_series=6, length=160), cfg)[0]


@pytest.fixture(scope="module")
def trained(cfg, panel):
    """A real small LSTM, trained on the data before the earliest of 3 cutoffs H apart."""
    return engine.fit(panel.drop_last(3 * H), cfg)


def with_values(panel: Panel, values: np.ndarray) -> Panel:
    return Panel(panel.series_ids, panel.offsets, values, panel.feature_names, panel.last_ds, panel.freq)


def window_of(bt, w: int) -> pd.DataFrame:
    cut = bt.scales.loc[bt.scales["window"] == w, ["series_id", "cutoff"]]
    return bt.frame.merge(cut, on=["series_id", "cutoff"])


def test_cutoff_drops_are_step_apart_and_end_with_the_holdout():
    np.testing.assert_array_equal(cutoff_drops(3, 12, 12), [36, 24, 12])
    np.testing.assert_array_equal(cutoff_drops(3, 6, 12), [24, 18, 12])
    np.testing.assert_array_equal(cutoff_drops(1, 5, 12), [12])
    with pytest.raises(ValueError):
        cutoff_drops(0, 12, 12)


def test_frame_layout_dates_actuals_and_seasonal_naive(panel):
    bt = backtest(panel, snaive, horizon=H, season_length=24, windows=3, step=6)
    f = bt.frame
    assert list(f.columns) == [*FRAME_COLUMNS, "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    assert f["series_id"].dtype == "string" and f["step"].dtype == "int64" and f["cutoff"].dtype == f["ds"].dtype
    assert len(f) == 6 * 3 * H and bt.skipped.empty
    end = pd.Timestamp(panel.last_ds[0])
    assert sorted(f["cutoff"].unique()) == [end - pd.Timedelta(hours=d) for d in (24, 18, 12)]  # step 6 apart
    assert (f["ds"] == f["cutoff"] + pd.to_timedelta(f["step"], unit="h")).all()
    y = panel.y[panel.offsets[0]:panel.offsets[1]]  # series s00: its last 24 points hold all windows
    first = f[(f["series_id"] == "s00") & (f["cutoff"] == end - pd.Timedelta(hours=24))]
    np.testing.assert_array_equal(first["y"], y[-24:-12])
    history = panel.select(panel.series_ids == "s00").drop_last(24)
    np.testing.assert_array_equal(first["seasonal_naive"], seasonal_naive(history, H, 24)[0])
    np.testing.assert_array_equal(first["yhat"], first["seasonal_naive"])
    np.testing.assert_allclose(bt.scales.loc[bt.scales["window"] == 0, "mase_scale"],
                               mase_scale(panel.drop_last(24), 24))


def test_a_spike_after_a_cutoff_never_reaches_that_window_or_earlier_ones(panel, trained, cfg):
    """The model is trained before the earliest cutoff; a spike right after window 1's cutoff changes
    window 1's actuals but neither its forecast nor window 0's; window 2 (whose input holds the spike)
    does change, so the comparison can tell."""
    spiked = panel.values.copy()
    spike_rows = panel.offsets[1:] - 2 * H  # first point after window 1's cutoff, every series
    spiked[spike_rows, 0] += 1e4
    other = with_values(panel, spiked)
    a = backtest(panel, trained.forecast, horizon=H, season_length=24)
    b = backtest(other, trained.forecast, horizon=H, season_length=24)
    for w in (0, 1):  # forecasts and intervals (calibrated on earlier windows only) alike
        pd.testing.assert_frame_equal(window_of(a, w).drop(columns="y"), window_of(b, w).drop(columns="y"))
    assert window_of(a, 0)["yhat_lo_80"].isna().all() and window_of(a, 1)["yhat_lo_80"].notna().all()
    spiked_rows = window_of(b, 1)[window_of(b, 1)["step"] == 1]
    assert (spiked_rows["y"] > 1e4).all()
    assert not np.allclose(window_of(a, 2)["yhat"], window_of(b, 2)["yhat"])


def test_fit_fn_trains_once_before_the_earliest_cutoff_or_refits_each_window(panel):
    seen: list[tuple[int, float]] = []
    spiked = panel.values.copy()
    spiked[panel.offsets[1:] - 2 * H, 0] = 1e6  # right after window 1's cutoff
    other = with_values(panel, spiked)

    def fit_fn(train: Panel):
        seen.append((int(train.lengths.max()), float(train.y.max())))
        return snaive

    backtest(other, fit_fn=fit_fn, horizon=H, season_length=24, windows=3)
    assert seen == [(160 - 3 * H, seen[0][1])] and seen[0][1] < 1e6
    seen.clear()
    backtest(other, fit_fn=fit_fn, horizon=H, season_length=24, windows=3, refit=True)
    assert [n for n, _ in seen] == [160 - 3 * H, 160 - 2 * H, 160 - H]
    assert seen[0][1] < 1e6 and seen[1][1] < 1e6 and seen[2][1] >= 1e6  # only the last window's fit sees it


@pytest.mark.slow
def test_refit_with_a_real_model_never_sees_a_spike_after_the_cutoff(panel, cfg):
    fit_fn = lambda train: engine.fit(train, cfg).forecast  # noqa: E731
    spiked = panel.values.copy()
    spiked[panel.offsets[1:] - H, 0] += 1e4  # right after the last window's cutoff
    a = backtest(panel, fit_fn=fit_fn, horizon=H, season_length=24, windows=2, refit=True, levels=())
    b = backtest(with_values(panel, spiked), fit_fn=fit_fn, horizon=H, season_length=24, windows=2, refit=True,
                 levels=())
    pd.testing.assert_series_equal(a.frame["yhat"], b.frame["yhat"])
    assert (b.frame["y"] - a.frame["y"]).max() == pytest.approx(1e4)


def test_series_too_short_for_a_window_skip_that_window_only(cfg):
    df = make_frame(n_series=3, length=160)
    df = df[~((df["series_id"] == "s01") & (df["ds"] < df["ds"].min() + pd.Timedelta(hours=100)))]  # 60 points
    p = prepare(df, cfg)[0]
    bt = backtest(p, snaive, horizon=H, season_length=24, windows=3, min_history=30)
    # s01 has 60 points: 60 - 36 = 24 < 30 before window 0's cutoff; 36 and 48 before windows 1 and 2
    assert bt.skipped[["series_id", "window", "history"]].values.tolist() == [["s01", 0, 24]]
    assert "fewer than 30" in bt.skipped["reason"].iloc[0]
    counts = bt.frame.groupby("series_id").size()
    assert counts.to_dict() == {"s00": 3 * H, "s01": 2 * H, "s02": 3 * H}
    nothing = backtest(p, snaive, horizon=H, season_length=24, windows=3, min_history=500)
    assert nothing.frame.empty and len(nothing.skipped) == 9 and nothing.intervals is None
    assert list(nothing.frame.columns)[:7] == list(FRAME_COLUMNS)


def test_known_future_covariates_of_each_window_reach_the_forecast(cfg):
    from lstm_core.covariates import CovariateSpec

    df = make_frame(n_series=2, length=100)
    df["temp"] = np.arange(len(df), dtype=float)
    df["visits"] = -1.0  # historic: observed only, never passed as known ahead
    p = Panel.from_frame(df, "h", spec=CovariateSpec(historic=("visits",), future=("temp",)))
    assert p.feature_names == ("y", "visits", "temp") and p.roles == ("target", "historic", "future")
    got = []

    def forecast(history: Panel, horizon: int, future):
        got.append((history.last_values(1)[:, 0, 2], future))
        return np.zeros((history.n_series, horizon))

    backtest(p, forecast, horizon=H, season_length=24, windows=2, levels=())
    for (last, future), drop in zip(got, (2 * H, H)):
        assert future.shape == (2, H, 1)
        np.testing.assert_array_equal(future[:, :, 0], last[:, None] + np.arange(1, H + 1))  # the next H values
        np.testing.assert_array_equal(last, p.offsets[1:] - drop - 1)


def test_one_window_of_step_h_is_todays_holdout(panel, trained, cfg):
    # today's holdout, built from the parts: the last H points, forecast from what precedes them
    history = panel.drop_last(H)
    actual = panel.last_values(H)[:, :, 0]
    forecasts = {"lstm": trained.forecast(history, H), "seasonal_naive": seasonal_naive(history, H, cfg.season_length)}
    expected = metrics_frame(history.series_ids, actual, forecasts, mase_scale(history, cfg.season_length))
    bt = backtest(panel, trained.forecast, horizon=H, season_length=cfg.season_length, windows=1)
    f = bt.frame
    np.testing.assert_array_equal(f["yhat"].to_numpy().reshape(6, H), forecasts["lstm"])
    np.testing.assert_array_equal(f["seasonal_naive"].to_numpy().reshape(6, H), forecasts["seasonal_naive"])
    np.testing.assert_array_equal(f["y"].to_numpy().reshape(6, H), actual)
    m = bt.metrics("lstm")
    for model in ("lstm", "seasonal_naive"):
        for metric in ("mae", "rmse", "smape", "mase"):
            ours = m[(m["model"] == model) & (m["metric"] == metric) & m["window"].notna() & m["series_id"].notna()]
            theirs = expected[(expected["model"] == model) & (expected["metric"] == metric)
                              & expected["series_id"].notna()]
            np.testing.assert_allclose(ours.sort_values("series_id")["value"], theirs.sort_values("series_id")["value"],
                                       rtol=1e-12)
            pooled = m[(m["model"] == model) & (m["metric"] == metric) & m["series_id"].isna() & m["window"].isna()]
            overall = expected[(expected["model"] == model) & (expected["metric"] == metric)
                               & expected["series_id"].isna()]
            assert float(pooled["value"].iloc[0]) == pytest.approx(float(overall["value"].iloc[0]), rel=1e-12)
    # one window has no earlier window to calibrate its intervals on
    assert f[["yhat_lo_80", "yhat_hi_95"]].isna().all().all() and bt.intervals is not None


def test_backtest_metrics_equal_the_m4_scorer_on_each_window(panel):
    m4 = m4_scorer()
    bt = backtest(panel, snaive, horizon=H, season_length=24, windows=3)
    m = bt.metrics("snaive")
    frame = pd.DataFrame({"series_id": np.repeat(panel.series_ids, panel.lengths), "y": panel.y})
    frame["ds"] = pd.DatetimeIndex(np.repeat(panel.last_ds, panel.lengths)) - pd.to_timedelta(
        np.concatenate([np.arange(n - 1, -1, -1) for n in panel.lengths]), unit="h")
    for w in range(3):
        rows = window_of(bt, w)
        cutoff = rows["cutoff"].iloc[0]
        train, test = frame[frame["ds"] <= cutoff], rows[["series_id", "ds", "y"]]
        forecast = rows.drop(columns="y")
        if w == 0:  # no earlier window to calibrate on: no intervals, no interval metrics
            assert forecast["yhat_lo_95"].isna().all()
            forecast = forecast.drop(columns=["yhat_lo_95", "yhat_hi_95"])
        ref = m4.score(train, test, forecast, "yhat", 24, 95)
        ours = m[m["series_id"].isna() & (m["window"] == w) & (m["model"] == "snaive")].set_index("metric")["value"]
        compared = ("smape", "mase") if w == 0 else ("smape", "mase", "msis_95", "coverage_95")
        for metric in compared:
            tolerance = 6e-5 if metric == "coverage_95" else 6e-4  # the scorer rounds to 4 and 3 decimals
            assert ours[metric] == pytest.approx(ref[metric], abs=tolerance), (w, metric)
        if w == 0:
            assert "coverage_95" not in ours.index and "msis_95" not in ours.index
        assert (m.loc[m["series_id"].isna() & (m["window"] == w), "cutoff"] == cutoff).all()
    pooled = m[m["series_id"].isna() & m["window"].isna() & (m["model"] == "snaive")].set_index("metric")["value"]
    per_window = m[m["series_id"].isna() & m["window"].notna() & (m["model"] == "snaive")]
    # every series in every window: pooled = the mean over the windows that have the metric
    for metric in ("mase", "coverage_95", "msis_95"):
        assert pooled[metric] == pytest.approx(per_window.loc[per_window["metric"] == metric, "value"].mean())
    assert (per_window["metric"] == "coverage_95").sum() == 2


def test_backtest_metrics_of_merged_shards_equal_the_whole(panel):
    whole = backtest(panel, snaive, horizon=H, season_length=24, windows=3)
    shards = [backtest(panel.select(mask), snaive, horizon=H, season_length=24, windows=3)
              for mask in (np.arange(6) < 2, np.arange(6) >= 2)]
    # the shards' own intervals are calibrated on their own series; score the whole run's columns
    for shard in shards:
        shard.frame = shard.frame[["series_id", "cutoff"]].merge(whole.frame, on=["series_id", "cutoff"]) \
            .drop_duplicates(["series_id", "cutoff", "step"]).reset_index(drop=True)
    merged = backtest_metrics(shards[0].sums("m").merge(shards[1].sums("m")))
    expected = whole.metrics("m")
    key = ["series_id", "window", "model", "metric"]
    a = merged.sort_values(key, na_position="first").reset_index(drop=True)
    b = expected.sort_values(key, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_arguments_are_checked_and_the_config_is_used(panel, cfg):
    with pytest.raises(ValueError, match="exactly one"):
        backtest(panel, snaive, fit_fn=lambda p: snaive, horizon=H, season_length=24)
    with pytest.raises(ValueError, match="exactly one"):
        backtest(panel, horizon=H, season_length=24)
    with pytest.raises(ValueError, match="shape"):
        backtest(panel, lambda h, n, f: np.zeros((1, 1)), horizon=H, season_length=24)
    c = cfg.model_copy(update={"backtest": cfg.backtest.model_copy(update={"windows": 2, "step": 5}),
                               "levels": [90]})
    bt = backtest_from_config(panel, c, snaive)
    assert bt.windows == 2 and bt.step == 5 and bt.levels == (90.0,)
    assert {"yhat_lo_90", "yhat_hi_90"} <= set(bt.frame.columns) and bt.frame["cutoff"].nunique() == 2
    assert bt.intervals.levels == (90.0,)


def test_on_window_reports_the_start_and_each_window_after_its_forecast_even_when_every_series_skips_it(panel):
    events: list[tuple] = []

    def forecast_fn(history: Panel, horizon: int, future) -> np.ndarray:
        events.append(("forecast", int(history.lengths.max())))
        return snaive(history, horizon, future)

    backtest(panel, forecast_fn, horizon=H, season_length=24, windows=3, levels=(),
             on_window=lambda done, total: events.append(("window", done, total)))
    assert events == [("window", 0, 3), ("forecast", 160 - 3 * H), ("window", 1, 3), ("forecast", 160 - 2 * H), ("window", 2, 3),
                      ("forecast", 160 - H), ("window", 3, 3)]
    events.clear()
    # windows before `first_window` are skipped by every series: still reported, so the count reaches the total
    backtest(panel, forecast_fn, horizon=H, season_length=24, windows=3, levels=(), first_window=2,
             on_window=lambda done, total: events.append(("window", done, total)))
    assert events == [("window", 0, 3), ("window", 1, 3), ("window", 2, 3), ("forecast", 160 - H), ("window", 3, 3)]
