"""Issue 25, points 1 and 2: every encoding real files hold, read by kind, through the run's own path
(`read_series` with the configuration's input options, then `validate_for`), or refused with exit-2
errors naming the file, the user's column, the series, the row and the setting that resolves it.

Each case of the issue is a test with its right value; `test_encodings_property.py` generates the kinds.
"""
from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstm_core.config import validate_config
from lstm_core.errors import DataValidationError
from lstm_core.frequency import dates_after
from lstm_core.inputs import check_input, read_series
from lstm_core.validation import ValidationResult, validate_for

H = 7
SALES = {"id_column": "store", "time_column": "date", "target_column": "sales"}


def settings(**kw) -> dict:
    return {"horizon": H, "model": {"units": [8]}, **kw}


def run_input(url: str, **kw) -> ValidationResult:
    """What a run makes of the input: read with the configuration's options, then validated."""
    config = validate_config({"input_url": url, **settings(**kw)})
    frame = read_series(url, config.read_columns(), config.filters, **config.input_options())
    return validate_for(frame, config, source=url)


def daily_sales(n: int = 3, length: int = 60, start: str = "2023-01-02", freq: str = "D") -> pd.DataFrame:
    """store, date (datetime), sales: ids with leading zeros."""
    rng = np.random.default_rng(3)
    rows = []
    for s in range(n):
        ds = pd.date_range(start, periods=length, freq=freq)
        y = 100 + 10 * s + 5 * np.sin(np.arange(length) / 7 * 2 * np.pi) + rng.normal(0, 1, length)
        rows.append(pd.DataFrame({"store": f"{s:03d}", "date": ds, "sales": y.round(2)}))
    return pd.concat(rows, ignore_index=True)


def assert_reads_back(result: ValidationResult, expected: pd.DataFrame) -> None:
    got = result.frame[["series_id", "ds", "y"]].copy()
    got["ds"] = pd.DatetimeIndex(got["ds"]).tz_localize(None) if getattr(got["ds"].dt, "tz", None) else got["ds"]
    want = expected.rename(columns={"store": "series_id", "date": "ds", "sales": "y"})
    want = want.sort_values(["series_id", "ds"]).reset_index(drop=True)
    assert result.skipped == []
    assert list(got["series_id"].astype(str)) == list(want["series_id"])
    assert (got["ds"].to_numpy("datetime64[ns]") == want["ds"].to_numpy("datetime64[ns]")).all()
    np.testing.assert_allclose(got["y"].to_numpy(), want["y"].to_numpy())


# --- 1. the blocker: plain dates are dates, not offsets ---------------------------------------------
def test_daily_csv_store_date_sales_reads_every_day_and_forecasts_the_next_days(tmp_path):
    data = daily_sales()
    data.assign(date=data["date"].dt.strftime("%Y-%m-%d")).to_csv(tmp_path / "sales.csv", index=False)
    result = run_input(str(tmp_path / "sales.csv"), **SALES)
    assert result.freq == "D"
    assert_reads_back(result, data)
    assert sorted(result.frame["series_id"].unique()) == ["000", "001", "002"]  # leading zeros kept
    last = result.frame.groupby("series_id")["ds"].max()
    future = dates_after(last.to_numpy(), result.freq, H)
    assert list(pd.DatetimeIndex(future[0])) == list(pd.date_range("2023-03-03", periods=H, freq="D"))


@pytest.mark.parametrize("freq,form,expected_freq", [
    ("W-MON", "%Y-%m-%d", "W-MON"),
    ("MS", "%Y-%m", "MS"),  # month strings: one month each, not a collapse onto duplicates
    ("ME", "%Y-%m-%d", "ME"),
    ("QE-DEC", "%Y-%m-%d", "QE-DEC"),
    ("YS-JAN", "%Y-%m-%d", "YS-JAN"),
])
def test_weekly_monthly_quarterly_yearly_text_dates_keep_their_grid(tmp_path, freq, form, expected_freq):
    data = daily_sales(length=40, start="1990-01-01", freq=freq)
    data.assign(date=data["date"].dt.strftime(form)).to_csv(tmp_path / "in.csv", index=False)
    result = run_input(str(tmp_path / "in.csv"), **SALES)
    assert pd.tseries.frequencies.to_offset(result.freq) == pd.tseries.frequencies.to_offset(expected_freq)
    assert_reads_back(result, data)
    last = result.frame.groupby("series_id")["ds"].max()
    future = pd.DatetimeIndex(dates_after(last.to_numpy(), result.freq, 3)[0])
    assert list(future) == list(pd.date_range(data["date"].max(), periods=4, freq=freq)[1:])


