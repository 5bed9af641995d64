"""The engine end to end on small data: prepare -> fit -> evaluate -> forecast -> predictions frame."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core import engine
from lstm_core.metrics import METRICS
from lstm_core.panel import Panel
from tests.conftest import Holdout, fast_config, make_frame, prepare

H = 12


@pytest.fixture(scope="module")
def cfg():
    return fast_config()


@pytest.fixture(scope="module")
def data(cfg):
    df = make_frame()  # 6 hourly series, levels 10..60
    panel, result = prepare(df, cfg)
    return df, panel, result


@pytest.fixture(scope="module")
def trained(cfg, data):
    _, panel, _ = data
    return engine.fit(panel.drop_last(H), cfg)


def test_prepare_packs_valid_series(data):
    df, panel, result = data
    assert result.skipped == []
    assert list(panel.series_ids) == [f"s{i:02d}" for i in range(6)]
    assert panel.n_features == 1 and (panel.lengths == 160).all()
    np.testing.assert_array_equal(panel.y, df.sort_values(["series_id", "ds"])["y"].to_numpy())


def test_fit_records_training_summary(trained, cfg):
    t = trained.training
    assert len(trained.members) == 1 and trained.window == cfg.window and trained.feature_names == ("y",)
    assert t["series"] == 6 and np.isfinite(t["best_val_loss"]) and t["device"] and "cudnn" in t
    assert trained.scaler is not None and trained.scaler.kind == "naive"


def test_fit_evaluate_forecast_gives_finite_forecasts_on_each_series_scale(trained, data, cfg):
    _, panel, _ = data
    ev = Holdout(trained, panel, cfg)
    assert ev.actual.shape == (6, H) and set(ev.forecasts) == {"lstm", "seasonal_naive"}
    np.testing.assert_array_equal(ev.actual, panel.last_values(H)[:, :, 0])
    for name, fc in ev.forecasts.items():
        assert fc.shape == (6, H) and np.isfinite(fc).all(), name
    for model in ("lstm", "seasonal_naive"):
        for metric in METRICS:
            assert np.isfinite(ev.overall(model, metric))
    fc = trained.forecast(panel, H)
    assert fc.shape == (6, H) and np.isfinite(fc).all()
    # each series is forecast in its own units (levels 10, 20, ..., 60; amplitude 30 %)
    levels = 10.0 * np.arange(1, 7)
    assert (np.abs(fc.mean(axis=1) - levels) < 0.5 * levels).all()


def test_evaluation_never_sees_the_holdout(trained, data, cfg):
    _, panel, _ = data
    changed = panel.values.copy()
    tail = np.concatenate([np.arange(e - H, e) for e in panel.offsets[1:]])
    changed[tail, 0] = 1e4
    other = Panel(panel.series_ids, panel.offsets, changed, panel.feature_names, panel.last_ds, panel.freq)
    a, b = Holdout(trained, panel, cfg), Holdout(trained, other, cfg)
    np.testing.assert_array_equal(a.forecasts["lstm"], b.forecasts["lstm"])
    np.testing.assert_array_equal(a.forecasts["seasonal_naive"], b.forecasts["seasonal_naive"])
    assert (b.actual == 1e4).all()


def test_forecast_refuses_other_features(trained, data):
    _, panel, _ = data
    wide = Panel(panel.series_ids, panel.offsets, np.c_[panel.values, panel.values], ("y", "temp"),
                 panel.last_ds, panel.freq)
    with pytest.raises(ValueError, match="model expects features"):
        trained.forecast(wide, H)


def test_predictions_continue_each_hourly_series(trained, data):
    _, panel, _ = data
    yhat = trained.forecast(panel, H)
    out = engine.predictions_frame(panel, yhat, "h")
    assert list(out.columns) == ["series_id", "ds", "step", "yhat", "cutoff"] and len(out) == 6 * H
    for i, sid in enumerate(panel.series_ids):
        rows = out[out["series_id"] == sid]
        last = pd.Timestamp(panel.last_ds[i])
        assert rows["step"].tolist() == list(range(1, H + 1))
        assert (rows["ds"] == [last + pd.Timedelta(hours=k) for k in range(1, H + 1)]).all()
        assert (rows["cutoff"] == last).all()
        np.testing.assert_array_equal(rows["yhat"], yhat[i])


def test_predictions_continue_weekly_series_on_mondays():
    frames = [make_frame(n_series=1, length=40, freq="W-MON", start="2024-01-01"),
              make_frame(n_series=1, length=50, freq="W-MON", start="2023-06-05").assign(series_id="late")]
    cfg = fast_config(freq="W-MON", season_length=4, window=8, horizon=4)
    panel, result = prepare(pd.concat(frames, ignore_index=True).astype({"series_id": "string"}), cfg)
    assert result.skipped == [] and panel.n_series == 2
    out = engine.predictions_frame(panel, np.zeros((2, 5)), "W-MON")
    for i, sid in enumerate(panel.series_ids):
        rows = out[out["series_id"] == sid]
        last = pd.Timestamp(panel.last_ds[i])
        assert rows["step"].tolist() == [1, 2, 3, 4, 5]
        assert (rows["ds"] == [last + pd.Timedelta(weeks=k) for k in range(1, 6)]).all()
        assert (rows["ds"].dt.dayofweek == 0).all()


def test_predictions_keep_utc_timestamps():
    df = make_frame(n_series=2, length=60)
    df["ds"] = df["ds"].dt.tz_localize("UTC")
    cfg = fast_config()
    panel, _ = prepare(df, cfg)
    out = engine.predictions_frame(panel, np.zeros((2, 3)), "h")
    assert str(out["ds"].dt.tz) == "UTC" and str(out["cutoff"].dt.tz) == "UTC"
    assert out["ds"].iloc[0] == df["ds"].iloc[59] + pd.Timedelta("1h")


def test_covariates_flow_through_fit_and_evaluate():
    df = make_frame(n_series=3, length=120)
    t = df.groupby("series_id").cumcount()
    df["hour_sin"] = np.sin(2 * np.pi * t / 24)
    df["ignored"] = 1.0  # not declared: not used
    cfg = fast_config(training={"epochs": 1}, historic_covariates=["hour_sin"])
    panel, result = prepare(df, cfg)
    assert result.covariates == ["hour_sin"] and panel.n_features == 2 and panel.roles == ("target", "historic")
    f = engine.fit(panel.drop_last(H), cfg)
    # the window carries the covariate's history; its values over each chunk are a second input
    # a historic covariate is only in the window (carried forward); known-ahead ones would be a second input
    assert f.members[0].input_shape == (None, cfg.window, 2) and f.known == ()
    ev = Holdout(f, panel, cfg)
    assert np.isfinite(ev.forecasts["lstm"]).all()


def test_per_series_mode_trains_one_model_per_series():
    cfg = fast_config(mode="per_series", training={"epochs": 1})
    panel, _ = prepare(make_frame(n_series=2, length=80), cfg)
    f = engine.fit(panel.drop_last(H), cfg)
    assert f.members == [] and set(f.per_series) == {"s00", "s01"}
    assert f.per_series["s00"].members[0] is not f.per_series["s01"].members[0]
    fc = f.forecast(panel, H)
    assert fc.shape == (2, H) and np.isfinite(fc).all()
    np.testing.assert_allclose(fc[1], f.per_series["s01"].forecast(panel.select(panel.series_ids == "s01"), H)[0])


def test_training_relies_on_the_same_minimum_length_as_validation():
    """Validation keeps any series with a valid point (issue 22); the network learns from series of a patch of
    input and a chunk of targets, and fit refuses a panel where no series has that many."""
    from lstm_core.length_rules import min_length, min_train_length

    cfg = fast_config()
    assert min_length(cfg) == 1
    assert min_train_length(cfg) == cfg.patch_length + cfg.chunk_length == 12
    short = Panel.from_frame(make_frame(n_series=2, length=11), "h")
    with pytest.raises(ValueError, match="each needs 12 points before its holdout"):
        engine.fit(short, cfg)
    panel, result = prepare(make_frame(n_series=2, length=12), cfg)
    assert result.skipped == []
    assert np.isfinite(engine.fit(panel, cfg).forecast(panel, H)).all()


def test_series_shorter_than_the_window_are_padded_with_their_first_value():
    p = Panel.from_frame(make_frame(n_series=2, length=5), "h")
    padded = p.pad_front(8)
    assert padded.lengths.tolist() == [8, 8] and padded.series_ids.tolist() == p.series_ids.tolist()
    for i in range(2):
        own = p.values[p.offsets[i]:p.offsets[i + 1]]
        got = padded.values[padded.offsets[i]:padded.offsets[i + 1]]
        np.testing.assert_array_equal(got[3:], own)
        np.testing.assert_array_equal(got[:3], np.repeat(own[:1], 3, axis=0))
    assert p.pad_front(5) is p  # long enough already


def test_a_series_shorter_than_the_window_trains_and_forecasts():
    """window 48 over series of 40 points: validation keeps them (a patch of history is enough), training pads
    them at the front, and the forecast is finite and on each series' level."""
    cfg = fast_config(window=48)
    df = make_frame(n_series=3, length=40)
    panel, result = prepare(df, cfg)
    assert result.skipped == [] and (panel.lengths < cfg.window).all()
    f = engine.fit(panel.drop_last(H), cfg)
    fc = f.forecast(panel, H)
    levels = 10.0 * np.arange(1, 4)
    assert np.isfinite(fc).all() and (np.abs(fc.mean(axis=1) - levels) < 0.5 * levels).all()
