"""Inputs as they come: CSV or Parquet, other column names, and the encodings other tools write.

Every case is read twice, directly (`read_series`) and split into shards (`plan_shards` +
`split_shards` + `read_shard`, as a run over more than `shard_size` series does), and must come
back the same way, then validate to the same clean frame.
"""
from __future__ import annotations

import datetime
import decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstm_core.errors import DataValidationError
from lstm_core.inputs import check_input, read_series
from lstm_core.shard_plan import plan_shards
from lstm_core.shard_split import read_shard, split_shards
from lstm_core.validation import validate
from tests.conftest import make_frame

W, H = 24, 12


def both_ways(url: str, tmp_path, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(read directly, read through 2-series shards), each sorted by series and time."""
    columns = kw.pop("columns", None)
    direct = read_series(url, columns=columns, **kw)
    plan = plan_shards(url, columns=columns, shard_size=2, shard_rows=10**9, scratch=str(tmp_path / "scratch"),
                       **kw)
    assert plan.sharded
    split = split_shards(url, plan, columns=columns, **kw)
    sharded = pd.concat([read_shard(s.url, names=kw.get("names")) for s in split.shards], ignore_index=True)
    order = ["series_id", "ds"]
    return (direct.sort_values(order).reset_index(drop=True), sharded.sort_values(order).reset_index(drop=True))


def clean(frame: pd.DataFrame, freq: str | None = "h") -> pd.DataFrame:
    return validate(frame, freq, window=W, horizon=H).frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame(n_series=5, length=60)


# --- CSV and column names -----------------------------------------------------------------
def test_csv_reads_like_parquet_by_extension_or_setting(tmp_path, frame):
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    frame.to_csv(tmp_path / "in.csv", index=False)
    frame.to_csv(tmp_path / "noext", index=False)
    expected = clean(read_series(str(tmp_path / "in.parquet")))
    pd.testing.assert_frame_equal(clean(read_series(str(tmp_path / "in.csv"))), expected)
    pd.testing.assert_frame_equal(clean(read_series(str(tmp_path / "noext"), input_format="csv")), expected)
    with pytest.raises(DataValidationError, match="not a readable Parquet"):
        read_series(str(tmp_path / "noext"))  # no extension, no setting: Parquet expected
    direct, sharded = both_ways(str(tmp_path / "in.csv"), tmp_path)
    pd.testing.assert_frame_equal(clean(sharded), expected)


def test_csv_folder_of_parts_and_compressed_csv(tmp_path, frame):
    (tmp_path / "parts").mkdir()
    for i, (sid, g) in enumerate(frame.groupby("series_id")):
        g.to_csv(tmp_path / "parts" / (f"part-{i}.csv" + (".gz" if i % 2 else "")), index=False)
    expected = clean(frame)
    pd.testing.assert_frame_equal(clean(read_series(str(tmp_path / "parts"))), expected)


def test_other_column_names_are_mapped(tmp_path, frame):
    renamed = frame.rename(columns={"series_id": "store", "ds": "date", "y": "sales"}).assign(extra="x")
    renamed.to_parquet(tmp_path / "r.parquet", index=False)
    names = {"series_id": "store", "ds": "date", "y": "sales"}
    direct, sharded = both_ways(str(tmp_path / "r.parquet"), tmp_path, names=names,
                                columns=["store", "date", "sales"])
    assert list(direct.columns) == ["series_id", "ds", "y"]
    pd.testing.assert_frame_equal(clean(direct), clean(frame))
    pd.testing.assert_frame_equal(clean(sharded), clean(frame))
    with pytest.raises(DataValidationError, match="column 'amount': missing required column"):
        read_series(str(tmp_path / "r.parquet"), names={"series_id": "store", "ds": "date", "y": "amount"})


def test_columns_not_asked_for_are_not_read_and_are_named_by_the_plan(tmp_path, frame):
    frame.assign(price=1.0, note="text", huge=b"x" * 10).to_parquet(tmp_path / "w.parquet", index=False)
    got = read_series(str(tmp_path / "w.parquet"), columns=["series_id", "ds", "y", "price"])
    assert list(got.columns) == ["series_id", "ds", "y", "price"]
    plan = plan_shards(str(tmp_path / "w.parquet"), columns=["series_id", "ds", "y", "price"])
    assert plan.ignored_columns == ["note", "huge"] and plan.columns == ["series_id", "ds", "y", "price"]


def test_check_input_is_cheap_and_names_what_is_wrong(tmp_path, frame):
    with pytest.raises(DataValidationError, match=r"nope\.csv.*input path does not exist"):
        check_input(str(tmp_path / "nope.csv"))
    frame.to_csv(tmp_path / "x.csv", index=False)
    check_input(str(tmp_path / "x.csv"), required=["series_id", "ds", "y"])
    with pytest.raises(DataValidationError, match="column 'sales'"):
        check_input(str(tmp_path / "x.csv"), required=["series_id", "ds", "sales"])
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataValidationError, match="bad.parquet.*not a readable"):
        check_input(str(tmp_path / "bad.parquet"))


# --- time encodings -------------------------------------------------------------------
def test_ds_written_as_the_pandas_index_is_a_column(tmp_path, frame):
    frame.set_index("ds").to_parquet(tmp_path / "idx.parquet")
    direct, sharded = both_ways(str(tmp_path / "idx.parquet"), tmp_path)
    assert "ds" in direct.columns and "ds" in sharded.columns
    pd.testing.assert_frame_equal(clean(direct), clean(frame))
    pd.testing.assert_frame_equal(clean(sharded), clean(frame))


def _files(tmp_path, frame: pd.DataFrame, encode) -> str:
    """One file per series, series i encoded by `encode(i, part) -> pa.Table`."""
    folder = tmp_path / "lake"
    folder.mkdir()
    for i, (_, g) in enumerate(frame.groupby("series_id", sort=True)):
        pq.write_table(encode(i, g.reset_index(drop=True)), folder / f"part-{i}.parquet",
                       use_deprecated_int96_timestamps=getattr(encode, "int96", False))
    return str(folder)


def test_timestamp_units_differ_between_files(tmp_path, frame):
    units = ["s", "ms", "us", "ns", "us"]
    url = _files(tmp_path, frame, lambda i, g: pa.table({
        "series_id": g["series_id"].astype(str), "ds": pa.array(g["ds"].astype(f"datetime64[{units[i]}]")),
        "y": g["y"]}))
    direct, sharded = both_ways(url, tmp_path)
    pd.testing.assert_frame_equal(clean(direct), clean(frame))
    pd.testing.assert_frame_equal(clean(sharded), clean(frame))


def test_sentinel_9999_quarantines_only_its_series_read_either_way(tmp_path, frame):
    """One `9999-12-31` (microseconds, as Spark and DuckDB write it) in one series of five."""
    def encode(i, g):
        ds = g["ds"].astype("datetime64[us]")
        if i == 1:
            ds = ds.copy()
            ds.iloc[7] = pd.Timestamp("9999-12-31")
        return pa.table({"series_id": g["series_id"].astype(str), "ds": pa.array(ds), "y": g["y"]})

    url = _files(tmp_path, frame, encode)
    for got in both_ways(url, tmp_path):
        r = validate(got, "h", window=W, horizon=H)
        assert sorted(r.frame["series_id"].unique()) == ["s00", "s02", "s03", "s04"]
        (s,) = r.skipped
        assert (s.series_id, s.field) == ("s01", "ds") and "9999-12-31" in s.reason and "row" in s.reason


def test_spark_int96_timestamps_with_a_sentinel(tmp_path, frame):
    def encode(i, g):
        ds = [d.to_pydatetime() for d in g["ds"]]
        if i == 3:
            ds[0] = datetime.datetime(9999, 12, 31)
        return pa.table({"series_id": g["series_id"].astype(str), "ds": pa.array(ds, pa.timestamp("us")),
                         "y": g["y"]})

    encode.int96 = True
    url = _files(tmp_path, frame, encode)
    assert pq.ParquetFile(f"{url}/part-0.parquet").metadata.schema.column(1).physical_type == "INT96"
    direct, sharded = both_ways(url, tmp_path)
    for got in (direct, sharded):
        r = validate(got, "h", window=W, horizon=H)
        assert [s.series_id for s in r.skipped] == ["s03"] and r.frame["series_id"].nunique() == 4


def test_zone_aware_and_date_columns(tmp_path):
    daily = make_frame(n_series=4, length=60, freq="D")
    url = _files(tmp_path, daily, lambda i, g: pa.table({
        "series_id": g["series_id"].astype(str),
        "ds": pa.array([d.date() for d in g["ds"]], pa.date32()) if i % 2 else
        pa.array(g["ds"].astype("datetime64[ms]")),
        "y": g["y"]}))
    direct, sharded = both_ways(url, tmp_path)
    pd.testing.assert_frame_equal(clean(direct, "D"), clean(daily, "D"))
    pd.testing.assert_frame_equal(clean(sharded, "D"), clean(daily, "D"))


# --- number encodings -------------------------------------------------------------------
def test_int_and_float_target_in_different_files_sharded_or_not(tmp_path, frame):
    """The issue's case: y int64 in one file, float64 (10.5) in another; sharding used to fail."""
    def encode(i, g):
        y = g["y"].round().astype("int64") if i == 0 else g["y"].round(1)
        return pa.table({"series_id": g["series_id"].astype(str), "ds": pa.array(g["ds"]), "y": y})

    url = _files(tmp_path, frame, encode)
    direct, sharded = both_ways(url, tmp_path)
    assert direct["y"].dtype == sharded["y"].dtype == "float64"
    pd.testing.assert_frame_equal(clean(direct), clean(sharded))
    assert (direct.loc[direct["series_id"] == "s01", "y"] % 1 != 0).any()  # floats kept, not truncated


def test_decimal_nullable_and_all_null_partitions(tmp_path, frame):
    """Decimals (DuckDB, Spark), nullable ints with a null (pandas Int64), a column all null in one file."""
    def encode(i, g):
        if i == 0:
            y = pa.array([decimal.Decimal(f"{v:.3f}") for v in g["y"]], pa.decimal128(12, 3))
        elif i == 1:
            y = pa.array(g["y"].round().astype("Int64"))
        else:
            y = pa.array(g["y"])
        temp = pa.nulls(len(g)) if i == 2 else pa.array(np.full(len(g), 1.5))
        return pa.table({"series_id": g["series_id"].astype(str), "ds": pa.array(g["ds"]), "y": y, "temp": temp})

    url = _files(tmp_path, frame, encode)
    direct, sharded = both_ways(url, tmp_path, columns=["series_id", "ds", "y", "temp"], numeric=["temp"])
    for got in (direct, sharded):
        assert got["y"].dtype == "float64" and got["temp"].dtype == "float64"
        s00 = got[got["series_id"] == "s00"]["y"].to_numpy()
        np.testing.assert_allclose(s00, frame[frame["series_id"] == "s00"]["y"].round(3), atol=1e-9)
        assert got.loc[got["series_id"] == "s02", "temp"].isna().all()
    pd.testing.assert_frame_equal(direct, sharded)


def test_string_ds_with_offsets_from_csv(tmp_path):
    utc = pd.date_range("2026-03-27", periods=80, freq="h", tz="UTC")
    text = pd.Series(utc.tz_convert("Europe/Paris").strftime("%Y-%m-%dT%H:%M:%S%z")) \
        .str.replace(r"(\d{2})(\d{2})$", r"\1:\2", regex=True)
    frame = pd.DataFrame({"series_id": "p", "ds": text, "y": np.sin(np.arange(80)) + 5})
    frame.to_csv(tmp_path / "dst.csv", index=False)
    got = read_series(str(tmp_path / "dst.csv"))
    r = validate(got, None, window=W, horizon=H)
    assert r.skipped == [] and r.freq == "h" and (r.frame["ds"] == pd.Series(utc)).all()