def test_month_ends_with_freq_me_stay_ends_and_freq_ms_is_refused_not_shifted(tmp_path):
    data = daily_sales(length=40, start="2020-01-31", freq="ME")
    data.assign(date=data["date"].dt.strftime("%Y-%m-%d")).to_csv(tmp_path / "in.csv", index=False)
    result = run_input(str(tmp_path / "in.csv"), freq="ME", **SALES)
    assert_reads_back(result, data)
    assert pd.DatetimeIndex(result.frame["ds"]).is_month_end.all()
    future = pd.DatetimeIndex(dates_after(result.frame.groupby("series_id")["ds"].max().to_numpy(), "ME", 3)[0])
    assert list(future.strftime("%Y-%m-%d")) == ["2023-05-31", "2023-06-30", "2023-07-31"]
    with pytest.raises(DataValidationError, match=r"column 'date'.*frequency 'MS' matches no series.*appears to be 'ME'"):
        run_input(str(tmp_path / "in.csv"), freq="MS", **SALES)


def test_hive_folders_partitioned_by_id_and_date_keep_their_text(tmp_path):
    data = daily_sales(n=2, length=30)
    root = tmp_path / "lake"
    for (sid, day), g in data.groupby(["store", data["date"].dt.strftime("%Y-%m-%d")]):
        folder = root / f"store={sid}" / f"date={day}"
        folder.mkdir(parents=True)
        g[["sales"]].to_parquet(folder / "part.parquet", index=False)
    result = run_input(str(root), **SALES)
    assert result.freq == "D"
    assert_reads_back(result, data)  # ids '000', '001': text from the folder names, not int32 0 and 1


def test_numeric_looking_ids_keep_their_text_in_csv_and_hive(tmp_path):
    data = daily_sales(n=2, length=30).assign(store=lambda f: f["store"].map({"000": "007", "001": "0042"}))
    data.to_csv(tmp_path / "in.csv", index=False)
    for sid, g in data.groupby("store"):
        (tmp_path / "hive" / f"store={sid}").mkdir(parents=True)
        g.drop(columns="store").to_parquet(tmp_path / "hive" / f"store={sid}" / "p.parquet", index=False)
    for url in (tmp_path / "in.csv", tmp_path / "hive"):
        assert sorted(run_input(str(url), **SALES).frame["series_id"].unique()) == ["0042", "007"]


# --- 2. zones: outputs every reader resolves ----------------------------------------------------------
def test_fixed_offset_zone_is_written_as_the_wall_clock_not_as_an_unnamed_zone(tmp_path):
    data = daily_sales(n=2, length=30)
    aware = data.assign(date=data["date"].dt.tz_localize("+05:30"))
    aware.to_parquet(tmp_path / "in.parquet", index=False)
    text = data.assign(date=data["date"].dt.strftime("%Y-%m-%dT%H:%M:%S+05:30"))
    text.to_csv(tmp_path / "in.csv", index=False)
    for url in (tmp_path / "in.parquet", tmp_path / "in.csv"):
        result = run_input(str(url), **SALES)
        assert getattr(result.frame["ds"].dt, "tz", None) is None  # no 'UTC+05:30' for outputs to carry
        assert_reads_back(result, data)  # midnight local stays midnight
    # a named zone stays named, in a form pandas reads back
    named = data.assign(date=data["date"].dt.tz_localize("Asia/Kolkata"))
    named.to_parquet(tmp_path / "named.parquet", index=False)
    result = run_input(str(tmp_path / "named.parquet"), **SALES)
    assert str(result.frame["ds"].dt.tz) == "Asia/Kolkata"
    table = pa.Table.from_pandas(result.frame[["ds"]])
    pq.write_table(table, tmp_path / "out.parquet")
    assert str(pd.read_parquet(tmp_path / "out.parquet")["ds"].dt.tz) == "Asia/Kolkata"


