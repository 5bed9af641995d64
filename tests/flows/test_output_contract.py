"""The output contract as a downstream reader meets it (README: Output contract).

Part files per shard and their dtypes, the `run` partition column that reading a table's folder
adds, the quarantine of a sharded run (every skipped series of every shard, as the manifest lists
them), overall metrics as the mean over all series, the manifest's documented fields, and that a
local run leaves exactly the contract's files.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from flows.batch_forecast import batch_forecast
from lstm_core.lease import RunLease
from lstm_core.outputs import RunWriter, read_committed
from lstm_core.location import filesystem
from lstm_core.shard_plan import shard_of
from tests.conftest import make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

H = 12
SETTINGS = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24, "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}
# The contract's columns and types (output schema 2); tables may gain columns, never lose or retype these.
TIMESTAMP = pa.timestamp("us")  # microseconds: Spark 3 refuses nanoseconds
CONTRACT = {
    "predictions": [("series_id", pa.string()), ("ds", TIMESTAMP), ("step", pa.int64()), ("yhat", pa.float64()),
                    ("model_version", pa.string()), ("run_id", pa.string()), ("cutoff", TIMESTAMP)],
    "metrics": [("series_id", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
                ("model", pa.string()), ("run_id", pa.string()), ("cutoff", TIMESTAMP),
                ("backtest_window", pa.int64()), ("model_version", pa.string())],
    "quarantine": [("series_id", pa.string()), ("field", pa.string()), ("reason", pa.string()),
                   ("run_id", pa.string())],
    "backtest": [("series_id", pa.string()), ("cutoff", TIMESTAMP), ("ds", TIMESTAMP), ("step", pa.int64()),
                 ("y", pa.float64()), ("yhat", pa.float64()), ("seasonal_naive", pa.float64()),
                 ("run_id", pa.string())],
}
INTERVALS = ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]  # levels [80, 95], the default
POINT = ["mae", "rmse", "smape", "mase"]
GOOD, SHARD_SIZE = 10, 4


def _series(sid: str, seed: int, length: int = 80) -> pd.DataFrame:
    return make_frame(n_series=1, length=length, seed=seed).assign(series_id=sid)


def _broken(sid: str, kind: str, seed: int) -> tuple[pd.DataFrame, str]:
    """A series with one series-level problem, and the field the quarantine names."""
    s = _series(sid, seed)
    if kind == "missing":  # shortness is no fault (issue 22): a series without a valid value is
        return s.assign(y=np.nan), "y"
    if kind == "constant":
        return s.assign(y=3.0), "y"
    if kind == "nan":
        s.loc[s.index[30], "y"] = np.nan
        return s, "y"
    return pd.concat([s, s.iloc[[5]]]), "ds"  # a duplicate timestamp


def _bad_ids(n_shards: int) -> list[str]:
    """Six ids spread over the shards, two of them in one shard."""
    candidates = np.array([f"bad-{i:02d}" for i in range(200)], dtype=object)
    shard = shard_of(candidates, n_shards)
    by_shard = {k: list(candidates[shard == k]) for k in range(n_shards)}
    first, second, third = by_shard[0][:3], by_shard[1][:2], by_shard[2][:1]
    return first + second + third


@pytest.fixture(scope="module")
def sharded(s3_endpoint, tmp_path_factory):
    """A sharded run on S3 (moto) whose bad series sit in three shards, two or more in one."""
    import s3fs

    n_shards = -(-(GOOD + 6) // SHARD_SIZE)
    bad_ids = _bad_ids(n_shards)
    # data faults only: a short or constant series is no fault, a statistical fallback forecasts it (issue 22)
    kinds = ["missing", "dup", "nan", "dup", "missing", "nan"]
    parts, expected = [_series(f"good-{i:02d}", i) for i in range(GOOD)], {}
    for i, (sid, kind) in enumerate(zip(bad_ids, kinds)):
        rows, field = _broken(sid, kind, 50 + i)
        parts.append(rows)
        expected[sid] = field
    frame = pd.concat(parts, ignore_index=True).astype({"series_id": "string"})
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True, use_listings_cache=False)
    bucket = f"contract-sharded-{os.getpid()}-{np.random.default_rng().integers(10**6)}"
    fs.mkdir(bucket)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    fs.pipe_file(f"{bucket}/in/series.parquet", buf.getvalue())
    out = f"s3://{bucket}/out"
    manifest = batch_forecast(settings={**SETTINGS, "input_url": f"s3://{bucket}/in/series.parquet",
                                        "output_url": out, "shard_size": SHARD_SIZE, "run_id": "sharded"})
    return {"fs": fs, "out": out, "manifest": manifest, "expected": expected, "n_shards": n_shards}


def _s3_parts(fs, out: str, table: str, run_id: str) -> dict[str, pa.Table]:
    base = f"{out.removeprefix('s3://')}/{table}/run={run_id}"
    return {p.rsplit("/", 1)[-1]: pq.read_table(io.BytesIO(fs.cat_file(p))) for p in sorted(fs.ls(base, detail=False))}


def test_a_sharded_run_quarantines_every_skipped_series_of_every_shard(sharded):
    fs, out, manifest, expected = sharded["fs"], sharded["out"], sharded["manifest"], sharded["expected"]
    assert manifest["shards"]["split"] and manifest["shards"]["count"] == sharded["n_shards"]
    quarantine = _s3_parts(fs, out, "quarantine", "sharded")
    assert sorted(quarantine) == [f"part-{k}.parquet" for k in range(sharded["n_shards"])]
    # The skipped series sat in three shards, two or more in one: each shard's part holds its own.
    rows_per_part = sorted(t.num_rows for t in quarantine.values())
    assert rows_per_part[-3:] == [1, 2, 3], rows_per_part
    rows = pd.concat([t.to_pandas() for t in quarantine.values()], ignore_index=True)
    table = {(r.series_id, r.field, r.reason) for r in rows.itertuples()}
    listed = {(s["series_id"], s["field"], s["reason"]) for s in manifest["skipped"]}
    assert table == listed and len(rows) == len(manifest["skipped"]) == manifest["counts"]["series_skipped"] == 6
    assert {(sid, field) for sid, field, _ in table} == set(expected.items())
    assert (rows["run_id"] == "sharded").all()

    # The good series are forecast, each in its shard's part, and nothing else.
    preds = pd.concat([t.to_pandas() for t in _s3_parts(fs, out, "predictions", "sharded").values()])
    assert sorted(preds["series_id"].unique()) == [f"good-{i:02d}" for i in range(GOOD)]
    assert len(preds) == GOOD * H == manifest["counts"]["prediction_rows"]

    # Overall metrics (part-overall) are the mean over every series (and backtest window) of every shard;
    # per window, the mean over every series in that window.
    metrics = _s3_parts(fs, out, "metrics", "sharded")
    assert "part-overall.parquet" in metrics
    overall = metrics.pop("part-overall.parquet").to_pandas()
    per_series = pd.concat([t.to_pandas() for t in metrics.values()], ignore_index=True)
    assert per_series["series_id"].notna().all() and per_series["series_id"].nunique() == GOOD
    per_window = per_series[per_series["backtest_window"].notna() & per_series["metric"].isin(POINT)]
    means = per_window.groupby(["model", "metric"])["value"].mean()
    window_means = per_window.groupby(["model", "metric", "backtest_window"])["value"].mean()
    pooled = overall[overall["backtest_window"].isna() & overall["metric"].isin(POINT)]
    # seven models side by side: the LSTM, seasonal naive, AutoETS, AutoTheta, DynamicOptimizedTheta, naive and
    # the served forecast
    assert overall["series_id"].isna().all() and len(pooled) == len(means) == 7 * 4
    assert set(overall.loc[overall["model"] == "lstm", "model_version"]) == {manifest["model_version"]}
    assert overall.loc[overall["model"] != "lstm", "model_version"].isna().all()
    for row in pooled.itertuples():
        assert row.value == pytest.approx(means[(row.model, row.metric)], rel=1e-12)
        key = manifest["model_version"] if row.model == "lstm" else row.model  # the manifest keys by version
        assert manifest["overall_metrics"][key][row.metric] == pytest.approx(row.value, rel=1e-12)
    windows = overall[overall["backtest_window"].notna() & overall["metric"].isin(POINT)]
    assert len(windows) == len(window_means) == 7 * 4 * 3
    for row in windows.itertuples():
        assert row.value == pytest.approx(window_means[(row.model, row.metric, row.backtest_window)], rel=1e-12)
    # Coverage pools the points of every shard: the manifest's equals the backtest table's.
    bt = pd.concat([t.to_pandas() for t in _s3_parts(fs, out, "backtest", "sharded").values()], ignore_index=True)
    has = bt["yhat_lo_95"].notna()
    inside = (bt["y"] >= bt["yhat_lo_95"]) & (bt["y"] <= bt["yhat_hi_95"])
    assert manifest["overall_metrics"][manifest["model_version"]]["coverage_95"] == \
        pytest.approx(inside[has].mean(), rel=1e-12)


def _assert_contract(table: str, schema: pa.Schema, where: str) -> None:
    for name, dtype in CONTRACT[table]:
        assert name in schema.names, (where, name, schema)
        assert schema.field(name).type == dtype, (where, name, schema.field(name).type)


def test_part_files_have_the_contract_columns_and_dtypes(sharded, local_runs):
    for table in CONTRACT:
        for name, part in _s3_parts(sharded["fs"], sharded["out"], table, "sharded").items():
            _assert_contract(table, part.schema, f"s3 {table}/{name}")
        for path in sorted((local_runs["out"] / table / "run=one").glob("part-*.parquet")):
            _assert_contract(table, pq.read_schema(path), str(path))
    # One shard, one part: part-0 holds the overall rows too (over all windows, and per window).
    local = pd.read_parquet(local_runs["out"] / "metrics" / "run=one" / "part-0.parquet")
    point = local[local["metric"].isin(POINT)]
    per_model = 4 * 7  # 4 point metrics x 7 models (the LSTM, seasonal naive, AutoETS, AutoTheta, DynamicOptimizedTheta,
    # naive, served)
    assert (point["series_id"].isna() & point["backtest_window"].isna()).sum() == per_model
    assert (point["series_id"].notna() & point["backtest_window"].isna()).sum() == per_model * 3
    assert (point["series_id"].isna() & point["backtest_window"].notna()).sum() == per_model * 3
    # Predictions and backtest gain the interval columns, after the contract's own.
    for table in ("predictions", "backtest"):
        names = pq.read_schema(local_runs["out"] / table / "run=one" / "part-0.parquet").names
        assert [n for n in names if n.startswith(("yhat_lo_", "yhat_hi_"))] == INTERVALS, (table, names)
    # ... then the served forecast's: what served each row and every candidate's own forecast (issue 22)
    names = pq.read_schema(local_runs["out"] / "predictions" / "run=one" / "part-0.parquet").names
    assert names[names.index("yhat_hi_95") + 1:] == ["model", "yhat_lstm", "yhat_autoets", "yhat_autotheta", "yhat_dynamic_theta",
                                                     "yhat_seasonal_naive", "yhat_naive"], names
    names = pq.read_schema(local_runs["out"] / "backtest" / "run=one" / "part-0.parquet").names
    assert names[names.index("run_id") + 1:] == ["autoets", "autotheta", "dynamic_theta", "naive", "served", "model",
                                                 *(c.replace("yhat_", "served_") for c in INTERVALS), "history"]


# --- a local output location with two committed runs, one half-written -------------------------------
@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    frame = pd.concat([_series(f"s{i}", i) for i in range(3)] + [_broken("flat", "missing", 9)[0]],
                      ignore_index=True).astype({"series_id": "string"})
    frame.to_parquet(tmp / "series.parquet", index=False)
    out = tmp / "out"
    settings = {**SETTINGS, "input_url": str(tmp / "series.parquet"), "output_url": str(out)}
    one = batch_forecast(settings={**settings, "run_id": "one"})
    two = batch_forecast(settings={**settings, "run_id": "two"})
    # A run that died after writing its predictions: partition files, no manifest.
    half = RunWriter.open(str(out), "half")
    half.write("predictions", pd.read_parquet(out / "predictions" / "run=one").drop(columns=["run_id"]))
    # A run that has only just started (or died before writing): its lock file, no manifest yet.
    fs, root = filesystem(str(out))
    RunLease.acquire(fs, root, "starting", ttl=60).release()
    return {"out": out, "one": one, "two": two}


def readme_recipe() -> str:
    """The reader recipe of the project README's Output contract, as written there."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Output contract"):]
    return section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]


