"""Realised accuracy of earlier runs: equal to the M4 scorer on the same predictions and later actuals,
partial horizons, runs without intervals, shards that merge, and a table ready to be written."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lstm_core import engine
from lstm_core.backtest import backtest
from lstm_core.metrics import interval_columns
from lstm_core.panel import Panel
from lstm_core.realised import interval_levels, realised_accuracy, realised_metrics, realised_schema, realised_sums
from tests.conftest import fast_config, make_frame, prepare
from tests.m4ref import m4_scorer

H, M = 24, 24


@pytest.fixture(scope="module")
def cfg():
    return fast_config(horizon=H)


@pytest.fixture(scope="module")
def actuals():
    return make_frame(n_series=5, length=220, seed=3)


@pytest.fixture(scope="module")
def earlier_runs(cfg, actuals):
    """Committed predictions of two earlier runs by a really trained model with conformal intervals:
    r1 from 48 points before today's end (all 24 steps now observed), r2 from 12 before (12 observed)."""
    panel = prepare(actuals, cfg)[0]
    model = engine.fit(panel.drop_last(48 + 2 * H), cfg)
    frames = []
    for run_id, drop in (("r1", 48), ("r2", 12)):
        history = panel.drop_last(drop)
        yhat = model.forecast(history, H)
        bt = backtest(history, model.forecast, horizon=H, season_length=M, windows=2)
        frame = engine.predictions_frame(history, yhat, cfg.freq)
        for col, values in bt.intervals.predict(history, yhat).items():
            frame[col] = values.reshape(-1)
        frames.append(frame.assign(model_version=f"v-{run_id}", run_id=run_id))
    return pd.concat(frames, ignore_index=True)


def snaive_reference(train: pd.DataFrame, test: pd.DataFrame, m: int) -> pd.DataFrame:
    """Seasonal naive written out plainly: step h repeats the value m - ((h-1) mod m) points from the end."""
    out = []
    for sid, g in test.groupby("series_id"):
        hist = train[train["series_id"] == sid].sort_values("ds")["y"].to_numpy()
        steps = g["step"].to_numpy()
        out.append(pd.DataFrame({"series_id": sid, "ds": g["ds"].to_numpy(),
                                 "snaive": hist[len(hist) - m + (steps - 1) % m]}))
    return pd.concat(out, ignore_index=True)


def overall(table: pd.DataFrame, run_id: str, model: str) -> pd.Series:
    """The overall rows of `model`: `seasonal_naive`, or the LSTM by its version (`model` `lstm` beside it)."""
    if model == "seasonal_naive":
        which = table["model"] == model
    else:
        which = (table["model"] == "lstm") & (table["model_version"] == model)
    sel = (table["forecast_run_id"] == run_id) & table["series_id"].isna() & which
    return table[sel].set_index("metric")["value"]


def test_realised_accuracy_equals_the_m4_scorer_on_the_later_actuals(earlier_runs, actuals):
    m4 = m4_scorer()
    table = realised_accuracy(earlier_runs, actuals, season_length=M)
    for run_id, observed in (("r1", H), ("r2", 12)):
        preds = earlier_runs[earlier_runs["run_id"] == run_id]
        cutoff = preds["cutoff"].iloc[0]
        train = actuals[actuals["ds"] <= cutoff]
        test = actuals.merge(preds[["series_id", "ds", "step"]], on=["series_id", "ds"])
        assert len(test) == 5 * observed  # r2: only the 12 steps that have happened are scored
        ours = overall(table, run_id, f"v-{run_id}")
        for level in (95, 80):
            ref = m4.score(train, test, preds, "yhat", M, level)
            assert ours[f"coverage_{level}"] == pytest.approx(ref[f"coverage_{level}"], abs=6e-5)
            assert ours[f"msis_{level}"] == pytest.approx(ref[f"msis_{level}"], abs=6e-4)
        assert ours["smape"] == pytest.approx(ref["smape"], abs=6e-4)
        assert ours["mase"] == pytest.approx(ref["mase"], abs=6e-4)
        naive = snaive_reference(train, test, M)
        ref_naive = m4.score(train, test, naive, "snaive", M)
        theirs = overall(table, run_id, "seasonal_naive")
        assert theirs["smape"] == pytest.approx(ref_naive["smape"], abs=6e-4)
        assert theirs["mase"] == pytest.approx(ref_naive["mase"], abs=6e-4)
        assert "coverage_95" not in theirs.index  # seasonal naive has no intervals
        rows = table[(table["forecast_run_id"] == run_id) & table["series_id"].isna()]
        assert (rows["cutoff"] == cutoff).all() and (rows["points"] == 5 * observed).all()
        # one series alone, too
        one = test[test["series_id"] == "s02"]
        ref_one = m4.score(train, one, preds, "yhat", M)
        sel = (table["forecast_run_id"] == run_id) & (table["series_id"] == "s02") \
            & (table["model"] != "seasonal_naive")
        per = table[sel].set_index("metric")["value"]
        assert per["mase"] == pytest.approx(ref_one["mase"], abs=6e-4)
        assert per["msis_95"] == pytest.approx(ref_one["msis_95"], abs=6e-4)