# --- 3. static covariates: declared types ----------------------------------------------------------
def test_csv_postcodes_stay_text_across_files_and_a_declared_numeric_is_a_number(tmp_path):
    data = daily_sales(n=2, length=30)
    (tmp_path / "parts").mkdir()
    for (sid, g), code in zip(data.groupby("store"), ["01067", "D-10115"]):
        g.assign(postcode=code, size=" 1200 " if sid == "000" else "800").to_csv(
            tmp_path / "parts" / f"{sid}.csv", index=False)
    result = run_input(str(tmp_path / "parts"), static_covariates=["postcode", "size"],
                       static_types={"size": "numeric"}, **SALES)
    assert result.static["postcode"].tolist() == ["01067", "D-10115"]
    assert result.static["size"].tolist() == [1200.0, 800.0]
    # in one file alone, the codes are still categories, never a magnitude
    one = run_input(str(tmp_path / "parts" / "000.csv"), static_covariates=["postcode"], **SALES)
    assert one.static["postcode"].tolist() == ["01067"]


def test_a_parquet_integer_declared_categorical_is_its_text(tmp_path):
    data = daily_sales(n=2, length=30).assign(region=lambda f: np.where(f["store"] == "000", 10, 20))
    data.to_parquet(tmp_path / "in.parquet", index=False)
    stored = run_input(str(tmp_path / "in.parquet"), static_covariates=["region"], **SALES)
    assert stored.static["region"].tolist() == [10, 20]  # undeclared: as stored (a number)
    declared = run_input(str(tmp_path / "in.parquet"), static_covariates=["region"],
                         static_types={"region": "categorical"}, **SALES)
    assert declared.static["region"].tolist() == ["10", "20"]


# --- 4. placeholders and non-numbers in the target ----------------------------------------------------
def _with_cell(tmp_path, value: str, name: str = "in.csv") -> str:
    data = daily_sales(n=2, length=30)
    text = data.assign(date=data["date"].dt.strftime("%Y-%m-%d"), sales=data["sales"].map(str))
    text.loc[40, "sales"] = value  # series '001', its 11th row
    text.to_csv(tmp_path / name, index=False)
    return str(tmp_path / name)


@pytest.mark.parametrize("placeholder", ["-", "NA", "#N/A", "", "n/a", "null"])
def test_a_missing_value_placeholder_is_missing_like_an_empty_cell(tmp_path, placeholder):
    result = run_input(_with_cell(tmp_path, placeholder), gap_policy="skip", **SALES)
    assert result.frame["series_id"].unique().tolist() == ["000"]
    (skipped,) = result.skipped
    assert (skipped.series_id, skipped.field) == ("001", "sales")
    assert "row 40" in skipped.reason


@pytest.mark.parametrize("value", ["1,234.50", "#VALUE!", "12 kg"])
def test_a_non_number_is_refused_naming_file_column_series_and_row(tmp_path, value):
    url = _with_cell(tmp_path, value)
    with pytest.raises(DataValidationError) as exc:
        run_input(url, **SALES)
    assert str(exc.value).startswith(f"file {url}, column 'sales', series '001', row 40: not a number: {value!r}")
    assert "missing_values" in str(exc.value) and "thousands" in str(exc.value)


