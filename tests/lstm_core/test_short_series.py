"""Issue 22, point 2: the network learns from short series too.

Windows and the minimum length follow what each series allows: a short series is padded at the front so
every position with a real input point gives a training window; validation points are held out only where a
training chunk still precedes them; backtest windows a series is too short for drop before the series does.
No series is skipped for being short: those the network cannot learn are handed to the fallback with a reason.
Real Keras training on small panels (a few epochs of a tiny LSTM).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_core import engine
from lstm_core.backtest import backtest_from_config, training_cutoff
from lstm_core.length_rules import min_input, min_train_length
from lstm_core.modelling import prepare_data
from lstm_core.validation import validate_for
from lstm_core.windows import plan_windows, sample_windows, tail_windows, target_bounds, validation_span
from tests.conftest import fast_config

H = 6  # yearly horizon (M3)


def yearly_config(**overrides):
    """Yearly data as a user gives them (freq and horizon only), trained briefly."""
    base = {"freq": "YS", "horizon": H, "season_length": None, "window": None, "model": {"units": [8]},
            "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1}}
    return fast_config(**{**base, **overrides})


def yearly_frame(lengths: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Trending yearly series of the given lengths, all ending in 2025 (as M3's series do, give or take)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, (sid, n) in enumerate(lengths.items()):
        level = 100.0 * (i + 1)
        y = level * (1 + 0.05 * np.arange(n)) + rng.normal(0, 0.02 * level, n)
        parts.append(pd.DataFrame({"series_id": sid, "ds": pd.date_range(end="2025-01-01", periods=n, freq="YS"),
                                   "y": y}))
    out = pd.concat(parts, ignore_index=True)
    out["series_id"] = out["series_id"].astype("string")
    return out


def test_a_14_point_yearly_series_is_in_the_networks_training_windows():
    """The case of the issue: 14 yearly points with H 6 were refused ('needs 18'). Now the series is kept,
    and training draws windows whose targets are its own real values, with real input points before them."""
    cfg = yearly_config()
    frame = yearly_frame({"long": 40, "y14": 14})
    result = validate_for(frame, cfg)
    assert result.skipped == []
    data = prepare_data(result, cfg)
    assert data.fallback == []
    train = data.train_panel
    assert "y14" in set(train.series_ids)
    span = validation_span(cfg.validation_steps, cfg.chunk_length)
    plan = plan_windows(train.lengths, cfg.window, cfg.chunk_length, span, min_input(cfg))
    padded = train.pad_rows(plan.pad)
    i = int(np.flatnonzero(train.series_ids == "y14")[0])
    lo, hi = target_bounds(padded, cfg.window, plan.holdout, cfg.chunk_length, plan.first_target)
    assert hi[i] > lo[i]  # positions to learn from
    # the windows built: every sampled window of y14 ends in real targets of y14 after >= 1 real input point
    own = train.values[train.offsets[i]:train.offsets[i + 1], 0].astype(np.float32)  # windows are float32
    only = padded.select(padded.series_ids == "y14")
    w = sample_windows(only, cfg.window, 64, np.random.default_rng(0), plan.holdout[i:i + 1],
                       chunk=cfg.chunk_length, first_target=plan.first_target[i:i + 1])
    assert len(w.y) == min(64, int(hi[i] - lo[i]))
    for x, y in zip(w.x[:, :, 0], w.y):
        start = next(k for k in range(len(own) - len(y) + 1) if np.array_equal(own[k:k + len(y)], y))
        assert start >= min_input(cfg)  # targets are real points after a patch of real input
        np.testing.assert_array_equal(x[-min(start, cfg.window):], own[max(0, start - cfg.window):start])
    # and the network trains on it and forecasts it
    model = engine.fit(train, cfg)
    fc = model.forecast(data.panel.select(data.panel.series_ids == "y14"), H)
    assert fc.shape == (1, H) and np.isfinite(fc).all()


@pytest.fixture(scope="module")
def mixed():
    """Four long yearly series plus series of 1, 2, 5 and 10 points, through validation and a fit."""
    cfg = yearly_config()
    lengths = {f"long{i}": 30 + 3 * i for i in range(4)} | {"p1": 1, "p2": 2, "p5": 5, "p10": 10}
    result = validate_for(yearly_frame(lengths), cfg)
    data = prepare_data(result, cfg)
    return cfg, result, data, engine.fit(data.train_panel, cfg)


def test_no_series_is_skipped_for_being_short(mixed):
    cfg, result, data, _ = mixed
    assert result.skipped == [] and data.skipped == []
    # every series is kept (`all_series`); the network's own panel holds those it learns (issue 22: the rest
    # is served by the statistical fallback)
    assert set(data.all_series.series_ids) == {"long0", "long1", "long2", "long3", "p1", "p2", "p5", "p10"}
    assert set(data.panel.series_ids) == {"long0", "long1", "long2", "long3", "p10"}
    assert not any("too short" in s.reason for s in result.skipped)


def test_series_the_network_cannot_learn_are_handed_to_the_fallback_with_a_reason(mixed):
    cfg, _, data, _ = mixed
    need = min_train_length(cfg)
    assert need == min_input(cfg) + cfg.chunk_length == 6  # a patch of 3 input points and a chunk of 3 targets
    assert {s.series_id: s.field for s in data.fallback} == {"p1": "y", "p2": "y", "p5": "y"}
    reason = {s.series_id: s.reason for s in data.fallback}
    assert reason["p1"].startswith("1 points: the network needs 6") and "fallback" in reason["p5"]


def test_every_series_gets_a_finite_forecast_and_backtest_rows_where_its_history_allows(mixed):
    cfg, _, data, model = mixed
    fc = model.forecast(data.all_series, H)  # the network can forecast any length (front padding)
    assert fc.shape == (8, H) and np.isfinite(fc).all()
    bt = backtest_from_config(data.all_series, cfg, model.forecast, min_history=min_train_length(cfg),
                              first_window=data.first_window)
    scored = set(bt.frame["series_id"])
    assert scored == {"long0", "long1", "long2", "long3"}
    # p10 has 10 - 6 < 6 points before the last cutoff: it skips the windows (and training), not the run;
    # the network still forecasts it from its whole history
    assert set(bt.skipped["series_id"]) >= {"p1", "p2", "p5", "p10"}
    assert (bt.skipped["reason"].str.contains("points before the cutoff")).any()


def test_validation_windows_drop_before_the_series_does():
    """A series too short to spare its validation points only trains; long ones keep theirs (unchanged)."""
    window, chunk, span = 12, 3, 6
    lengths = np.array([1, 3, 4, 9, 10, 20, window + chunk + span, 100])
    plan = plan_windows(lengths, window, chunk, span)
    # validation needs a training chunk after one real point before the last `span` points: n >= 10
    assert plan.holdout.tolist() == [0, 0, 0, 0, 6, 6, 6, 6]
    assert plan.pad.tolist() == [11] * 6 + [0, 0]  # long series are windowed as they are
    # on a tiny panel with no series able to spare them, training still validates (on its last chunk)
    cfg = yearly_config(window=12)
    tiny = validate_for(yearly_frame({"a": 8, "b": 9}), cfg)
    data = prepare_data(tiny, cfg)
    fitted = engine.fit(data.panel, cfg)
    assert np.isfinite(fitted.training["best_val_loss"])


def test_backtest_windows_drop_before_the_series_does():
    """Three windows of 6 on series of 12 and 40 points: the short one joins the windows its history
    allows and trains up to the cutoff of the first of them (it has the 6 points the network learns from)."""
    cfg = yearly_config(backtest={"windows": 3})
    data = prepare_data(validate_for(yearly_frame({"short": 12, "long": 40}), cfg), cfg)
    first, train = training_cutoff(data.panel, cfg)
    # 12 - 18 and 12 - 12 < 6: short trains on its first 6 points, before the last window's cutoff
    assert first == 0 and dict(zip(train.series_ids, train.lengths.tolist())) == {"long": 22, "short": 6}
    model = engine.fit(train, cfg)
    bt = backtest_from_config(data.panel, cfg, model.forecast, min_history=min_train_length(cfg),
                              first_window=first)
    windows = bt.frame.groupby("series_id")["cutoff"].nunique().to_dict()
    # short has 12 - 18 and 12 - 12 points before the first two cutoffs (< 6), 6 before the last
    assert windows == {"long": 3, "short": 1}
    assert bt.skipped[bt.skipped["series_id"] == "short"]["window"].tolist() == [0, 1]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 80), min_size=1, max_size=8), window=st.integers(2, 30),
       chunk=st.integers(1, 8), steps=st.integers(1, 12), need=st.integers(1, 8))
def test_window_plan_properties(lengths, window, chunk, steps, need):
    """For any lengths: every series of at least min_input + chunk points has a training window; inputs hold
    at least min_input real points; training targets never reach a series' validation points; series long
    enough for a full window, a chunk and the validation span are windowed exactly as before (no padding)."""
    from lstm_core.panel import Panel

    span = validation_span(steps, chunk)
    n = np.array(lengths)
    plan = plan_windows(n, window, chunk, span, need)
    need = min(need, window)
    frame = yearly_frame({f"s{i}": int(k) for i, k in enumerate(n)})
    panel = Panel.from_frame(frame, "YS")
    padded = panel.pad_rows(plan.pad)
    lo, hi = target_bounds(padded, window, plan.holdout, chunk, plan.first_target)
    count = np.maximum(hi - lo, 0)
    assert ((n >= need + chunk) == (count > 0)).all()
    # first target in real positions: at least min_input real points precede it
    assert (lo - plan.pad >= need).all()
    # last training target ends before the validation points
    assert ((hi - 1 + chunk) <= padded.lengths - plan.holdout).all()
    long = n >= window + chunk + span
    assert (plan.pad[long] == 0).all() and (plan.holdout[long] == span).all()
    val = tail_windows(padded, window, steps, chunk, series=plan.holdout > 0)
    assert len(val.y) == int((plan.holdout > 0).sum()) * (span // chunk)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(2, 30), min_size=1, max_size=6), data=st.data())
def test_drop_each_is_drop_last_per_series(lengths, data):
    """Panel.drop_each (the per-series training cutoff) equals dropping each series' own count alone."""
    from lstm_core.panel import Panel

    drops = [data.draw(st.integers(0, n - 1)) for n in lengths]
    panel = Panel.from_frame(yearly_frame({f"s{i}": n for i, n in enumerate(lengths)}), "YS")
    got = panel.drop_each(np.array(drops))
    assert got.series_ids.tolist() == panel.series_ids.tolist()
    for i, sid in enumerate(panel.series_ids):
        alone = panel.select(panel.series_ids == sid).drop_last(drops[i])
        np.testing.assert_array_equal(got.values[got.offsets[i]:got.offsets[i + 1]], alone.values)
        assert got.last_ds[i] == alone.last_ds[0]


