"""Issue 22: the statistical standards beside the network and what each series is served
(lstm_core/statistical.py, lstm_core/combination.py): forecasts for any length, the choice fitted on
backtest windows only, selection and combination, pooling for series without windows, history bands."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_core.backtest import cutoff_drops
from lstm_core.combination import (PRIOR, choose, history_band, serve_backtest, serve_future, served_intervals,
                                   window_errors)
from lstm_core.panel import Panel
from lstm_core.statistical import forecast_series, statistical_backtest

H = 4
CANDS = ["autoets", "autotheta", "naive"]


@pytest.mark.parametrize("n", [1, 2, 5, 10, 40])
def test_every_length_has_a_forecast_from_some_model(n):
    y = 50 + np.cumsum(np.random.default_rng(n).normal(size=n))
    out = forecast_series(y, H, 4)
    assert set(out) == {"autoets", "autotheta", "dynamic_theta", "seasonal_naive", "naive"}
    assert all(v.shape == (H,) for v in out.values())
    assert np.isfinite(out["naive"]).all() and np.allclose(out["naive"], y[-1])
    if n >= 10:  # statsforecast fits both standards from ten points on
        assert all(np.isfinite(out[m]).all() for m in ("autoets", "autotheta", "dynamic_theta"))


def test_statistical_backtest_uses_the_networks_cutoffs_and_covers_short_series():
    frames = [pd.DataFrame({"series_id": sid, "ds": pd.date_range("2020-01-01", periods=n, freq="MS"),
                            "y": 10 + np.arange(n, dtype=float) + (n % 3)}) for sid, n in (("a", 30), ("b", 6), ("c", 1))]
    panel = Panel.from_frame(pd.concat(frames, ignore_index=True), "MS")
    drops = cutoff_drops(3, H, H)
    sb = statistical_backtest(panel, horizon=H, season_length=12, drops=drops)
    rows = sb.frame
    # "a" joins all three windows, "b" (6 points) only the last (2 points before its cutoff), "c" none
    assert sorted(rows.loc[rows["series_id"] == "a", "window"].unique()) == [0, 1, 2]
    assert sorted(rows.loc[rows["series_id"] == "b", "window"].unique()) == [2]
    assert (rows.loc[rows["series_id"] == "b", "history"] == 2).all()
    assert "c" not in set(rows["series_id"])
    # the last window's actuals are each series' last H points
    last_a = rows[(rows["series_id"] == "a") & (rows["window"] == 2)].sort_values("step")
    assert np.allclose(last_a["y"], frames[0]["y"].to_numpy()[-H:])
    # the forecast past T exists for every series (naive at least), in panel order
    assert sb.future["naive"].shape == (3, H) and np.isfinite(sb.future["naive"]).all()


def _rows(errors: dict[str, list[float]], windows: int = 3, seed: int = 0) -> pd.DataFrame:
    """Backtest rows of series `s0..`: candidate c misses y by errors[c][i] on series i (every window, step)."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(errors.values())))
    out = []
    for i in range(n):
        for w in range(windows):
            y = 100 + rng.normal(size=H)
            out.append(pd.DataFrame({"series_id": f"s{i}", "window": w, "history": 20 + 4 * w, "step": np.arange(1, H + 1),
                                     "y": y, "interval_scale": 1.0,
                                     **{c: y + errors[c][i] for c in errors}}))
    return pd.concat(out, ignore_index=True)


def test_a_clearly_better_candidate_is_chosen_and_near_ties_are_combined():
    rows = _rows({"autoets": [1.0, 1.0, 3.0], "autotheta": [3.0, 1.02, 1.0], "naive": [5.0, 5.0, 5.0]})
    targets = pd.DataFrame({"series_id": ["s0", "s1", "s2"], "history": 40, **{c: True for c in CANDS}})
    chosen = choose(window_errors(rows, CANDS), targets, CANDS, H, margin=0.05, prior_windows=0)
    assert chosen == [("autoets",), ("autoets", "autotheta"), ("autotheta",)]


def test_an_unavailable_candidate_is_never_served():
    rows = _rows({"autoets": [1.0], "autotheta": [3.0], "naive": [5.0]})
    targets = pd.DataFrame({"series_id": ["s0"], "history": 40, "autoets": False, "autotheta": True, "naive": True})
    assert choose(window_errors(rows, CANDS), targets, CANDS, H) == [("autotheta",)]


def test_a_series_without_windows_takes_the_pool_of_its_history_band():
    rows = _rows({"autoets": [1.0, 1.0], "autotheta": [2.0, 2.0], "naive": [4.0, 4.0]})
    targets = pd.DataFrame({"series_id": ["new"], "history": 24, **{c: True for c in CANDS}})
    assert choose(window_errors(rows, CANDS), targets, CANDS, H) == [("autoets",)]
    # without any evidence: the prior, an equal-weight mean of the standards available
    empty = window_errors(rows.iloc[:0], CANDS)
    assert choose(empty, targets, CANDS, H) == [tuple(c for c in PRIOR if c in CANDS)]
    one_point = pd.DataFrame({"series_id": ["x"], "history": 1, "autoets": False, "autotheta": False, "naive": True})
    assert choose(empty, one_point, CANDS, H) == [("naive",)]