def test_reading_a_table_folder_adds_the_run_partition_column(local_runs):
    out = local_runs["out"]
    for table in CONTRACT:
        df = pd.read_parquet(out / table)
        assert "run" in df.columns and "run_id" in df.columns
        assert (df["run"].astype(str) == df["run_id"]).all(), table
    preds = pd.read_parquet(out / "predictions")
    assert set(preds["run"].astype(str)) == {"one", "two", "half"}
    dataset = pads.dataset(out / "predictions", format="parquet", partitioning="hive")
    assert "run" in dataset.schema.names
    # Each file stands on its own: its run id is in its rows.
    assert set(pd.read_parquet(out / "predictions" / "run=two" / "part-0.parquet")["run_id"]) == {"two"}


def test_read_committed_is_the_readme_recipe(local_runs):
    out = str(local_runs["out"])
    assert (local_runs["out"] / "runs" / "starting").is_dir()  # a run without a manifest (yet)
    # The README's recipe, run as written there, on this output location.
    recipe = readme_recipe()
    assert 'out = "data/demo/output"' in recipe
    scope: dict = {}
    exec(compile(recipe.replace('out = "data/demo/output"', f"out = {out!r}"), "README.md", "exec"), scope)
    runs, preds = scope["runs"], scope["preds"]
    assert sorted(runs) == ["one", "two"] and set(preds["run"].astype(str)) == {"one", "two"}
    committed = read_committed(out, "predictions")
    key = ["run_id", "series_id", "step"]
    a = preds.drop(columns=["run"]).sort_values(key).reset_index(drop=True)
    b = committed.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)
    assert len(b) == 2 * 3 * H and "half" not in set(b["run_id"])


