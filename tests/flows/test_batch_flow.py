"""End to end: Parquet in S3 (moto server) -> Prefect flow (test server) -> outputs in S3."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import s3fs

from flows.batch_forecast import batch_forecast
from tests.conftest import make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

H = 12
FAST = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24,
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}


def _fs(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


def _read(fs: s3fs.S3FileSystem, path: str) -> pd.DataFrame:
    with fs.open(path, "rb") as fh:
        return pd.read_parquet(fh)


@pytest.fixture
def s3_input(s3_bucket, s3_endpoint):
    frame = make_frame(n_series=5, length=150)
    fs = _fs(s3_endpoint)
    with fs.open(f"{s3_bucket}/input/series.parquet", "wb") as fh:
        frame.to_parquet(fh, index=False)
    return frame, f"{s3_bucket}/input/series.parquet", f"{s3_bucket}/output"


def test_flow_reads_s3_and_commits_predictions_metrics_manifest(s3_input, s3_endpoint):
    frame, input_url, output_url = s3_input
    manifest = batch_forecast(settings={**FAST, "input_url": input_url, "output_url": output_url})
    fs = _fs(s3_endpoint)
    run_id = manifest["run_id"]

    stored = json.loads(fs.cat(f"{output_url}/runs/{run_id}/manifest.json"))
    assert stored["status"] == "succeeded"
    assert stored["retrain"]["action"] == "train" and stored["retrain"]["reason"]
    assert stored["counts"]["series_forecast"] == 5 and stored["counts"]["series_skipped"] == 0

    preds = _read(fs, f"{output_url}/predictions/run={run_id}/part-0.parquet")
    assert len(preds) == 5 * H
    candidates = ["lstm", "autoets", "autotheta", "dynamic_theta", "seasonal_naive", "naive"]
    assert list(preds.columns) == ["series_id", "ds", "step", "yhat", "model_version", "run_id", "cutoff",
                                   "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95",
                                   "model", *(f"yhat_{c}" for c in candidates)]
    assert np.isfinite(preds["yhat"]).all()
    # Which model served each row (README, Which model serves a series): long series are served by the network,
    # seasonal naive, naive or the equal-weight mean of several; the statistical models are not fitted to them.
    assert preds[["yhat_autoets", "yhat_autotheta", "yhat_dynamic_theta"]].isna().all().all()
    assert np.isfinite(preds[["yhat_lstm", "yhat_seasonal_naive", "yhat_naive"]].to_numpy()).all()
    assert (preds.groupby("series_id")["model"].nunique() == 1).all()  # one choice per series
    for label, g in preds.groupby("model"):
        served_by = label.split("+")
        assert served_by and set(served_by) <= {"lstm", "seasonal_naive", "naive"}, label
        np.testing.assert_allclose(g["yhat"], g[[f"yhat_{c}" for c in served_by]].mean(axis=1), rtol=1e-9)
    by_model = preds.drop_duplicates("series_id")["model"].value_counts().to_dict()
    assert stored["counts"]["series_by_model"] == by_model
    last = frame.groupby("series_id")["ds"].max()
    for sid, g in preds.groupby("series_id"):
        g = g.sort_values("step")
        assert g["step"].tolist() == list(range(1, H + 1))
        expected = pd.date_range(last[sid], periods=H + 1, freq="h")[1:]
        assert (g["ds"].to_numpy() == expected.to_numpy()).all(), sid
        assert (g["cutoff"] == last[sid]).all()
    assert (preds["run_id"] == run_id).all() and (preds["model_version"] == stored["model_version"]).all()

    # Intervals are ordered and nested: lo_95 <= lo_80 <= yhat <= hi_80 <= hi_95, and not all zero-width.
    assert (preds["yhat_lo_95"] <= preds["yhat_lo_80"]).all() and (preds["yhat_lo_80"] <= preds["yhat"]).all()
    assert (preds["yhat"] <= preds["yhat_hi_80"]).all() and (preds["yhat_hi_80"] <= preds["yhat_hi_95"]).all()
    assert (preds["yhat_hi_95"] > preds["yhat_lo_95"]).all()

    metrics = _read(fs, f"{output_url}/metrics/run={run_id}/part-0.parquet")
    overall = metrics[metrics["series_id"].isna() & metrics["backtest_window"].isna()]
    # the labels side by side (the statistical models have no rows: not fitted to long series); the LSTM's
    # version beside its label, null on the others
    assert set(overall["model"]) == {"lstm", "seasonal_naive", "naive", "served"}
    assert set(overall.loc[overall["model"] == "lstm", "model_version"]) == {stored["model_version"]}
    assert overall.loc[overall["model"] != "lstm", "model_version"].isna().all()
    point, interval = {"mae", "rmse", "smape", "mase"}, {"coverage_80", "msis_80", "coverage_95", "msis_95"}
    with_intervals = {"lstm", "served"}  # the network and the served forecast have intervals; the naive ones not
    for model, g in overall.groupby("model"):
        assert set(g["metric"]) == point | (interval if model in with_intervals else set()), model
    assert np.isfinite(metrics["value"]).all()
    # 5 series x 3 windows: point metrics of each of the 4 models per series and window, per series, per window
    # and pooled; interval metrics of the LSTM and the served forecast where the window has intervals calibrated
    # on earlier windows (2 of 3).
    models = set(overall["model"])
    assert len(metrics) == len(models) * 4 * (5 * 3 + 5 + 3 + 1) + len(with_intervals) * 4 * (5 * 2 + 5 + 2 + 1)
    assert not metrics.duplicated(["series_id", "backtest_window", "model", "metric"]).any()

    # Secrets from the environment never reach the manifest.
    assert "testing" not in json.dumps(stored)


def test_second_run_loads_model_and_changed_config_retrains(s3_input, s3_endpoint):
    _, input_url, output_url = s3_input
    settings = {**FAST, "input_url": input_url, "output_url": output_url}
    first = batch_forecast(settings=settings)
    second = batch_forecast(settings=settings)
    assert second["retrain"]["action"] == "load", second["retrain"]
    assert first["model_version"] in second["retrain"]["reason"]
    assert second["model_version"] == first["model_version"]

    changed = {**settings, "model": {"units": [6]}}
    third = batch_forecast(settings=changed)
    assert third["retrain"]["action"] == "train"
    assert "no saved model for this configuration" in third["retrain"]["reason"]
    assert third["model_version"] != first["model_version"]


def test_bad_input_fails_before_writing_anything(s3_bucket, s3_endpoint):
    from lstm_core.errors import DataValidationError

    fs = _fs(s3_endpoint)
    bad = make_frame(n_series=2, length=80).drop(columns=["y"])
    with fs.open(f"{s3_bucket}/in/bad.parquet", "wb") as fh:
        bad.to_parquet(fh, index=False)
    with pytest.raises(DataValidationError, match="column 'y'"):
        batch_forecast(settings={**FAST, "input_url": f"{s3_bucket}/in/bad.parquet",
                                 "output_url": f"{s3_bucket}/out", "run_id": "bad-run"})
    assert not fs.exists(f"{s3_bucket}/out/predictions")
    manifest = json.loads(fs.cat(f"{s3_bucket}/out/runs/bad-run/manifest.json"))
    assert manifest["status"] == "failed" and "column 'y'" in manifest["error"]