def test_thousands_and_decimal_comma_only_when_declared(tmp_path):
    url = _with_cell(tmp_path, "1,234.50")
    result = run_input(url, thousands=",", **SALES)
    assert result.frame["y"].iloc[40] == 1234.5
    data = daily_sales(n=2, length=30)
    euro = data.assign(date=data["date"].dt.strftime("%d.%m.%Y"),
                       sales=(data["sales"] * 1000).map(lambda v: f"{v:,.2f}".replace(",", "X").replace(".", ",")
                                                        .replace("X", ".")))
    euro.to_csv(tmp_path / "euro.csv", sep=";", index=False)
    result = run_input(str(tmp_path / "euro.csv"), delimiter=";", decimal=",", thousands=".", **SALES)
    assert_reads_back(result, data.assign(sales=(data["sales"] * 1000).round(2)))
    with pytest.raises(DataValidationError, match=r"column 'sales', series '000', row 0: not a number"):
        run_input(str(tmp_path / "euro.csv"), delimiter=";", **SALES)  # decimal commas not declared


# --- 5. filters on the time column ------------------------------------------------------------------
def test_filters_with_an_iso_string_on_a_timestamp_column_are_converted(tmp_path):
    data = daily_sales(n=2, length=60)
    data.to_parquet(tmp_path / "in.parquet", index=False)
    result = run_input(str(tmp_path / "in.parquet"), filters=[["date", ">=", "2023-01-12"]], **SALES)
    assert result.frame["ds"].min() == pd.Timestamp("2023-01-12")
    data.assign(date=data["date"].dt.tz_localize("Europe/Berlin")).to_parquet(tmp_path / "tz.parquet", index=False)
    result = run_input(str(tmp_path / "tz.parquet"), filters=[["date", "<", "2023-02-01"], ["store", "in", ["001"]]],
                       **SALES)
    assert result.frame["ds"].max().tz_localize(None) == pd.Timestamp("2023-01-31")
    assert result.frame["series_id"].unique().tolist() == ["001"]


def test_filters_that_cannot_be_compared_are_refused_naming_filters(tmp_path):
    data = daily_sales(n=2, length=60)
    data.to_parquet(tmp_path / "in.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"setting 'filters': 'next tuesday'.*column 'date'"):
        run_input(str(tmp_path / "in.parquet"), filters=[["date", ">=", "next tuesday"]], **SALES)
    data.assign(date=data["date"].dt.strftime("%d.%m.%Y")).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(DataValidationError, match=r"setting 'filters'.*stores as text"):
        run_input(str(tmp_path / "in.csv"), filters=[["date", ">=", "2023-01-12"]], **SALES)


# --- 6. the user's column names in errors and the quarantine -----------------------------------------
def test_errors_and_quarantine_fields_use_the_users_column_names(tmp_path):
    data = daily_sales(n=2, length=30).rename(columns={"date": "Order Date", "sales": "Net Sales"})
    text = data.assign(**{"Order Date": data["Order Date"].dt.strftime("%Y-%m-%d")})
    text.loc[35, "Order Date"] = text.loc[34, "Order Date"]  # a duplicate day in series '001'
    text.to_csv(tmp_path / "dup.csv", index=False)
    names = {"id_column": "store", "time_column": "Order Date", "target_column": "Net Sales"}
    result = run_input(str(tmp_path / "dup.csv"), **names)
    assert [(s.series_id, s.field) for s in result.skipped] == [("001", "Order Date")]
    text.loc[3, "Order Date"] = "not a date"
    text.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=r"column 'Order Date', series '000', row 3: not a timestamp") as exc:
        run_input(str(tmp_path / "bad.csv"), **names)
    assert exc.value.column == "Order Date"


# --- 7. declared forms: time_format, epochs, ambiguous dates, CSV dialects ----------------------------
@pytest.mark.parametrize("form", ["%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y", "%Y/%m/%d", "%Y%m%d", "%d-%m-%Y %H:%M"])
def test_other_date_orders_read_when_declared_or_when_only_one_reading_fits(tmp_path, form):
    data = daily_sales(n=2, length=40)  # days 13..31 occur: only one order reads every value
    data.assign(date=data["date"].dt.strftime(form)).to_csv(tmp_path / "in.csv", index=False)
    assert_reads_back(run_input(str(tmp_path / "in.csv"), **SALES), data)
    assert_reads_back(run_input(str(tmp_path / "in.csv"), time_format=form, **SALES), data)


