"""Windows over a Panel: shapes, series boundaries, bounded sampling, holdout, chronological tails."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core.panel import Panel
from lstm_core.windows import (all_windows, last_windows, min_train_length, sample_windows, tail_windows,
                               target_bounds, validation_span, windows_per_series)

L = 24


def coded_panel(lengths=(50, 37, 80), n_cov: int = 0) -> Panel:
    """Series i holds values 1000 * (i + 1) + t: disjoint ranges, so a value tells its series and step."""
    frames = []
    for i, n in enumerate(lengths):
        t = np.arange(n, dtype=float)
        f = pd.DataFrame({"series_id": f"s{i}", "ds": pd.date_range("2026-01-01", periods=n, freq="h"),
                          "y": 1000.0 * (i + 1) + t})
        for c in range(n_cov):
            f[f"c{c}"] = -(1000.0 * (i + 1) + t) - 0.25 * (c + 1)  # covariate also coded by series and step
        frames.append(f)
    cov = tuple(f"c{c}" for c in range(n_cov))
    return Panel.from_frame(pd.concat(frames, ignore_index=True).astype({"series_id": "string"}), "h", cov)


def decode(v):
    v = np.asarray(v)
    return (v // 1000).astype(int) - 1, (v % 1000).astype(int)  # series, step


def assert_within_series(x: np.ndarray, y: np.ndarray, panel: Panel) -> np.ndarray:
    """Every window is L consecutive steps of one series; its target is that series' next step."""
    series, step = decode(x[:, :, 0])
    assert (series == series[:, :1]).all(), "a window crosses a series boundary"
    assert (np.diff(step, axis=1) == 1).all(), "a window is not consecutive"
    ts, tt = decode(y)
    np.testing.assert_array_equal(ts, series[:, 0])
    np.testing.assert_array_equal(tt, step[:, -1] + 1)
    assert (tt < panel.lengths[ts]).all()
    return ts


def test_all_windows_shapes_and_boundaries():
    p = coded_panel()
    x, y = all_windows(p, L)
    expected = int(np.sum(p.lengths - L))
    assert x.shape == (expected, L, 1) and y.shape == (expected,) and x.dtype == np.float32
    series = assert_within_series(x, y, p)
    np.testing.assert_array_equal(np.bincount(series), p.lengths - L)


def test_covariate_windows_have_n_features_and_stay_aligned():
    p = coded_panel(n_cov=2)
    assert p.n_features == 3 and p.feature_names == ("y", "c0", "c1")
    x, y = all_windows(p, L)
    assert x.shape == (int(np.sum(p.lengths - L)), L, 3)
    assert_within_series(x, y, p)
    np.testing.assert_array_equal(x[:, :, 1], -x[:, :, 0] - 0.25)
    np.testing.assert_array_equal(x[:, :, 2], -x[:, :, 0] - 0.5)


@pytest.mark.parametrize("holdout", [0, 5])
def test_sample_windows_bounded_per_series_and_never_use_holdout_targets(holdout):
    p = coded_panel(lengths=(50, 37, 400))
    per = 8
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        x, y, _ = sample_windows(p, L, per, rng, holdout=holdout)
        y = y[:, 0]
        series = assert_within_series(x, y, p)
        counts = np.bincount(series, minlength=p.n_series)
        avail = np.maximum(p.lengths - holdout - L, 0)
        np.testing.assert_array_equal(counts, np.minimum(avail, per))
        _, t = decode(y)
        assert (t < p.lengths[series] - holdout).all(), "a target from the holdout was used"
        assert (t >= L).all()
        seen.update(zip(series.tolist(), t.tolist()))
    # the draws cover the series' usable range (random, not always the same windows)
    long_targets = {t for s, t in seen if s == 2}
    assert len(long_targets) > 100


def test_sample_windows_cost_does_not_grow_with_length():
    short, long = coded_panel(lengths=(60,)), coded_panel(lengths=(900,))
    rng = np.random.default_rng(0)
    assert sample_windows(short, L, 16, rng).x.shape == sample_windows(long, L, 16, rng).x.shape == (16, L, 1)


def test_sample_windows_skips_series_without_room():
    p = coded_panel(lengths=(L + 3, 60))  # series 0 has 3 targets, only 1 outside a holdout of 2
    x, y, _ = sample_windows(p, L, 10, np.random.default_rng(0), holdout=2)
    series = assert_within_series(x, y[:, 0], p)
    assert np.bincount(series).tolist() == [1, 10]
    x, y, _ = sample_windows(p, L, 10, np.random.default_rng(0), holdout=3)
    assert set(decode(y[:, 0])[0]) == {1}