def test_each_series_trains_up_to_its_own_earliest_cutoff():
    """Three backtest windows of 6 (drops 18, 12, 6), network minimum 6: a 40-point series trains on 22
    points, a 20-point one on 8 (window 1's cutoff), a 14-point one on 8 (window 2's), a 5-point one not at
    all; the backtest then scores each from its own cutoff on, so no window scores points the model learned."""
    cfg = yearly_config(backtest={"windows": 3})
    data = prepare_data(validate_for(yearly_frame({"a40": 40, "b20": 20, "c14": 14, "d5": 5}), cfg), cfg)
    first, train = training_cutoff(data.panel, cfg)
    assert first == 0 and dict(zip(train.series_ids, train.lengths.tolist())) == {"a40": 22, "b20": 8, "c14": 8}
    model = engine.fit(train, cfg)
    bt = backtest_from_config(data.panel, cfg, model.forecast, min_history=min_train_length(cfg),
                              first_window=first)
    cutoffs = bt.frame.groupby("series_id")["cutoff"].min()
    for sid in ("a40", "b20", "c14"):
        i = int(np.flatnonzero(train.series_ids == sid)[0])
        assert cutoffs[sid] >= train.last_ds[i]  # scored only after its training part ends
    assert "d5" not in set(bt.frame["series_id"])


def test_thirty_monthly_products_of_20_to_40_months_are_all_served_by_the_network():
    """The issue's planning case: 30 monthly series of 20-40 months, horizon 12 (26 of 30 got no forecast).
    None is skipped and none is handed to the fallback (each has the 12 points, patch 6 + chunk 6, the network
    learns from); those with 12 points before the last cutoff (24 in all) are in its training panel."""
    cfg = fast_config(freq="MS", horizon=12, season_length=None, window=None)
    rng = np.random.default_rng(1)
    parts = []
    for i, n in enumerate(rng.integers(20, 41, size=30)):
        t = np.arange(n)
        y = 50 + i + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)
        parts.append(pd.DataFrame({"series_id": f"p{i:02d}", "ds": pd.date_range(end="2025-12-01", periods=n,
                                                                                  freq="MS"), "y": y}))
    frame = pd.concat(parts, ignore_index=True).astype({"series_id": "string"})
    data = prepare_data(validate_for(frame, cfg), cfg)
    assert data.skipped == [] and data.fallback == [] and data.panel.n_series == 30
    assert min_train_length(cfg) == 12
    assert set(data.train_panel.series_ids) == set(data.panel.series_ids[data.panel.lengths >= 24])