def test_the_choice_is_fitted_on_backtest_windows_only_a_planted_holdout_change_moves_nothing():
    """Window 2 is today's holdout: what serves it is chosen on windows 0 and 1 only, so planting a change in
    its actuals (autoets now far better there) leaves its choice and served values unchanged."""
    # s0: autoets misses 1.2 below, autotheta 1.0 above
    rows = _rows({"autoets": [-1.2, 2.0, 1.0], "autotheta": [1.0, 1.0, 2.0], "naive": [4.0, 4.0, 4.0]})
    before = serve_backtest(rows, CANDS, horizon=H, step=H, margin=0.05, prior_windows=1)
    planted = rows.copy()
    last = planted["window"] == 2
    planted.loc[last, "y"] = planted.loc[last, "autoets"]  # autoets is exact on the holdout now
    after = serve_backtest(planted, CANDS, horizon=H, step=H, margin=0.05, prior_windows=1)
    pd.testing.assert_frame_equal(before.selections[2], after.selections[2])
    assert np.array_equal(before.rows.loc[last, "served"], after.rows.loc[last, "served"])
    assert (before.selections[2]["model"] == "autotheta").iloc[:2].all()  # from windows 0 and 1
    # window 1 is chosen on window 0 alone; window 0 has no earlier window: the prior
    assert set(before.selections[0]["model"]) == {"autoets+autotheta"}
    # the forecast past T is chosen on every window, the planted one included: there it moves
    future = {c: np.zeros((3, H)) for c in CANDS}
    ids, lengths = np.array(["s0", "s1", "s2"]), np.array([40, 40, 40])
    _, labels_before = serve_future(rows, future, ids, lengths, CANDS, horizon=H, prior_windows=0)
    _, labels_after = serve_future(planted, future, ids, lengths, CANDS, horizon=H, prior_windows=0)
    assert labels_before[0] == "autotheta" and labels_after[0] != labels_before[0]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 5), st.floats(0, 5)), min_size=1, max_size=6),
       st.floats(0, 0.5), st.floats(0, 10))
def test_the_served_forecast_is_a_mean_of_available_candidates(errs, margin, k):
    rows = _rows({c: [e[j] for e in errs] for j, c in enumerate(CANDS)})
    served = serve_backtest(rows, CANDS, horizon=H, step=H, margin=margin, prior_windows=k).rows
    values = served[CANDS].to_numpy()
    assert served["model"].notna().all() and (served["model"] != "none").all()
    assert (served["served"] >= values.min(axis=1) - 1e-9).all() and (served["served"] <= values.max(axis=1) + 1e-9).all()
    for lab, part in served.groupby("model"):
        assert np.allclose(part["served"], part[str(lab).split("+")].mean(axis=1))


def test_history_bands_are_in_multiples_of_the_horizon():
    assert list(history_band([1, 2, 3, 11, 12, 23, 24, 47, 48, 500], 6)) == \
        ["1-2", "1-2", "3-11", "3-11", "12-23", "12-23", "24-47", "24-47", "48+", "48+"]


def test_served_intervals_pool_short_series_and_never_collapse_to_the_forecast():
    """A band with too few windows of its own borrows the pooled calibration: its bounds are not the forecast."""
    rows = _rows({"autoets": [0.5] * 12, "autotheta": [1.0] * 12, "naive": [2.0] * 12}, seed=3)
    rows["y"] += np.random.default_rng(4).normal(0, 2, len(rows))
    rows["cutoff"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(rows["window"], unit="D")
    served = serve_backtest(rows, CANDS, horizon=H, step=H).rows
    scales = rows.groupby(["series_id", "cutoff"], as_index=False).agg(window=("window", "first"))
    scales = scales.assign(interval_scale=1.0, log_scale=np.nan)
    banded, bounds = served_intervals(served, scales, levels=(80.0, 95.0), horizon=H, step=H, season_length=1,
                                      method="conformal", prior_windows=3.0)
    assert banded.pooled is not None
    # the earliest window has nothing before it: no bounds; later ones are ordered around the forecast
    later = served["window"] >= 1
    lo, hi = bounds.loc[later, "served_lo_80"], bounds.loc[later, "served_hi_80"]
    assert (lo < served.loc[later, "served"]).all() and (hi > served.loc[later, "served"]).all()
    assert bounds.loc[~later].isna().all().all()
    short = Panel.from_frame(pd.DataFrame({"series_id": "one", "ds": pd.date_range("2020-01-01", periods=1, freq="D"),
                                           "y": [10.0]}), "D")
    out = banded.predict(short, np.full((1, H), 10.0))
    assert (out["yhat_lo_80"] < 10).all() and (out["yhat_hi_80"] > 10).all()
    assert (out["yhat_lo_95"] <= out["yhat_lo_80"]).all() and (out["yhat_hi_95"] >= out["yhat_hi_80"]).all()
