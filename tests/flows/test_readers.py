"""Issue 25 (3): a committed run, made by the real CLI, read without error and with the right values by
pandas, pyarrow, DuckDB and polars; timestamps in microseconds (Spark 3 refuses nanoseconds: Spark is not
installed here, so the Parquet logical types are asserted instead); no column named by a reserved word of
DuckDB or Spark SQL."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from lstm_core.layout import OUTPUT_SCHEMA_VERSION, TABLES
from lstm_core.outputs import read_committed
from tests.conftest import make_frame
from tests.flows.test_cli import FAST_FLAGS, run_cli

pytestmark = pytest.mark.slow

H = 12
# Spark SQL's keywords reserved in ANSI mode (`spark.sql.ansi.enabled`; docs/sql-ref-ansi-compliance.md,
# "SQL Keywords"). In the default mode Spark reserves none; in ANSI mode these cannot name a column unquoted.
SPARK_ANSI_RESERVED = frozenset("""
ALL AND ANY AS AUTHORIZATION BOTH CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE CROSS CURRENT_DATE
CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DISTINCT ELSE END ESCAPE EXCEPT FALSE FETCH FILTER FOR FOREIGN
FROM FULL GRANT GROUP HAVING IN INNER INTERSECT INTO IS JOIN LATERAL LEADING LEFT NATURAL NOT NULL OFFSET ON
ONLY OR ORDER OUTER OVERLAPS PRIMARY REFERENCES RIGHT SELECT SESSION_USER SOME TABLE THEN TIME TO TRAILING
UNION UNIQUE UNKNOWN USER USING WHEN WHERE WITH
""".lower().split())


def _duckdb_reserved() -> set[str]:
    rows = duckdb.sql("SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'").fetchall()
    return {r[0].lower() for r in rows}


@pytest.fixture(scope="module")
def committed(tmp_path_factory, prefect_api_url) -> dict:
    """Two committed CLI runs on one output: `early` on the data without their last H hours, `late` on all
    of it (so it scores `early`'s forecasts: the realised table), with timestamps in UTC and one series without
    a value (the quarantine table)."""
    tmp = tmp_path_factory.mktemp("readers")
    frame = make_frame(n_series=3, length=150)
    frame["ds"] = frame["ds"].dt.tz_localize("UTC")
    short = make_frame(n_series=1, length=20).assign(series_id="short", y=float("nan"))  # no value: quarantined
    short["ds"] = short["ds"].dt.tz_localize("UTC")
    full = pd.concat([frame, short], ignore_index=True).astype({"series_id": "string"})
    last = full.groupby("series_id")["ds"].transform("max")
    early = full[(full["series_id"] == "short") | (full["ds"] <= last - pd.Timedelta(hours=H))]
    out = tmp / "out"
    env = {"PREFECT_API_URL": prefect_api_url}
    for run_id, data in (("early", early), ("late", full)):
        path = tmp / f"{run_id}.parquet"
        data.to_parquet(path, index=False)
        done = run_cli("run", "--input", str(path), "--output", str(out), *FAST_FLAGS, "--set", f"run_id={run_id}",
                       env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "early": early, "full": full}


def _parts(out: Path, table: str) -> list[Path]:
    return sorted((out / table).glob("run=*/part-*.parquet"))


def test_every_table_has_microsecond_timestamps_and_no_reserved_column_name(committed):
    out = committed["out"]
    reserved = _duckdb_reserved() | SPARK_ANSI_RESERVED
    assert "window" in reserved and "time" in reserved  # the lists are the real ones
    seen = set()
    for table in TABLES:
        parts = _parts(out, table)
        assert parts, table  # the run wrote every table (realised: `late` scored `early`)
        for path in parts:
            arrow = pq.read_schema(path)
            for field in arrow:
                assert field.name.lower() not in reserved, (path, field.name)
                if pa.types.is_timestamp(field.type):
                    assert field.type.unit == "us", (path, field.name, field.type)
                    seen.add(table)
            # the Parquet logical types themselves (what Spark reads): microseconds, never nanoseconds
            parquet = pq.ParquetFile(path).schema
            for i in range(len(parquet)):
                logical = str(parquet.column(i).logical_type)
                assert "NANOS" not in logical.upper() and "nanoseconds" not in logical.lower(), (path, logical)
                if logical.startswith("Timestamp"):
                    assert "microseconds" in logical.lower() or "MICROS" in logical.upper(), (path, logical)
    # the tables that hold timestamps (revisions: `late` compared with `early`)
    assert seen == {"predictions", "metrics", "backtest", "realised", "revisions"}
    # the partition column readers add
    assert "run" not in reserved
    manifest = json.loads((out / "runs" / "late" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["output_schema_version"] == OUTPUT_SCHEMA_VERSION == 2


def _pandas(out: Path, table: str) -> pd.DataFrame:
    return read_committed(str(out), table)


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, na_position="first", kind="stable").reset_index(drop=True)


KEYS = {
    "predictions": ["run_id", "series_id", "step"],
    "metrics": ["run_id", "series_id", "backtest_window", "model", "metric"],
    "backtest": ["run_id", "series_id", "cutoff", "step"],
    "realised": ["run_id", "forecast_run_id", "series_id", "model", "metric"],
    "quarantine": ["run_id", "series_id"],
}


def test_pandas_pyarrow_duckdb_and_polars_read_the_same_right_values(committed):
    out, early = committed["out"], committed["early"]
    for table, keys in KEYS.items():
        ours = _sorted(_pandas(out, table), keys)
        glob = str(out / table / "*" / "*.parquet")
        by_arrow = _sorted(pads.dataset(out / table, format="parquet", partitioning="hive").to_table().to_pandas(),
                           keys)
        by_duckdb = _sorted(duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").df(), keys)
        by_polars = _sorted(pl.read_parquet(glob, hive_partitioning=True).to_pandas(), keys)
        for name, other in (("pyarrow", by_arrow), ("duckdb", by_duckdb), ("polars", by_polars)):
            assert len(other) == len(ours) > 0, (table, name)
            for col in ours.columns:
                a, b = ours[col], other[col]
                if pd.api.types.is_datetime64_any_dtype(a):
                    # the same instants (DuckDB gives zoned timestamps in its session's zone)
                    assert pd.api.types.is_datetime64_any_dtype(b), (table, name, col, b.dtype)
                    pd.testing.assert_series_equal(pd.to_datetime(a, utc=True).dt.as_unit("us"),
                                                   pd.to_datetime(b, utc=True).dt.as_unit("us"), check_names=False,
                                                   obj=f"{table} {name} {col}")
                elif pd.api.types.is_float_dtype(a):
                    np.testing.assert_array_equal(a.to_numpy(float), b.to_numpy(float), err_msg=f"{table} {name} {col}")
                else:
                    assert a.astype(object).where(a.notna(), None).tolist() == \
                        b.astype(object).where(b.notna(), None).tolist(), (table, name, col)
    # The right values: forecast dates continue each series' hourly grid from its last input hour, in UTC.
    preds = _pandas(out, "predictions")
    first = preds[preds["run_id"] == "early"]
    last = early.groupby("series_id")["ds"].max()
    for sid, g in first.groupby("series_id"):
        expected = pd.date_range(last[sid] + pd.Timedelta(hours=1), periods=H, freq="h")
        assert list(g.sort_values("step")["ds"]) == list(expected), sid
    assert str(first["ds"].dt.tz) == "UTC"
    quarantine = _pandas(out, "quarantine")
    assert set(quarantine["series_id"]) == {"short"}
    # SQL without quoting: the window and the model label are plain names
    metrics_glob = str(out / "metrics" / "*" / "*.parquet")
    rows = duckdb.sql(f"SELECT model, model_version, count(*) AS n FROM read_parquet('{metrics_glob}', "
                      f"hive_partitioning = true) WHERE series_id IS NULL AND backtest_window IS NULL "
                      f"AND run = 'late' GROUP BY model, model_version ORDER BY model").fetchall()
    manifest = json.loads((out / "runs" / "late" / "manifest.json").read_text())
    versions = {m: v for m, v, _ in rows}
    assert len(versions) == len(rows) and versions["lstm"] == manifest["model_version"]  # one row per model label
    assert {"lstm", "seasonal_naive"} <= set(versions) and all(v is None for m, v in versions.items() if m != "lstm")
    realised = pl.read_parquet(str(out / "realised" / "*" / "*.parquet"), hive_partitioning=True)
    scored = realised.filter(pl.col("series_id").is_null() & (pl.col("model") == "lstm"))
    early_manifest = json.loads((out / "runs" / "early" / "manifest.json").read_text())
    assert set(scored["model_version"].to_list()) == {early_manifest["model_version"]}
    assert set(scored["forecast_run_id"].to_list()) == {"early"}
