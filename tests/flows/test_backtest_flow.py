"""Backtests, intervals and realised accuracy in the nightly run, checked from its outputs (issue 13).

README (What a run does, Output contract): the run's evaluation is a rolling-origin backtest of
`backtest.windows` cutoffs `step` apart, scored by a model trained once on the data before the earliest
cutoff; the metrics table holds every window, per window and pooled, and equals what a reader computes
from the `backtest/` table; predictions carry conformal intervals, ordered and nested; the intervals are
saved beside the model version and reused when it is loaded; each run scores the committed predictions of
earlier runs whose dates now have actuals (`realised/`); a run of old outputs plus new ones reads as one
dataset with pandas and pyarrow.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from flows.batch_forecast import batch_forecast
from lstm_core.outputs import table_schema
from tests.conftest import make_frame
from tests.m4ref import m4_scorer

pytestmark = pytest.mark.usefixtures("prefect_server")

H, M, WINDOWS = 12, 24, 3
LEVELS = (80, 95)
POINT = ["mae", "rmse", "smape", "mase"]
SETTINGS = {
    "freq": "h", "horizon": H, "season_length": M, "window": 24, "retrain": "always",
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}


def _run(tmp: Path, name: str, frame: pd.DataFrame, out: Path, **extra) -> dict:
    path = tmp / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return batch_forecast(settings={**SETTINGS, **extra, "input_url": str(path), "output_url": str(out),
                                    "run_id": name})


def _table(out: Path, table: str, run_id: str) -> pd.DataFrame:
    return pd.read_parquet(out / table / f"run={run_id}")


def _windows(bt: pd.DataFrame) -> list[pd.DataFrame]:
    """The backtest rows of each window, earliest first (the series end together here)."""
    return [g.sort_values(["series_id", "step"]).reset_index(drop=True) for _, g in bt.groupby("cutoff", sort=True)]


# --- a spike after a cutoff ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spiked(tmp_path_factory):
    """Input A, and input B: A with a spike on the first point after the cutoff of window 1 of 3."""
    tmp = tmp_path_factory.mktemp("spike")
    out = tmp / "out"
    a = make_frame(n_series=5, length=150, seed=7)
    from_end = a.groupby("series_id").cumcount(ascending=False).to_numpy()
    b = a.copy()
    at = from_end == 2 * H - 1  # window 1 ends 2H - 1 points before the end; its first step is this point
    b.loc[at, "y"] = b.loc[at, "y"] * 10 + 500
    runs = {name: _run(tmp, name, frame, out) for name, frame in (("a", a), ("b", b))}
    return {"out": out, "frames": {"a": a, "b": b}, "runs": runs}


def test_backtest_windows_never_see_data_after_their_cutoff(spiked):
    out = spiked["out"]
    wa, wb = (_windows(_table(out, "backtest", n)) for n in "ab")
    assert len(wa) == len(wb) == WINDOWS
    # The spike is in window 1's actuals (its first step) ...
    assert (wb[1].loc[wb[1]["step"] == 1, "y"].to_numpy() > wa[1].loc[wa[1]["step"] == 1, "y"].to_numpy() + 400).all()
    # ... yet windows 0 and 1 forecast the same from their cutoffs: the model trained before window 0's cutoff
    # and each window's input end at its cutoff. Their intervals are calibrated on earlier windows only.
    for w in (0, 1):
        cols = ["yhat", "seasonal_naive", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
        pd.testing.assert_frame_equal(wa[w][cols], wb[w][cols], rtol=1e-6, obj=f"window {w}")
    assert wa[0][["yhat_lo_95", "yhat_hi_95"]].isna().all().all()  # nothing before the earliest window
    assert wa[1][["yhat_lo_95", "yhat_hi_95"]].notna().all().all()
    # Window 2 starts after the spike: its input holds it, so its forecast moves (the test can see a leak).
    assert not np.allclose(wa[2]["yhat"], wb[2]["yhat"])
    assert spiked["runs"]["a"]["backtest"]["first_window"] == 0


def test_backtest_metrics_equal_the_metrics_table(spiked):
    """Every metric of every series and window, recomputed from the backtest table and the input alone."""
    out, frame, run = spiked["out"], spiked["frames"]["a"], spiked["runs"]["a"]
    bt = _table(out, "backtest", "a")
    metrics = _table(out, "metrics", "a")
    lstm = run["model_version"]
    # Every model of the metrics table, each scored on the backtest rows where it has a forecast (README, Output
    # contract): the network (`yhat`, its intervals), each statistical candidate's column and the served forecast
    # (`served`, its `served_lo/hi` intervals, calibrated on earlier windows only).
    columns = {"lstm": ("yhat", "yhat"), "seasonal_naive": ("seasonal_naive", None), "autoets": ("autoets", None),
               "autotheta": ("autotheta", None), "dynamic_theta": ("dynamic_theta", None), "naive": ("naive", None),
               "served": ("served", "served")}
    assert set(columns) <= set(bt.columns) | {"lstm"}
    by_hand = []
    for (sid, cutoff), whole in bt.groupby(["series_id", "cutoff"]):
        hist = frame[(frame["series_id"] == sid) & (frame["ds"] <= cutoff)].sort_values("ds")["y"].to_numpy()
        scale = np.mean(np.abs(hist[M:] - hist[:-M]))
        for model, (col, bounds) in columns.items():
            g = whole[np.isfinite(whole[col].to_numpy(np.float64))]
            if g.empty:
                continue  # this candidate has no forecast for this series and window: no row
            y, f = g["y"].to_numpy(), g[col].to_numpy()
            e = y - f
            values = {"mae": np.mean(np.abs(e)), "rmse": np.sqrt(np.mean(e ** 2)),
                      "smape": np.mean(200 * np.abs(e) / (np.abs(y) + np.abs(f))), "mase": np.mean(np.abs(e)) / scale}
            if bounds is not None and g[f"{bounds}_lo_95"].notna().all():
                for level in LEVELS:
                    lo, hi, a = g[f"{bounds}_lo_{level}"].to_numpy(), g[f"{bounds}_hi_{level}"].to_numpy(), 1 - level / 100
                    values[f"coverage_{level}"] = np.mean((y >= lo) & (y <= hi))
                    score = (hi - lo) + 2 / a * (lo - y) * (y < lo) + 2 / a * (y - hi) * (y > hi)
                    values[f"msis_{level}"] = np.mean(score) / scale
            by_hand += [{"series_id": sid, "cutoff": cutoff, "model": model, "metric": k, "expected": v,
                         "points": len(g)} for k, v in values.items()]
    by_hand = pd.DataFrame(by_hand)
    table = metrics[metrics["series_id"].notna() & metrics["backtest_window"].notna()]
    assert set(table.loc[table["model"] == "lstm", "model_version"]) == {lstm}  # the label, and the version beside it
    assert table.loc[table["model"] != "lstm", "model_version"].isna().all()
    # Long series: the statistical models are not fitted (their columns are all null), so the table holds the
    # network, the two naive candidates and the served forecast, each with its full set of metrics.
    assert bt[["autoets", "autotheta", "dynamic_theta"]].isna().all().all()
    assert set(table["model"]) == set(by_hand["model"]) == {"lstm", "seasonal_naive", "naive", "served"}
    interval = {f"{k}_{lv}" for k in ("coverage", "msis") for lv in LEVELS}
    for model, g in table.groupby("model"):
        assert set(g["metric"]) == set(POINT) | (interval if model in ("lstm", "served") else set()), model
    joined = by_hand.merge(table.astype({"series_id": object}), on=["series_id", "cutoff", "model", "metric"],
                           how="outer", indicator=True)
    assert (joined["_merge"] == "both").all(), joined[joined["_merge"] != "both"]
    np.testing.assert_allclose(joined["value"], joined["expected"], rtol=1e-9)
    assert sorted(table["backtest_window"].unique()) == list(range(WINDOWS))
    # Pooled rows (no series, no window): the mean over every series and window; coverage over every point.
    pooled = metrics[metrics["series_id"].isna() & metrics["backtest_window"].isna()].set_index(["model", "metric"])["value"]
    for (model, metric), g in by_hand.groupby(["model", "metric"]):
        expected = (np.average(g["expected"], weights=g["points"]) if metric.startswith("coverage")
                    else g["expected"].mean())
        assert pooled[(model, metric)] == pytest.approx(expected, rel=1e-9), (model, metric)
        # the manifest keys the LSTM by its version, as it always has
        assert run["overall_metrics"][lstm if model == "lstm" else model][metric] == pytest.approx(expected, rel=1e-9)
    # Per window (no series): the mean over the window's series, with its cutoff.
    per_window = metrics[metrics["series_id"].isna() & metrics["backtest_window"].notna()]
    for (model, metric, cutoff), g in by_hand[by_hand["metric"].isin(POINT)].groupby(["model", "metric", "cutoff"]):
        row = per_window[(per_window["model"] == model) & (per_window["metric"] == metric)
                         & (per_window["cutoff"] == cutoff)]
        assert len(row) == 1 and row["value"].iloc[0] == pytest.approx(g["expected"].mean(), rel=1e-9)


def test_intervals_are_ordered_and_nested_in_predictions_and_backtest(spiked):
    out = spiked["out"]
    for table in ("predictions", "backtest"):
        rows = _table(out, table, "a")
        rows = rows[rows["yhat_lo_95"].notna()]
        assert len(rows) > 0, table
        lo95, lo80, yhat, hi80, hi95 = (rows[c].to_numpy() for c in
                                        ("yhat_lo_95", "yhat_lo_80", "yhat", "yhat_hi_80", "yhat_hi_95"))
        assert (lo95 <= lo80).all() and (lo80 <= yhat).all() and (yhat <= hi80).all() and (hi80 <= hi95).all()
        assert (hi95 > lo95).all(), table  # real intervals, not zero-width


# --- realised accuracy, and old outputs beside new ones ------------------------------------------------
@pytest.fixture(scope="module")
def realised(tmp_path_factory):
    """Run 'early' on the input without its last H points; an 'a-old' run in the layout before intervals
    (predictions without bounds, metrics without window); then run 'late' on the whole input, loading
    the early model (retrain never)."""
    tmp = tmp_path_factory.mktemp("realised")
    out = tmp / "out"
    frame = make_frame(n_series=4, length=140, seed=11)
    last = frame.groupby("series_id").cumcount(ascending=False).to_numpy() < H
    early = _run(tmp, "early", frame[~last].reset_index(drop=True), out)
    # An earlier run as an older version of the job wrote it: the original columns only.
    old_preds = _table(out, "predictions", "early").drop(columns=["yhat_lo_80", "yhat_hi_80",
                                                                     "yhat_lo_95", "yhat_hi_95"])
    old_preds = old_preds.assign(run_id="a-old", yhat=old_preds["yhat"] * 1.01)
    (out / "predictions" / "run=a-old").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(old_preds, preserve_index=False),
                   out / "predictions" / "run=a-old" / "part-0.parquet")
    old_metrics = _table(out, "metrics", "early").drop(columns=["cutoff", "backtest_window", "model_version"])
    (out / "metrics" / "run=a-old").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(old_metrics.assign(run_id="a-old"), preserve_index=False),
                   out / "metrics" / "run=a-old" / "part-0.parquet")
    (out / "runs" / "a-old").mkdir(parents=True)
    shutil.copy(out / "runs" / "early" / "manifest.json", out / "runs" / "a-old" / "manifest.json")
    late = _run(tmp, "late", frame, out, retrain="never")
    return {"out": out, "frame": frame, "early": early, "late": late, "old_preds": old_preds}


def test_realised_accuracy_equals_the_scorer_on_the_later_actuals(realised):
    m4 = m4_scorer()
    out, frame, late = realised["out"], realised["frame"], realised["late"]
    table = _table(out, "realised", "late")
    assert set(table["forecast_run_id"]) == {"early", "a-old"}
    assert (table["run_id"] == "late").all() and late["outputs"]["realised"].endswith("part-0.parquet")
    for run_id, preds in (("early", _table(out, "predictions", "early")), ("a-old", realised["old_preds"])):
        cutoff = preds["cutoff"].iloc[0]
        train = frame[frame["ds"] <= cutoff]
        test = frame.merge(preds[["series_id", "ds"]], on=["series_id", "ds"])
        assert len(test) == 4 * H
        rows = table[(table["forecast_run_id"] == run_id) & table["series_id"].isna()
                     & (table["model"] == "lstm")].set_index("metric")["value"]
        assert set(table.loc[(table["forecast_run_id"] == run_id) & (table["model"] == "lstm"), "model_version"]) \
            == {preds["model_version"].iloc[0]}
        ref = m4.score(train, test, preds, "yhat", M)
        assert rows["smape"] == pytest.approx(ref["smape"], abs=6e-4)
        assert rows["mase"] == pytest.approx(ref["mase"], abs=6e-4)
        if run_id == "early":  # with intervals: coverage and MSIS as the scorer has them
            for level in LEVELS:
                ref = m4.score(train, test, preds, "yhat", M, level)
                assert rows[f"coverage_{level}"] == pytest.approx(ref[f"coverage_{level}"], abs=6e-5)
                assert rows[f"msis_{level}"] == pytest.approx(ref[f"msis_{level}"], abs=6e-4)
        else:  # written before intervals existed: point metrics only
            assert not any(m.startswith(("coverage", "msis")) for m in rows.index)
        naive = table[(table["forecast_run_id"] == run_id) & table["series_id"].isna()
                      & (table["model"] == "seasonal_naive")]
        assert set(naive["metric"]) == set(POINT) and (naive["points"] == 4 * H).all()


def test_a_loaded_model_brings_its_saved_intervals(realised):
    out, early, late = realised["out"], realised["early"], realised["late"]
    assert early["backtest"]["intervals"] == "run"  # calibrated on its own backtest, then saved
    saved = out / "models" / early["model_key"] / early["model_version"] / "intervals.json"
    assert json.loads(saved.read_text())["levels"] == [80.0, 95.0]
    assert late["retrain"]["action"] == "load" and late["model_version"] == early["model_version"]
    assert late["backtest"]["intervals"] == "model"  # reused, not recalibrated on the later data
    preds = _table(out, "predictions", "late")
    assert preds[["yhat_lo_80", "yhat_hi_95"]].notna().all().all()


def test_old_and_new_outputs_read_as_one_dataset_with_pandas_and_pyarrow(realised):
    out = realised["out"]
    for table, new in (("predictions", "yhat_lo_95"), ("metrics", "backtest_window")):
        schema = table_schema(str(out), table)
        assert new in schema.names and "run" in schema.names
        by_pandas = pd.read_parquet(out / table, schema=schema)
        by_arrow = pads.dataset(out / table, format="parquet", partitioning="hive", schema=schema).to_table().to_pandas()
        for df in (by_pandas, by_arrow):
            assert set(df["run"].astype(str)) == {"a-old", "early", "late"}, table
            old = df[df["run"].astype(str) == "a-old"]
            assert len(old) > 0 and old[new].isna().all(), table  # the old run: the new column empty
            assert df.loc[df["run"].astype(str) == "late", new].notna().any(), table
        assert len(by_pandas) == len(by_arrow)
    # Without the schema, readers still read every run (the new columns from the first file's schema).
    plain = pd.read_parquet(out / "predictions")
    assert set(plain["run"].astype(str)) == {"a-old", "early", "late"}