def test_the_manifest_holds_every_documented_field(local_runs):
    manifest = json.loads((local_runs["out"] / "runs" / "one" / "manifest.json").read_text())
    assert manifest == local_runs["one"]
    assert manifest["status"] == "succeeded" and manifest["run_id"] == "one"
    assert manifest["run_id_source"] == "configured" and manifest["scheduled_start"] is None
    assert manifest["flow_run_id"]
    assert manifest["input_url"].endswith("series.parquet") and len(manifest["input_fingerprint"]) == 32
    assert manifest["config"]["horizon"] == H and manifest["config"]["storage_options"] == {}
    assert manifest["model_version"] and manifest["model_key"]
    assert manifest["retrain"]["action"] == "train" and manifest["retrain"]["reason"]
    by_model = manifest["counts"].pop("series_by_model")
    assert sum(by_model.values()) == 3 and by_model == manifest["serving"]["series_by_model"]
    assert manifest["counts"] == {"series_read": 4, "rows_read": 4 * 80, "series_forecast": 3, "series_skipped": 1,
                                  "prediction_rows": 3 * H, "points_filled": 0}
    assert manifest["skipped"] == [{"series_id": "flat", "field": "y", "reason": manifest["skipped"][0]["reason"]}]
    assert "all values missing" in manifest["skipped"][0]["reason"]
    # every model side by side on the same backtest windows (issue 22)
    assert set(manifest["overall_metrics"]) == {manifest["model_version"], "seasonal_naive", "autoets", "autotheta", "dynamic_theta",
                                                "naive", "served"}
    # the point metrics for both models, coverage and MSIS per level for the model with intervals
    assert set(manifest["overall_metrics"]["seasonal_naive"]) == set(POINT)
    assert set(manifest["overall_metrics"][manifest["model_version"]]) == \
        {*POINT, "coverage_80", "msis_80", "coverage_95", "msis_95"}
    assert manifest["backtest"]["windows"] == 3 and manifest["backtest"]["step"] == H
    assert manifest["backtest"]["intervals"] == "run" and manifest["backtest"]["levels"] == [80.0, 95.0]
    assert manifest["timings_s"]["wall_total"] > 0 and "forecast" in manifest["timings_s"]
    assert {"tensorflow", "keras", "pandas", "pyarrow", "prefect"} <= set(manifest["versions"]) or \
        {"tensorflow-cpu", "keras", "pandas", "pyarrow", "prefect"} <= set(manifest["versions"])
    assert manifest["shards"]["count"] == 1 and len(manifest["shards"]["items"]) == 1
    assert set(manifest["outputs"]) >= {"predictions", "metrics", "quarantine", "backtest", "plots"}
    assert set(manifest["outputs"]["plots"]) == {"loss.png", "holdout.png", "error_distribution.png",
                                                 "forecast_intervals.png", "backtest.png"}
    assert manifest["started_at"] <= manifest["finished_at"]


def test_a_local_run_leaves_exactly_the_contract_files(local_runs):
    out = local_runs["out"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and p.parts[len(out.parts)] != "models")
    one = [f for f in files if "one" in f]
    assert one == ["backtest/run=one/part-0.parquet", "metrics/run=one/part-0.parquet",
                   "predictions/run=one/part-0.parquet", "quarantine/run=one/part-0.parquet", "runs/one/lease.json",
                   "runs/one/manifest.json", "runs/one/plots/backtest.png", "runs/one/plots/error_distribution.png",
                   "runs/one/plots/forecast_intervals.png", "runs/one/plots/holdout.png", "runs/one/plots/loss.png"]
    assert not [f for f in files if ".tmp" in f], files  # written to a temp file, then renamed
    # Locally the lease is the lock file, empty when no process runs the run id.
    assert (out / "runs" / "one" / "lease.json").read_bytes() == b""
    assert not (out / "_scratch").exists()
