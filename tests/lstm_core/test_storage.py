"""Reading Parquet through fsspec: single files, hive-partitioned folders, filters, local and S3."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from lstm_core.errors import DataValidationError
from lstm_core.inputs import read_series
from lstm_core.outputs import RunWriter, committed_runs, read_committed
from tests.conftest import make_frame


def _partitioned(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(region=frame["series_id"].map(lambda s: "eu" if int(s[1:]) % 2 else "us"),
                        price=frame["y"] * 0.1)


def test_reads_single_file_and_hive_folder_with_filters(tmp_path):
    frame = _partitioned(make_frame(n_series=4, length=30))
    frame.to_parquet(tmp_path / "one.parquet", index=False)
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "lake", partition_cols=["region"])

    single = read_series(str(tmp_path / "one.parquet"))
    assert len(single) == len(frame) and {"series_id", "ds", "y", "price", "region"} <= set(single.columns)

    whole = read_series(str(tmp_path / "lake"))
    assert len(whole) == len(frame)
    assert "region" not in whole.columns  # partition keys are read only when asked for

    eu = read_series(str(tmp_path / "lake"), columns=["region"], filters=[["region", "==", "eu"]])
    assert set(eu["region"].astype(str)) == {"eu"}
    assert set(eu["series_id"]) == {"s01", "s03"}


def test_reads_from_s3_on_moto(s3_bucket, s3_endpoint):
    frame = make_frame(n_series=3, length=20)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    for sid, g in frame.groupby("series_id"):
        with fs.open(f"{s3_bucket}/lake/series_id={sid}/part.parquet", "wb") as fh:
            g.drop(columns=["series_id"]).to_parquet(fh, index=False)
    got = read_series(f"{s3_bucket}/lake", columns=["series_id"], filters=[["series_id", "in", ["s00", "s02"]]])
    assert sorted(got["series_id"].astype(str).unique()) == ["s00", "s02"]
    assert len(got) == 40


def test_missing_path_and_missing_column_name_the_file(tmp_path):
    with pytest.raises(DataValidationError, match=r"nope\.parquet.*does not exist"):
        read_series(str(tmp_path / "nope.parquet"))
    make_frame(n_series=1, length=5).drop(columns=["ds"]).to_parquet(tmp_path / "x.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"x\.parquet, column 'ds'"):
        read_series(str(tmp_path / "x.parquet"))


def test_readers_see_only_committed_runs(tmp_path):
    out = str(tmp_path / "out")
    preds = pd.DataFrame({"series_id": ["a"], "ds": pd.to_datetime(["2026-01-01"]), "step": [1], "yhat": [1.0],
                          "model_version": ["v"], "cutoff": pd.to_datetime(["2025-12-31"])})
    done = RunWriter.open(out, "run-a")
    done.begin()
    done.write("predictions", preds)
    done.commit({"status": "succeeded"})
    half = RunWriter.open(out, "run-b")
    half.begin()
    half.write("predictions", preds.assign(yhat=2.0))  # never committed
    assert committed_runs(out) == ["run-a"]
    got = read_committed(out, "predictions")
    assert got["yhat"].tolist() == [1.0] and got["run_id"].tolist() == ["run-a"]
    # a typo is an error, not an empty answer that reads as 'nothing committed'
    with pytest.raises(ValueError, match="unknown table 'prediction': the output tables are predictions, metrics"):
        read_committed(out, "prediction")
    with pytest.raises(FileNotFoundError, match="no output at .*/no-such-out"):
        read_committed(str(tmp_path / "no-such-out"), "predictions")
    # Re-running a run id removes the manifest before anything else.
    done.begin()
    assert committed_runs(out) == []
    assert not (tmp_path / "out" / "predictions" / "run=run-a").exists()
