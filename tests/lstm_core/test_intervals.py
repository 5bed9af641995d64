"""Conformal intervals: calibrated on known Gaussian noise, ordered and nested whatever the inputs,
widening with the step, per-series widths, the log scale, and serialised beside a model version."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lstm_core.backtest import backtest
from lstm_core.errors import ArtifactError
from lstm_core.interval_calibration import fit_conformal, held_out_bounds, min_scores
from lstm_core.intervals import (ConformalIntervals, enforce_order, load_intervals, naive_scales, save_intervals,
                                 with_intervals)
from lstm_core.metrics import seasonal_naive
from lstm_core.panel import Panel

H, M = 12, 24


def panel_of(y: np.ndarray, freq: str = "h") -> Panel:
    s, n = y.shape
    ids = np.array([f"s{i:03d}" for i in range(s)], dtype=object)
    frame = pd.DataFrame({"series_id": np.repeat(ids, n), "y": y.ravel(),
                          "ds": np.tile(pd.date_range("2026-01-01", periods=n, freq=freq), s)})
    return Panel.from_frame(frame.astype({"series_id": "string"}), freq)


def gaussian_panel(seed: int, s: int = 300, n: int = 300):
    """Seasonal means of very different levels plus Gaussian noise of known spread; H extra points."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(5, 500, s)
    amp, sigma = rng.uniform(0, 0.5, s) * level, rng.uniform(0.02, 0.2, s) * level
    t = np.arange(n + H)
    mean = level[:, None] + amp[:, None] * np.sin(2 * np.pi * t / M)[None, :]
    return mean, mean + sigma[:, None] * rng.standard_normal((s, n + H))


def true_mean_forecaster(mean: np.ndarray, ids: np.ndarray):
    row = {sid: i for i, sid in enumerate(ids)}

    def forecast(history: Panel, horizon: int, future) -> np.ndarray:
        return np.stack([mean[row[sid], n:n + horizon] for sid, n in zip(history.series_ids, history.lengths)])

    return forecast


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    return float(np.mean((y >= lo) & (y <= hi)))


def test_coverage_on_known_gaussian_noise_is_within_three_points_of_each_level():
    mean, y = gaussian_panel(seed=11)
    n = y.shape[1] - H
    panel = panel_of(y[:, :n])
    forecast = true_mean_forecaster(mean, panel.series_ids)
    bt = backtest(panel, forecast, horizon=H, season_length=M, windows=3, min_history=48, levels=(80, 95))
    # the published forecast: new points after the panel's end, never seen by the calibration
    bounds = bt.intervals.predict(panel, forecast(panel, H, None))
    for level in (80, 95):
        got = coverage(y[:, n:], bounds[f"yhat_lo_{level}"], bounds[f"yhat_hi_{level}"])
        assert abs(got - level / 100) <= 0.03, (level, got)
        # the backtest's own intervals are calibrated on earlier windows only: out of sample too
        f = bt.frame[bt.frame["cutoff"] > bt.frame["cutoff"].min()]
        got_bt = coverage(f["y"].to_numpy(), f[f"yhat_lo_{level}"].to_numpy(), f[f"yhat_hi_{level}"].to_numpy())
        assert abs(got_bt - level / 100) <= 0.03, (level, got_bt)