def test_an_ambiguous_date_order_is_refused_naming_column_series_row_and_time_format(tmp_path):
    data = daily_sales(n=2, length=30, start="2021-01-01", freq="MS")  # every day is 01: both orders read
    data.assign(date=data["date"].dt.strftime("%m/%d/%Y")).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(DataValidationError) as exc:
        run_input(str(tmp_path / "in.csv"), **SALES)
    message = str(exc.value)
    assert message.startswith(f"file {tmp_path / 'in.csv'}, column 'date', series '000', row 1: ambiguous date "
                              "'02/01/2021'")
    assert "time_format" in message
    assert_reads_back(run_input(str(tmp_path / "in.csv"), time_format="%m/%d/%Y", **SALES), data)


@pytest.mark.parametrize("unit,scale", [("epoch_s", 10**9), ("epoch_ms", 10**6)])
def test_epoch_integers_when_declared(tmp_path, unit, scale):
    data = daily_sales(n=2, length=30)
    epoch = data.assign(date=data["date"].astype("datetime64[ns]").astype("int64") // scale)
    epoch.to_parquet(tmp_path / "in.parquet", index=False)
    epoch.to_csv(tmp_path / "in.csv", index=False)
    for url in (tmp_path / "in.parquet", tmp_path / "in.csv"):
        assert_reads_back(run_input(str(url), time_format=unit, **SALES), data)
    with pytest.raises(DataValidationError, match=r"column 'date': must be a timestamp, got int64.*epoch_s or epoch_ms"):
        run_input(str(tmp_path / "in.parquet"), **SALES)


def test_bom_quoting_and_compressed_csv(tmp_path):
    data = daily_sales(n=2, length=30)
    text = data.assign(date=data["date"].dt.strftime("%Y-%m-%d"))
    body = text.to_csv(index=False, quoting=1)  # every field quoted
    (tmp_path / "bom.csv").write_bytes("\ufeff".encode() + body.encode())
    with gzip.open(tmp_path / "in.csv.gz", "wt") as fh:
        fh.write(body)
    for url in (tmp_path / "bom.csv", tmp_path / "in.csv.gz"):
        check_input(str(url), required=["store", "date", "sales"])
        assert_reads_back(run_input(str(url), **SALES), data)


def test_a_semicolon_csv_passes_the_pre_check_with_its_delimiter(tmp_path):
    data = daily_sales(n=1, length=10)
    data.to_csv(tmp_path / "in.csv", sep=";", index=False)
    check_input(str(tmp_path / "in.csv"), required=["store", "date", "sales"], delimiter=";")
    with pytest.raises(DataValidationError, match="column 'store': missing required column"):
        check_input(str(tmp_path / "in.csv"), required=["store", "date", "sales"])


# --- writers: pyarrow, polars, DuckDB ---------------------------------------------------------------
def test_files_written_by_polars_and_duckdb_read_right(tmp_path):
    import duckdb
    import polars as pl

    data = daily_sales(n=2, length=30)
    pl.from_pandas(data).write_parquet(tmp_path / "polars.parquet")
    pl.from_pandas(data.assign(date=data["date"].dt.date)).write_csv(tmp_path / "polars.csv")
    con = duckdb.connect()
    con.register("data", data)
    con.execute(f"COPY (SELECT store, CAST(date AS DATE) AS date, CAST(sales AS DECIMAL(10, 2)) AS sales FROM data) "
                f"TO '{tmp_path / 'duck.parquet'}' (FORMAT PARQUET)")
    con.execute(f"COPY data TO '{tmp_path / 'duck.csv'}' (HEADER, DELIMITER ',')")
    for name in ("polars.parquet", "polars.csv", "duck.parquet", "duck.csv"):
        assert_reads_back(run_input(str(tmp_path / name), **SALES), data)
    assert os.path.getsize(tmp_path / "duck.parquet") > 0


def test_compressed_csv_of_every_codec_and_text_that_is_not_utf8(tmp_path):
    import bz2

    data = daily_sales(n=1, length=30)
    body = data.assign(date=data["date"].dt.strftime("%Y-%m-%d")).to_csv(index=False).encode()
    (tmp_path / "a.csv.bz2").write_bytes(bz2.compress(body))
    for codec, suffix in (("zstd", "zstd"), ("lz4", "lz4")):
        with pa.CompressedOutputStream(str(tmp_path / f"a.csv.{suffix}"), codec) as fh:
            fh.write(body)
    for name in ("a.csv.bz2", "a.csv.zstd", "a.csv.lz4"):
        assert_reads_back(run_input(str(tmp_path / name), **SALES), data)
    (tmp_path / "a.csv.zst").write_bytes((tmp_path / "a.csv.zstd").read_bytes())
    with pytest.raises(DataValidationError, match=r"a\.csv\.zst: .*rename"):
        run_input(str(tmp_path / "a.csv.zst"), **SALES)
    (tmp_path / "latin.csv").write_bytes(body.replace(b"store", "magasin_é".encode("latin-1")))
    with pytest.raises(DataValidationError, match=r"latin\.csv: not UTF-8 text"):
        run_input(str(tmp_path / "latin.csv"), **SALES)


def test_a_sharded_read_takes_the_same_declared_settings(tmp_path):
    """Split into shards (as a run over more than shard_size series reads), a `;` CSV with decimal commas,
    day-first dates, postcodes and numeric-looking ids validates to the same frame as read whole."""
    from lstm_core.shard_plan import plan_shards
    from lstm_core.shard_split import read_shard, split_shards

    data = daily_sales(n=4, length=30).assign(store=lambda f: "0" + f["store"])
    data["postcode"] = data["store"].map({"0000": "01067", "0001": "D-10115", "0002": "80331", "0003": "00100"})
    text = data.assign(date=data["date"].dt.strftime("%d.%m.%Y"), sales=data["sales"].map(lambda v: f"{v}"
                                                                                            .replace(".", ",")))
    text.to_csv(tmp_path / "in.csv", sep=";", index=False)
    url = str(tmp_path / "in.csv")
    config = validate_config({"input_url": url, **settings(static_covariates=["postcode"], delimiter=";",
                                                            decimal=",", shard_size=2, **SALES)})
    plan = plan_shards(url, columns=config.read_columns(), shard_size=2, shard_rows=10**9,
                       scratch=str(tmp_path / "scratch"), infer_freq=True, time_format=config.time_format,
                       **config.input_options())
    assert plan.sharded and plan.freq == "D"
    split = split_shards(url, plan, columns=config.read_columns(), **config.input_options())
    parts = [validate_for(read_shard(s.url, names=config.column_names()), config, source=url) for s in split.shards]
    whole = run_input(url, static_covariates=["postcode"], delimiter=";", decimal=",", **SALES)
    sharded = pd.concat([p.frame for p in parts]).sort_values(["series_id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(sharded, whole.frame)
    statics = pd.concat([p.static for p in parts]).sort_index()
    assert statics["postcode"].tolist() == ["01067", "D-10115", "80331", "00100"]
    assert_reads_back(whole, data.drop(columns="postcode"))


@pytest.mark.parametrize("form,freq", [
    ("%Y-%m-%d %H:%M:%S UTC", "D"),  # a zone word after the time
    ("%Y-%m-%dT%H:%M:%S.000Z", "D"),
    ("%G-W%V", "W-MON"),  # ISO weeks: their Monday
    ("%Y", "YS-JAN"),  # years: their first day
    ("%Y-%m-%d 00:00:00.000", "D"),
])
def test_more_text_forms_read_without_declaring(tmp_path, form, freq):
    data = daily_sales(n=2, length=30, start="1990-01-01", freq=freq)
    data.assign(date=data["date"].dt.strftime(form)).to_csv(tmp_path / "in.csv", index=False)
    result = run_input(str(tmp_path / "in.csv"), **SALES)
    assert pd.tseries.frequencies.to_offset(result.freq) == pd.tseries.frequencies.to_offset(freq)
    assert_reads_back(result, data)
