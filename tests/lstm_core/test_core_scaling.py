"""Per-series scaling: fitted on the training part only, exact inverse, serialisable."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler
from tests.conftest import make_frame

H = 12


def panel_of(frame: pd.DataFrame, covariates: tuple[str, ...] = ()) -> Panel:
    return Panel.from_frame(frame.sort_values(["series_id", "ds"]).reset_index(drop=True), "h", covariates)


@pytest.fixture
def frame() -> pd.DataFrame:
    f = make_frame(n_series=4, length=80)
    f["temp"] = np.random.default_rng(1).normal(20, 5, len(f))
    return f


@pytest.mark.parametrize("kind", ["standard", "minmax", "naive"])
def test_scaler_never_sees_held_out_values(frame, kind):
    """Fitted on drop_last(H): whatever the last H values are, the statistics are the same."""
    a = panel_of(frame, ("temp",))
    wild = frame.copy()
    tail = wild.groupby("series_id").cumcount() >= 80 - H
    wild.loc[tail, "y"] = np.random.default_rng(2).normal(1e6, 1e5, tail.sum())
    wild.loc[tail, "temp"] = -1e4
    b = panel_of(wild, ("temp",))
    assert not np.array_equal(a.values, b.values)
    sa, sb = SeriesScaler.fit(a.drop_last(H), kind), SeriesScaler.fit(b.drop_last(H), kind)
    np.testing.assert_array_equal(sa.loc, sb.loc)
    np.testing.assert_array_equal(sa.scale, sb.scale)
    # ... and they are the training part's own statistics, not the whole series'
    whole = SeriesScaler.fit(b, kind)
    assert not (np.allclose(whole.loc, sb.loc) and np.allclose(whole.scale, sb.scale))


def test_standard_statistics_are_per_series_mean_and_std(frame):
    p = panel_of(frame, ("temp",)).drop_last(H)
    s = SeriesScaler.fit(p, "standard")
    for i, sid in enumerate(p.series_ids):
        train = frame[frame["series_id"] == sid].iloc[:-H]
        np.testing.assert_allclose(s.loc[i], [train["y"].mean(), train["temp"].mean()], rtol=1e-12)
        np.testing.assert_allclose(s.scale[i], [train["y"].std(ddof=0), train["temp"].std(ddof=0)], rtol=1e-10)


def test_minmax_maps_training_part_to_unit_interval(frame):
    p = panel_of(frame)
    z = SeriesScaler.fit(p, "minmax").transform(p).y
    for i in range(p.n_series):
        zi = z[p.offsets[i]:p.offsets[i + 1]]
        assert zi.min() == pytest.approx(0.0, abs=1e-12) and zi.max() == pytest.approx(1.0, abs=1e-12)


def test_naive_scale_is_mean_absolute_one_step_difference(frame):
    p = panel_of(frame)
    s = SeriesScaler.fit(p, "naive")
    for i, sid in enumerate(p.series_ids):
        y = frame.loc[frame["series_id"] == sid, "y"].to_numpy()
        assert s.scale[i, 0] == pytest.approx(np.mean(np.abs(np.diff(y))), rel=1e-12)


@pytest.mark.parametrize("kind", ["standard", "minmax", "naive"])
def test_inverse_is_exact(frame, kind):
    p = panel_of(frame, ("temp",))
    s = SeriesScaler.fit(p.drop_last(H), kind)
    z = s.transform(p)
    assert z.values.shape == p.values.shape and not np.allclose(z.values, p.values)
    back = s.inverse_y(z.y.reshape(p.n_series, -1), p.series_ids)
    np.testing.assert_allclose(back, p.y.reshape(p.n_series, -1), rtol=1e-13, atol=1e-12)
    # a subset of series in another order is unscaled with its own statistics
    sub = p.series_ids[[2, 0]]
    np.testing.assert_allclose(s.inverse_y(z.y.reshape(p.n_series, -1)[[2, 0]], sub),
                               p.y.reshape(p.n_series, -1)[[2, 0]], rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("kind", ["standard", "minmax", "naive"])
def test_to_dict_from_dict_round_trip(frame, kind):
    p = panel_of(frame, ("temp",))
    s = SeriesScaler.fit(p, kind)
    again = SeriesScaler.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.kind == kind
    assert list(again.series_ids) == list(s.series_ids)
    np.testing.assert_array_equal(again.loc, s.loc)
    np.testing.assert_array_equal(again.scale, s.scale)
    np.testing.assert_array_equal(again.transform(p).values, s.transform(p).values)


def test_constant_training_part_gets_unit_scale():
    f = make_frame(n_series=2, length=40)
    f.loc[f["series_id"] == "s01", "y"] = 3.0
    s = SeriesScaler.fit(panel_of(f), "standard")
    assert s.scale[1, 0] == 1.0 and np.isfinite(s.transform(panel_of(f)).values).all()


def test_unknown_series_and_kind_are_refused(frame):
    p = panel_of(frame)
    s = SeriesScaler.fit(p.select(p.series_ids != "s03"))
    with pytest.raises(KeyError, match="s03"):
        s.transform(p)
    with pytest.raises(KeyError):
        s.inverse_y(np.zeros((1, 3)), np.array(["nope"], dtype=object))
    with pytest.raises(ValueError, match="scaler must be one of"):
        SeriesScaler.fit(p, "robust")