def random_case(rng: np.random.Generator):
    """Backtest-like residual tables with wild values: signs, zeros, huge and tiny scales, bias."""
    s, w, h = int(rng.integers(1, 8)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
    n = s * w * h
    ids = np.array([f"s{i}" for i in range(s)], dtype=object)
    yhat = rng.choice([-1.0, 1.0]) * rng.lognormal(rng.uniform(-3, 8), 2, n) * rng.choice([0, 1], n, p=[0.1, 0.9])
    bias = rng.normal(0, 5)  # shifted residuals make a tail quantile cross zero
    y = yhat + rng.standard_t(2, n) * rng.lognormal(0, 2) + bias
    table = pd.DataFrame({"series_id": np.repeat(ids, w * h), "cutoff": np.tile(np.repeat(np.arange(w), h), s),
                          "window": np.tile(np.repeat(np.arange(w), h), s), "step": np.tile(np.arange(1, h + 1), s * w),
                          "y": y, "yhat": yhat})
    scales = rng.lognormal(0, 3, s * w)
    table["interval_scale"] = np.repeat(scales, h)
    table["log_scale"] = np.where(rng.random(s * w) < 0.5, np.nan, scales / 10).repeat(h)
    levels = sorted(rng.choice([10, 50, 80, 90, 95, 99, 99.9], size=int(rng.integers(1, 4)), replace=False).tolist())
    return table, levels, h


@pytest.mark.parametrize("method", ["conformal", "conformal_log"])
def test_intervals_are_ordered_and_nested_for_random_inputs(method):
    rng = np.random.default_rng(2024 if method == "conformal" else 7)
    for case in range(60):
        table, levels, h = random_case(rng)
        fitted = fit_conformal(table, levels=levels, horizon=h, season_length=1, method=method,
                               prior_windows=float(rng.choice([0.5, 3.0, math.inf])))
        held = held_out_bounds(table, levels=levels, horizon=h, step=int(rng.integers(1, 4)), season_length=1,
                               method=method)
        n = int(rng.integers(1, 6))
        history = panel_of(rng.normal(0, 10, (n, 30)) * rng.lognormal(0, 3))
        yhat = rng.normal(0, 50, (n, h)) * rng.lognormal(0, 3)
        predicted = fitted.predict(history, yhat)
        for point, bounds in ((table["yhat"].to_numpy(), held), (yhat, predicted)):
            previous = None
            for level in levels:
                lo, hi = np.asarray(bounds[f"yhat_lo_{level:g}"]), np.asarray(bounds[f"yhat_hi_{level:g}"])
                done = ~np.isnan(lo)
                assert (lo[done] <= point[done]).all() and (point[done] <= hi[done]).all(), (case, level)
                if previous is not None:
                    assert (lo[done] <= previous[0][done]).all() and (hi[done] >= previous[1][done]).all(), case
                previous = (lo, hi)
        assert not np.isnan(predicted[f"yhat_lo_{levels[0]:g}"]).any()


def test_enforce_order_repairs_crossed_and_inverted_bounds():
    yhat = np.array([10.0, 10.0, np.nan])
    lower = np.array([[11.0, 8.0, 1.0], [9.0, 9.5, 1.0]])  # level 1: above yhat; level 2 inside level 1
    upper = np.array([[12.0, np.nan, 2.0], [11.0, 10.5, 2.0]])
    lo, hi = enforce_order(yhat, lower, upper)
    np.testing.assert_array_equal(lo[:, :2], [[10.0, 8.0], [9.0, 8.0]])
    np.testing.assert_array_equal(hi[:, :2], [[12.0, 10.0], [12.0, 10.5]])
    assert np.isnan(lo[:, 2]).all() and np.isnan(hi[:, 2]).all()


def test_intervals_widen_with_the_step_for_a_random_walk():
    rng = np.random.default_rng(5)
    y = 100 + np.cumsum(rng.normal(0, 1, (200, 200)), axis=1)
    panel = panel_of(y)
    naive = lambda history, horizon, future: seasonal_naive(history, horizon, 1)  # noqa: E731
    bt = backtest(panel, naive, horizon=H, season_length=1, windows=3)
    b = bt.intervals.predict(panel, naive(panel, H, None))
    width = (b["yhat_hi_95"] - b["yhat_lo_95"]).mean(axis=0)
    assert width[-1] > 2.5 * width[0]  # sqrt(12) ~ 3.5 for a random walk
    assert np.corrcoef(np.arange(H), width)[0, 1] > 0.9


def test_a_series_the_model_forecasts_worse_gets_wider_intervals_and_a_new_series_the_pool():
    rng = np.random.default_rng(8)
    base = 50 + 10 * np.sin(2 * np.pi * np.arange(300) / M)
    y = base[None, :] + rng.normal(0, 1, (40, 300))
    panel = panel_of(y[:, :288])
    truth = true_mean_forecaster(np.tile(base, (40, 1)), panel.series_ids)
    miss = np.random.default_rng(9)

    def forecast(history: Panel, horizon: int, future) -> np.ndarray:
        # series s000's forecasts are off by far more than its naive error shows (the scale cannot see it)
        out = truth(history, horizon, future)
        out[history.series_ids == "s000"] += miss.normal(0, 4, horizon)
        return out

    bt = backtest(panel, forecast, horizon=H, season_length=M, windows=3, min_history=48)
    f0, f1 = bt.intervals.series_factor["linear"]["s000"], bt.intervals.series_factor["linear"]["s001"]
    assert f0 > 1.5 > 1.2 > f1
    pooled = backtest(panel, forecast, horizon=H, season_length=M, windows=3, min_history=48,
                      prior_windows=math.inf).intervals
    fc = truth(panel, H, None)
    blended, pool = bt.intervals.predict(panel, fc), pooled.predict(panel, fc)
    w = lambda b, i: float((b["yhat_hi_95"][i] - b["yhat_lo_95"][i]).mean())  # noqa: E731
    assert w(blended, 0) > w(pool, 0) * 1.3
    # a series the calibration never saw is treated as the pool's average series
    renamed = Panel(np.array(["new"] + list(panel.series_ids[1:]), dtype=object), panel.offsets, panel.values,
                    panel.feature_names, panel.last_ds, panel.freq)
    assert "new" not in bt.intervals.series_factor["linear"]
    unseen = bt.intervals.predict(renamed, fc)
    q = bt.intervals.quantiles["linear"][1]  # (2, H) of level 95
    scale = naive_scales(renamed, M)[0][0]
    np.testing.assert_allclose(unseen["yhat_hi_95"][0], fc[0] + scale * q[1], rtol=1e-12)


def test_log_scale_intervals_stay_positive_and_fall_back_for_non_positive_series():
    rng = np.random.default_rng(9)
    y = np.exp(rng.normal(0, 0.3, (30, 150)).cumsum(axis=1) * 0.1) * rng.uniform(1, 1000, (30, 1))
    y[0] -= y[0].max() + 1.0  # all negative: no log scale
    panel = panel_of(y[:, :140])
    naive = lambda history, horizon, future: seasonal_naive(history, horizon, 1)  # noqa: E731
    bt = backtest(panel, naive, horizon=10, season_length=1, windows=3, interval_method="conformal_log")
    assert set(bt.intervals.quantiles) == {"linear", "log"}
    fc = naive(panel, 10, None)
    b = bt.intervals.predict(panel, fc)
    assert (b["yhat_lo_95"][1:] > 0).all()  # exp() keeps positive series positive
    lin = backtest(panel, naive, horizon=10, season_length=1, windows=3).intervals.predict(panel, fc)
    assert not np.allclose(b["yhat_hi_95"][1:], lin["yhat_hi_95"][1:])
    assert np.isfinite(b["yhat_lo_95"][0]).all() and (b["yhat_lo_95"][0] < fc[0]).all()  # the linear fallback


def test_round_trip_through_json_gives_the_same_intervals():
    mean, y = gaussian_panel(seed=3, s=40, n=200)
    panel = panel_of(y[:, :200])
    forecast = true_mean_forecaster(mean, panel.series_ids)
    fitted = backtest(panel, forecast, horizon=H, season_length=M, levels=(50, 80, 97.5)).intervals
    again = ConformalIntervals.from_dict(json.loads(json.dumps(fitted.to_dict())))
    fc = forecast(panel, H, None)
    a, b = fitted.predict(panel, fc), again.predict(panel, fc)
    assert list(a) == ["yhat_lo_50", "yhat_hi_50", "yhat_lo_80", "yhat_hi_80", "yhat_lo_97.5", "yhat_hi_97.5"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    pooled = fit_conformal(pd.DataFrame({"series_id": ["a"], "cutoff": [0], "window": [0], "step": [1], "y": [2.0],
                                         "yhat": [1.0], "interval_scale": [1.0], "log_scale": [np.nan]}),
                           levels=[80], horizon=1, season_length=1, prior_windows=math.inf)
    assert ConformalIntervals.from_dict(json.loads(json.dumps(pooled.to_dict()))).prior_windows == math.inf
    bad = fitted.to_dict()
    bad["quantiles"]["linear"] = bad["quantiles"]["linear"][:1]
    with pytest.raises(ValueError, match=r"quantiles\['linear'\] must have shape \(3, 2, 12\)"):
        ConformalIntervals.from_dict(bad)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_saved_beside_a_model_version_and_loaded_back(where, tmp_path, request):
    store = str(tmp_path / "models") if where == "local" else request.getfixturevalue("s3_bucket") + "/models"
    mean, y = gaussian_panel(seed=4, s=20, n=150)
    panel = panel_of(y[:, :150])
    forecast = true_mean_forecaster(mean, panel.series_ids)
    fitted = backtest(panel, forecast, horizon=H, season_length=M).intervals
    assert load_intervals(store, "key", "v1") is None  # a model saved before intervals existed
    path = save_intervals(fitted, store, "key", "v1")
    assert path.endswith("key/v1/intervals.json")
    loaded = load_intervals(store, "key", "v1")
    fc = forecast(panel, H, None)
    np.testing.assert_array_equal(loaded.predict(panel, fc)["yhat_hi_95"], fitted.predict(panel, fc)["yhat_hi_95"])
    if where == "local":
        (tmp_path / "models" / "key" / "v1" / "intervals.json").write_text("{not json")
        with pytest.raises(ArtifactError, match="intervals.json is corrupt"):
            load_intervals(store, "key", "v1")


def test_bad_arguments_are_refused():
    table = pd.DataFrame({"series_id": ["a"], "cutoff": [0], "window": [0], "step": [1], "y": [np.nan],
                          "yhat": [1.0], "interval_scale": [1.0], "log_scale": [np.nan]})
    with pytest.raises(ValueError, match="no finite backtest residuals"):
        fit_conformal(table, levels=[80], horizon=1, season_length=1)
    with pytest.raises(ValueError, match="interval method"):
        fit_conformal(table, levels=[80], horizon=1, season_length=1, method="bootstrap")
    with pytest.raises(ValueError, match="levels"):
        fit_conformal(table, levels=[95, 80], horizon=1, season_length=1)
    table["y"] = 2.0
    fitted = fit_conformal(table, levels=[80], horizon=1, season_length=1)
    with pytest.raises(ValueError, match="calibrated for 1 steps, not 2"):
        fitted.predict(panel_of(np.ones((1, 5)) + np.arange(5)), np.ones((1, 2)))


def test_split_conformal_ranks_and_borrowing_from_neighbouring_steps():
    def table(per_step: int, steps: int) -> pd.DataFrame:
        # scores 100 h + 0..per_step-1 at step h (scale 1, yhat 0): the ranks can be read off
        step = np.repeat(np.arange(1, steps + 1), per_step)
        y = 100.0 * (step - 1) + np.tile(np.arange(per_step), steps)
        return pd.DataFrame({"series_id": [f"s{i}" for i in range(len(y))], "cutoff": 0, "window": 0, "step": step,
                             "y": y, "yhat": 0.0, "interval_scale": 1.0, "log_scale": np.nan})

    assert (min_scores(80), min_scores(95), min_scores(50)) == (9, 39, 3)
    q = fit_conformal(table(10, 3), levels=[80, 95], horizon=3, season_length=1, prior_windows=math.inf).quantiles
    # 80 %: 10 scores per step are enough; ranks floor(11 x 0.1) = 1 and ceil(11 x 0.9) = 10 of the step's own
    np.testing.assert_array_equal(q["linear"][0], [[0, 100, 200], [9, 109, 209]])
    # 95 % needs 39 scores: all 30 are pooled and still too few, so the extremes of all steps
    np.testing.assert_array_equal(q["linear"][1], [[0, 0, 0], [209, 209, 209]])
    q = fit_conformal(table(20, 4), levels=[95], horizon=4, season_length=1, prior_windows=math.inf).quantiles
    # 20 per step: step 1 borrows step 2 (40 scores: ranks 1 and ceil(41 x 0.975) = 40), step 2 borrows
    # steps 1 and 3 (60 scores: ranks 1 and ceil(61 x 0.975) = 60)
    np.testing.assert_array_equal(q["linear"][0][:, :2], [[0, 0], [119, 219]])


def test_with_intervals_adds_the_columns_to_the_predictions_frame():
    from lstm_core.engine import predictions_frame

    mean, y = gaussian_panel(seed=6, s=4, n=100)
    panel = panel_of(y[:, :100])
    forecast = true_mean_forecaster(mean, panel.series_ids)
    fc = forecast(panel, H, None)
    bounds = backtest(panel, forecast, horizon=H, season_length=M).intervals.predict(panel, fc)
    frame = with_intervals(predictions_frame(panel, fc, "h"), bounds)
    assert list(frame.columns)[-4:] == ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    row = frame[(frame["series_id"] == "s002") & (frame["step"] == 5)].iloc[0]
    assert row["yhat_hi_95"] == bounds["yhat_hi_95"][2, 4] and row["yhat"] == fc[2, 4]
    with pytest.raises(ValueError, match="48 prediction rows"):
        with_intervals(predictions_frame(panel, fc, "h"), {"yhat_lo_80": np.zeros((3, H))})