def test_tail_windows_are_the_last_steps_in_order():
    p = coded_panel()
    steps = 6
    x, y, _ = tail_windows(p, L, steps)
    assert x.shape == (p.n_series * steps, L, 1) and y.shape == (p.n_series * steps, 1)
    y = y[:, 0]
    series = assert_within_series(x, y, p)
    _, t = decode(y)
    for i in range(p.n_series):
        np.testing.assert_array_equal(t[series == i], np.arange(p.lengths[i] - steps, p.lengths[i]))
    np.testing.assert_array_equal(series, np.repeat(np.arange(p.n_series), steps))


def test_tail_windows_drop_steps_without_a_full_window():
    p = coded_panel(lengths=(L + 2, 60))
    x, y, _ = tail_windows(p, L, 5)
    series = assert_within_series(x, y[:, 0], p)
    assert np.bincount(series).tolist() == [2, 5]


@pytest.mark.parametrize("holdout", [0, 7])
def test_chunk_targets_are_the_next_values_and_stay_inside_series_and_before_the_holdout(holdout):
    p = coded_panel(lengths=(50, 37, 400), n_cov=1)
    k = 6
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y, future = sample_windows(p, L, 8, rng, holdout=holdout, chunk=k, known=(1,))
        assert y.shape == (len(x), k) and future.shape == (len(x), k, 1)
        series = assert_within_series(x, y[:, 0], p)
        ts, tt = decode(y)
        assert (ts == series[:, None]).all() and (np.diff(tt, axis=1) == 1).all()
        assert (tt[:, -1] < p.lengths[series] - holdout).all(), "a chunk reached into the holdout"
        np.testing.assert_array_equal(future[:, :, 0], -y - 0.25)  # the covariate over the target steps
        counts = np.bincount(series, minlength=p.n_series)
        np.testing.assert_array_equal(counts, np.minimum(np.maximum(p.lengths - holdout - L - k + 1, 0), 8))


def test_validation_chunks_end_at_each_series_end_and_cover_the_steps():
    p = coded_panel(lengths=(60, 90))
    x, y, _ = tail_windows(p, L, steps=13, chunk=7)  # two chunks: the last 14 points
    assert y.shape == (4, 7) and validation_span(13, 7) == 14
    series, t = decode(y)
    for i in range(2):
        np.testing.assert_array_equal(t[series[:, 0] == i].ravel(), np.arange(p.lengths[i] - 14, p.lengths[i]))
    assert min_train_length(7, 3) == 3 + 7  # a patch of real input and a chunk of targets
    x, y, _ = sample_windows(p, L, 50, np.random.default_rng(0), holdout=validation_span(13, 7), chunk=7)
    _, t = decode(y)
    assert (t.max(axis=1) < np.array([60, 90])[decode(y[:, 0])[0]] - 14).all()


def test_last_windows_seed_the_forecast():
    p = coded_panel(n_cov=1)
    w = last_windows(p, L)
    assert w.shape == (p.n_series, L, 2)
    series, step = decode(w[:, :, 0])
    np.testing.assert_array_equal(series[:, 0], np.arange(p.n_series))
    np.testing.assert_array_equal(step[:, -1], p.lengths - 1)


def test_panel_drop_last_and_select():
    p = coded_panel()
    d = p.drop_last(5)
    np.testing.assert_array_equal(d.lengths, p.lengths - 5)
    np.testing.assert_array_equal(decode(d.last_values(1)[:, 0, 0])[1], p.lengths - 6)
    assert (pd.DatetimeIndex(d.last_ds) == pd.DatetimeIndex(p.last_ds) - pd.Timedelta("5h")).all()
    s = p.select(p.series_ids != "s1")
    assert list(s.series_ids) == ["s0", "s2"]
    assert set(decode(s.y)[0]) == {0, 2}
    with pytest.raises(ValueError, match="cannot drop"):
        p.drop_last(37)


def test_small_panels_draw_more_windows_per_series_up_to_what_they_have():
    panel = coded_panel()  # 50 + 37 + 80 points
    lo, hi = target_bounds(panel, L, holdout=4, chunk=2)
    available = int((hi - lo).sum())  # (length - holdout - chunk + 1 - window): 21 + 8 + 51 = 80
    assert available == 80
    # No floor, or a floor the panel already meets: the configured draw.
    assert windows_per_series(panel, L, 4, 2, per_series=16, min_per_epoch=0) == 16
    assert windows_per_series(panel, L, 4, 2, per_series=16, min_per_epoch=30) == 16
    # A floor above the per-series draw: raised to reach it, ceil(60 / 3) = 20 per series.
    assert windows_per_series(panel, L, 4, 2, per_series=16, min_per_epoch=60) == 20
    # A floor above what the panel has: capped at the distinct windows, ceil(80 / 3) = 27.
    assert windows_per_series(panel, L, 4, 2, per_series=16, min_per_epoch=10_000) == 27
