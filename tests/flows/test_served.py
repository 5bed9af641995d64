"""Issue 22 through the flow: every series with one valid point or more gets a forecast for every step,
with ordered intervals and the `model` that served it; the manifest counts series per model and gives
every candidate side by side; the tables read with pandas and pyarrow."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from flows.batch_forecast import batch_forecast
from lstm_core.outputs import table_schema
from tests.conftest import make_frame

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

H = 12
SETTINGS = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24, "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}
SHORT = {"p1": 1, "p2": 2, "p5": 5, "p10": 10, "p20": 20}


def _network_min() -> int:
    """Points from which the network learns a series under SETTINGS (`length_rules.min_train_length`)."""
    from lstm_core.config import ForecastConfig
    from lstm_core.length_rules import min_train_length

    return min_train_length(ForecastConfig(input_url="x.parquet", output_url="out", **SETTINGS))


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    long = make_frame(n_series=6, length=160)
    rng = np.random.default_rng(7)
    short = [pd.DataFrame({"series_id": sid, "ds": pd.date_range("2026-01-05", periods=n, freq="h"),
                           "y": 40 + rng.normal(0, 2, n).cumsum()}) for sid, n in SHORT.items()]
    faulty = make_frame(n_series=1, length=60, seed=9).assign(series_id="nan-inside")
    faulty.loc[faulty.index[10], "y"] = np.nan  # a data fault: quarantined, not forecast
    frame = pd.concat([long, *short, faulty], ignore_index=True).astype({"series_id": "string"})
    frame.to_parquet(tmp / "series.parquet", index=False)
    out = tmp / "out"
    manifest = batch_forecast(settings={**SETTINGS, "input_url": str(tmp / "series.parquet"), "output_url": str(out),
                                        "run_id": "served"})
    preds = pd.read_parquet(out / "predictions" / "run=served")
    return {"out": out, "manifest": manifest, "preds": preds, "long": sorted(long["series_id"].unique())}


def test_every_series_gets_h_rows_with_ordered_intervals_and_a_model(served_run):
    preds, manifest = served_run["preds"], served_run["manifest"]
    ids = set(served_run["long"]) | set(SHORT)
    assert set(preds["series_id"]) == ids  # shortness is no reason to skip
    assert (preds.groupby("series_id").size() == H).all()
    assert (preds.groupby("series_id")["step"].apply(sorted).apply(list) == [list(range(1, H + 1))] * len(ids)).all()
    cols = ["yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    assert np.isfinite(preds[cols].to_numpy()).all()
    assert (preds["yhat_lo_95"] <= preds["yhat_lo_80"]).all() and (preds["yhat_lo_80"] <= preds["yhat"]).all()
    assert (preds["yhat"] <= preds["yhat_hi_80"]).all() and (preds["yhat_hi_80"] <= preds["yhat_hi_95"]).all()
    assert preds["model"].notna().all() and (preds["model"] != "").all()
    # the 1- and 2-point series: a naive fallback; the network never serves a series it cannot take
    by_series = preds.groupby("series_id")["model"].first()
    assert by_series["p1"] == "naive" and by_series["p2"] == "naive"
    need = _network_min()
    below = [sid for sid, n in SHORT.items() if n < need]
    assert {"p1", "p2", "p5", "p10"} <= set(below)
    assert not any("lstm" in by_series[s] for s in below)
    assert preds.loc[preds["series_id"].isin(below), "yhat_lstm"].isna().all()
    above = [sid for sid in preds["series_id"].unique() if sid not in below]
    assert np.isfinite(preds.loc[preds["series_id"].isin(above), "yhat_lstm"]).all()  # the network's own
    # a series served by one candidate carries exactly that candidate's forecast
    for sid, model in by_series.items():
        if "+" not in model:
            rows = preds[preds["series_id"] == sid]
            assert np.allclose(rows["yhat"], rows[f"yhat_{model}"])
    # short series: honest intervals, never an 80% bound equal to the forecast
    short = preds[preds["series_id"].isin(list(SHORT))]  # (those the network serves included)
    assert (short["yhat_lo_80"] < short["yhat"]).all() and (short["yhat_hi_80"] > short["yhat"]).all()
    # the data fault stays in quarantine
    assert [s["series_id"] for s in manifest["skipped"]] == ["nan-inside"]


def test_the_manifest_counts_series_per_model_and_shows_every_candidate(served_run):
    manifest, preds = served_run["manifest"], served_run["preds"]
    counts = manifest["counts"]
    expected = preds.groupby("series_id")["model"].first().value_counts().to_dict()
    assert counts["series_by_model"] == expected == manifest["serving"]["series_by_model"]
    assert counts["series_forecast"] == sum(expected.values()) == 11 and counts["series_skipped"] == 1
    assert counts["prediction_rows"] == 11 * H
    overall = manifest["overall_metrics"]
    assert {manifest["model_version"], "autoets", "autotheta", "dynamic_theta", "seasonal_naive", "naive", "served"} <= set(overall)
    assert {"coverage_80", "coverage_95", "msis_95"} <= set(overall["served"])
    bands = manifest["serving"]["coverage_by_history"]
    assert bands and all(set(b["coverage"]) == {"80", "95"} for b in bands)
    assert sum(b["series_windows"] for b in bands) > 0
    assert manifest["serving"]["statistical_seconds"] > 0
    # the backtest holds every candidate side by side on the same rows, and the served forecast's own bounds
    bt = pd.read_parquet(served_run["out"] / "backtest" / "run=served")
    assert {"autoets", "autotheta", "dynamic_theta", "naive", "served", "model", "served_lo_80", "served_hi_95", "history"} <= \
        set(bt.columns)
    assert bt["served"].notna().all() and bt["model"].notna().all()
    assert "p20" in set(bt["series_id"])  # a short series is backtested where it has points before a cutoff
    # metrics: each model on the backtest windows, per series too
    metrics = pd.read_parquet(served_run["out"] / "metrics" / "run=served")
    assert {"lstm", "served", "autoets", "autotheta", "dynamic_theta", "naive", "seasonal_naive"} <= set(metrics["model"])
    assert set(metrics.loc[metrics["model"] == "lstm", "model_version"]) == {manifest["model_version"]}
    served_rows = metrics[(metrics["model"] == "served") & metrics["series_id"].notna() & metrics["backtest_window"].isna()]
    assert "p20" in set(served_rows["series_id"])


def test_model_and_candidate_columns_read_with_pandas_and_pyarrow(served_run):
    out = served_run["out"]
    schema = table_schema(str(out), "predictions")
    assert schema.field("model").type == pa.string()
    for c in ("lstm", "autoets", "autotheta", "dynamic_theta", "seasonal_naive", "naive"):
        assert schema.field(f"yhat_{c}").type == pa.float64()
    table = pads.dataset(str(out / "predictions"), partitioning="hive", schema=schema).to_table()
    assert table.num_rows == 11 * H and table.column("model").null_count == 0
    frame = pd.read_parquet(out / "predictions", schema=schema)
    assert frame["model"].notna().all()
    stored = json.loads(Path(out / "runs" / "served" / "manifest.json").read_text())
    assert stored["counts"]["series_by_model"] == served_run["manifest"]["counts"]["series_by_model"]