def test_forecasts_without_actuals_yet_and_runs_without_intervals(earlier_runs, actuals):
    later = earlier_runs.copy()
    later["ds"] = later["ds"] + pd.Timedelta(hours=100)  # all in the future
    later["cutoff"] = later["cutoff"] + pd.Timedelta(hours=100)
    assert realised_accuracy(later, actuals, season_length=M).empty
    # an old run written before intervals existed, read together with a new one: NaN bounds
    old = earlier_runs[earlier_runs["run_id"] == "r1"].copy()
    for col in ("yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"):
        old[col] = np.nan
    mixed = pd.concat([old.assign(run_id="old"), earlier_runs[earlier_runs["run_id"] == "r2"]], ignore_index=True)
    table = realised_accuracy(mixed, actuals, season_length=M)
    assert "coverage_95" not in overall(table, "old", "v-r1").index
    assert "coverage_95" in overall(table, "r2", "v-r2").index
    assert np.isfinite(overall(table, "old", "v-r1")["mase"])
    plain = earlier_runs[list(("series_id", "ds", "step", "yhat", "model_version", "run_id", "cutoff"))]
    assert set(realised_accuracy(plain, actuals, season_length=M)["metric"]) == {"mae", "rmse", "smape", "mase"}


def test_a_run_whose_cutoff_left_the_input_is_not_scored(earlier_runs, actuals):
    gone = actuals[~((actuals["series_id"] == "s00") & (actuals["ds"] == earlier_runs["cutoff"].iloc[0]))]
    table = realised_accuracy(earlier_runs[earlier_runs["run_id"] == "r1"], gone, season_length=M)
    assert "s00" not in set(table["series_id"].dropna())
    assert (table.loc[table["series_id"].isna(), "points"] == 4 * H).all()


def test_shards_of_the_input_merge_to_the_whole(earlier_runs, actuals):
    whole = realised_accuracy(earlier_runs, actuals, season_length=M)
    ids = ["s00", "s03"]
    parts = [realised_sums(earlier_runs[earlier_runs["series_id"].isin(ids) == inside],
                           actuals[actuals["series_id"].isin(ids) == inside], season_length=M)
             for inside in (True, False)]
    merged = realised_metrics(parts[0].merge(parts[1]))
    pd.testing.assert_frame_equal(merged, whole, check_exact=False, rtol=1e-12)


def test_table_is_ready_to_write_as_a_realised_part_file(earlier_runs, actuals, tmp_path):
    table = realised_accuracy(earlier_runs, actuals, season_length=M)
    assert list(table.columns) == ["series_id", "metric", "value", "model", "forecast_run_id", "cutoff", "points",
                                   "model_version"]
    assert set(table["model"]) == {"lstm", "seasonal_naive"}
    schema = realised_schema()
    written = pa.Table.from_pandas(table.assign(run_id="now"), schema=schema, preserve_index=False)
    path = tmp_path / "realised" / "run=now" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(written, path)
    back = pd.read_parquet(tmp_path / "realised")
    assert set(back["forecast_run_id"]) == {"r1", "r2"} and set(back["run"]) == {"now"}


def test_input_timestamps_in_microseconds_match_predictions_in_nanoseconds(earlier_runs, actuals):
    micro = actuals.assign(ds=actuals["ds"].astype("datetime64[us]"))
    pd.testing.assert_frame_equal(realised_accuracy(earlier_runs, micro, season_length=M),
                                  realised_accuracy(earlier_runs, actuals, season_length=M))


def test_interval_levels_and_missing_columns():
    assert interval_levels(["yhat", *interval_columns(95), *interval_columns(80), "yhat_lo_50"]) == (80.0, 95.0)
    assert interval_levels(list(interval_columns(97.5))) == (97.5,)
    with pytest.raises(ValueError, match="model_version"):
        realised_sums(pd.DataFrame({"series_id": [], "ds": [], "step": [], "yhat": [], "run_id": [], "cutoff": []}),
                      pd.DataFrame({"series_id": [], "ds": [], "y": []}), season_length=1)


def test_the_panel_and_frame_helpers_agree():
    # guards the test helper: seasonal naive from the engine equals the plain reference above
    df = make_frame(n_series=2, length=60)
    p = Panel.from_frame(df, "h")
    from lstm_core.metrics import seasonal_naive

    test = pd.DataFrame({"series_id": np.repeat(["s00", "s01"], 30), "ds": 0, "step": np.tile(np.arange(1, 31), 2)})
    ref = snaive_reference(df, test, M)["snaive"].to_numpy().reshape(2, 30)
    np.testing.assert_array_equal(ref, seasonal_naive(p, 30, M))
