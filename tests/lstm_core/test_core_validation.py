"""validate(): the data contract, dataset-level errors, and series sent to `skipped` with a reason."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core.covariates import CovariateSpec
from lstm_core.errors import DataValidationError
from lstm_core.length_rules import min_length
from lstm_core.validation import validate
from tests.conftest import fast_config, make_frame

W, H = 24, 12  # need W + H + validation steps (H) + 1 = 49 points per series


def check(df: pd.DataFrame, freq: str | None = "h", **kw):
    return validate(df, freq, window=W, horizon=H, **kw)


def skipped(result) -> dict[str, tuple[str, str]]:
    return {s.series_id: (s.field, s.reason) for s in result.skipped}


def kept(result) -> list[str]:
    return sorted(result.frame["series_id"].unique())


@pytest.fixture
def base() -> pd.DataFrame:
    return make_frame(n_series=3, length=60)  # s00 rows 0-59, s01 rows 60-119, s02 rows 120-179


def test_clean_frame_passes_unchanged(base):
    r = check(base)
    assert r.skipped == [] and r.filled_points == 0 and r.covariates == []
    pd.testing.assert_frame_equal(r.frame, base, check_dtype=False)
    assert r.frame["series_id"].dtype == "string"
    assert str(r.frame["ds"].dtype) == "datetime64[ns]"


# --- dataset-level errors -------------------------------------------------
@pytest.mark.parametrize("column", ["series_id", "ds", "y"])
def test_missing_column_is_named(base, column):
    with pytest.raises(DataValidationError, match=f"column '{column}'.*missing required column") as exc:
        check(base.drop(columns=column), source="s3://b/in.parquet")
    assert exc.value.column == column
    assert "file s3://b/in.parquet" in str(exc.value)


def test_empty_frame_is_refused(base):
    with pytest.raises(DataValidationError, match="no rows"):
        check(base.iloc[:0])


def test_integer_series_id_is_refused(base):
    df = base.assign(series_id=np.arange(len(base)))
    with pytest.raises(DataValidationError, match="column 'series_id': must be string, got int64"):
        check(df)


def test_mixed_object_series_id_names_the_row(base):
    df = base.assign(series_id=base["series_id"].astype(object))
    df.loc[42, "series_id"] = 7
    with pytest.raises(DataValidationError, match="column 'series_id', row 42: must be string, got int 7"):
        check(df)


def test_y_written_as_text_is_read_as_numbers_and_other_text_is_refused_naming_the_row(base):
    # issue 25: text numbers (CSV, a text column in Parquet) read like numbers; other text names its row
    as_text = check(base.assign(y=base["y"].astype(str)))
    assert np.allclose(as_text.frame["y"], check(base).frame["y"])
    df = base.assign(y=base["y"].astype(str))
    df.loc[42, "y"] = "#VALUE!"
    with pytest.raises(DataValidationError, match=r"column 'y', series '.*', row 42: not a number: '#VALUE!'") as exc:
        check(df)
    assert exc.value.column == "y"


def test_integer_ds_is_refused(base):
    with pytest.raises(DataValidationError, match="column 'ds': must be a timestamp, got int64"):
        check(base.assign(ds=np.arange(len(base))))


def test_iso_strings_for_ds_are_parsed(base):
    r = check(base.assign(ds=base["ds"].dt.strftime("%Y-%m-%dT%H:%M:%S")))
    assert r.skipped == []
    pd.testing.assert_series_equal(r.frame["ds"], base["ds"], check_dtype=False)


def test_unparseable_ds_names_series_and_row(base):
    df = base.assign(ds=base["ds"].astype(str))
    df.loc[65, "ds"] = "not a date"
    with pytest.raises(DataValidationError) as exc:
        check(df)
    e = exc.value
    assert (e.column, e.series_id, e.row) == ("ds", "s01", 65)
    assert "not a timestamp: 'not a date'" in str(e) and "series 's01'" in str(e) and "row 65" in str(e)


def test_null_timestamp_names_series_and_row(base):
    df = base.copy()
    df.loc[130, "ds"] = pd.NaT
    with pytest.raises(DataValidationError, match="column 'ds', series 's02', row 130: null timestamp"):
        check(df)


def test_null_series_id_names_the_row(base):
    df = base.assign(series_id=base["series_id"].astype(object))
    df.loc[7, "series_id"] = None
    with pytest.raises(DataValidationError, match="column 'series_id', row 7: null series_id") as exc:
        check(df)
    assert exc.value.row == 7


def test_frequency_matching_no_series_is_a_dataset_error(base):
    # hourly data declared daily: every series has off-grid points -> the setting is wrong
    with pytest.raises(DataValidationError, match="frequency 'D' matches no series") as exc:
        check(base, freq="D")
    assert exc.value.column == "ds"
    weekly_declared_on_daily = make_frame(n_series=2, length=60, freq="D")
    with pytest.raises(DataValidationError, match="frequency 'W-MON' matches no series"):
        check(weekly_declared_on_daily, freq="W-MON")


def test_unknown_gap_policy_is_refused(base):
    with pytest.raises(ValueError, match="gap_policy"):
        check(base, gap_policy="drop")


# --- series-level problems: skipped with a reason, the rest go on ----------
def test_duplicate_timestamp_skips_that_series(base):
    df = pd.concat([base, base.iloc[[63]]], ignore_index=True)  # s01 03:00 twice; the copy is row 180
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "ds" and "duplicate timestamp 2026-01-01 03:00:00" in reason and "row 180" in reason


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "+inf"), (-np.inf, "-inf")])
def test_non_finite_y_skips_that_series(base, value, kind):
    df = base.copy()
    df.loc[65, "y"] = value
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "y" and f"non-finite value {kind}" in reason and "row 65" in reason
    assert np.isfinite(r.frame["y"]).all()


def test_all_missing_series_is_skipped(base):
    df = base.copy()
    df.loc[df["series_id"] == "s02", "y"] = np.nan
    r = check(df)
    assert kept(r) == ["s00", "s01"]
    assert skipped(r)["s02"] == ("y", "all values missing")


def test_constant_series_is_skipped(base):
    df = base.copy()
    df.loc[df["series_id"] == "s00", "y"] = 5.0
    r = check(df)
    assert kept(r) == ["s01", "s02"]
    assert skipped(r)["s00"] == ("y", "series is constant")


def test_short_series_are_never_skipped_for_their_length():
    """Issue 22: shortness is no data fault. Series of 1, 2 and 3 points are kept whatever the window and
    horizon; a single point is no constant series; a series with no valid value at all is still skipped."""
    cfg = fast_config(window=W, horizon=H)
    assert min_length(cfg) == 1
    long = make_frame(n_series=1, length=100)
    tiny = [make_frame(n_series=1, length=n, seed=n).assign(series_id=f"n{n}") for n in (1, 2, 3)]
    empty = make_frame(n_series=1, length=4).assign(series_id="empty", y=np.nan)
    df = pd.concat([long, *tiny, empty], ignore_index=True).astype({"series_id": "string"})
    r = check(df, chunk=cfg.chunk_length, patch=cfg.patch_length)
    assert kept(r) == ["n1", "n2", "n3", "s00"]
    assert list(skipped(r)) == ["empty"] and not any("too short" in s.reason for s in r.skipped)


def test_values_too_large_to_scale_are_skipped(base):
    df = base.copy()
    df.loc[df["series_id"] == "s01", "y"] *= 1e305  # finite, but squares overflow
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    assert skipped(r)["s01"] == ("y", "values too large to scale (overflow)")


def test_off_frequency_timestamp_skips_that_series(base):
    df = base.copy()
    df.loc[70, "ds"] += pd.Timedelta("30min")
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "ds" and "off frequency 'h'" in reason and "row 70" in reason


def test_offsets_changing_within_a_series_are_instants_converted_to_utc(base):
    """The same instants written with different UTC offsets (as at a daylight-saving switch) are valid."""
    utc = base["ds"].dt.tz_localize("UTC")
    df = base.assign(ds=utc.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    s01 = df.index[df["series_id"] == "s01"]
    odd = s01[s01 % 2 == 1]
    df.loc[odd, "ds"] = utc[odd].dt.tz_convert("Asia/Tokyo").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    r = check(df)
    assert r.skipped == []
    assert str(r.frame["ds"].dt.tz) == "UTC" and (r.frame["ds"] == utc).all()


def test_a_series_mixing_values_with_and_without_offset_is_skipped(base):
    df = base.assign(ds=base["ds"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    df.loc[70, "ds"] = base.loc[70, "ds"].strftime("%Y-%m-%dT%H:%M:%S")  # s01: one value without offset
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "ds" and "mix values with and without a UTC offset" in reason and "row 70" in reason


def test_one_offset_per_series_is_converted_to_utc(base):
    utc = base["ds"].dt.tz_localize("UTC")
    df = base.assign(ds=utc.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    s01 = df["series_id"] == "s01"
    df.loc[s01, "ds"] = utc[s01].dt.tz_convert("Asia/Tokyo").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    r = check(df)
    assert r.skipped == []
    assert (r.frame["ds"] == utc).all()


def test_errors_raise_turns_series_problems_into_errors(base):
    df = base.copy()
    df.loc[65, "y"] = np.nan
    with pytest.raises(DataValidationError, match="column 'y', series 's01': non-finite value NaN") as exc:
        check(df, errors="raise")
    assert exc.value.series_id == "s01"
    const = base.copy()
    const.loc[const["series_id"] == "s00", "y"] = 1.0
    with pytest.raises(DataValidationError, match="series 's00': series is constant"):
        check(const, errors="raise")


# --- gaps -------------------------------------------------------------------
def _with_gap(base: pd.DataFrame, rows: range) -> pd.DataFrame:
    return base.drop(index=list(rows)).reset_index(drop=True)


def test_fill_interpolates_short_gaps_linearly_on_a_regular_grid(base):
    df = _with_gap(base, range(70, 73))  # s01 misses local steps 10, 11, 12
    r = check(df, gap_policy="fill", max_gap=3)
    assert r.skipped == [] and r.filled_points == 3
    s01 = r.frame[r.frame["series_id"] == "s01"].reset_index(drop=True)
    assert len(s01) == 60
    assert (s01["ds"].diff().dropna() == pd.Timedelta("1h")).all()
    pd.testing.assert_series_equal(s01["ds"], base.loc[60:119, "ds"].reset_index(drop=True), check_dtype=False)
    y9, y13 = base.loc[69, "y"], base.loc[73, "y"]
    expected = y9 + (y13 - y9) * np.array([1, 2, 3]) / 4
    np.testing.assert_allclose(s01.loc[10:12, "y"], expected, rtol=1e-12)
    # known values untouched; other series untouched
    np.testing.assert_array_equal(s01.loc[13:, "y"], base.loc[73:119, "y"])
    np.testing.assert_array_equal(r.frame.loc[r.frame["series_id"] == "s00", "y"], base.loc[0:59, "y"])


def test_fill_skips_gaps_longer_than_max_gap(base):
    df = _with_gap(base, range(70, 75))  # 5 missing steps
    r = check(df, gap_policy="fill", max_gap=3)
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "ds" and "gap of 5 missing steps" in reason and "max_gap 3" in reason
    assert r.filled_points == 0  # nothing filled in the series kept


def test_filled_points_count_only_series_kept(base):
    df = _with_gap(base, [*range(5, 7), *range(70, 75)])  # s00: 2 missing (filled); s01: 5 (skipped)
    r = check(df, gap_policy="fill", max_gap=3)
    assert kept(r) == ["s00", "s02"] and r.filled_points == 2


def test_skip_policy_skips_any_gap(base):
    r = check(_with_gap(base, [70]), gap_policy="skip")
    assert kept(r) == ["s00", "s02"]
    assert "gap of 1 missing steps" in skipped(r)["s01"][1]
    assert r.filled_points == 0


def test_error_policy_raises_naming_series_and_row(base):
    with pytest.raises(DataValidationError, match="column 'ds', series 's01', row 70: gap of 3 missing steps"):
        check(_with_gap(base, range(70, 73)), gap_policy="error")


# --- identifiers and frequencies -------------------------------------------
def test_hostile_series_ids_pass_through_unchanged():
    ids = ["../../etc", "a/b", "", "ü" * 300 + "/\u202e"]
    frames = [make_frame(n_series=1, length=50, seed=i).assign(series_id=sid) for i, sid in enumerate(ids)]
    df = pd.concat(frames, ignore_index=True).astype({"series_id": "string"})
    r = check(df)
    assert r.skipped == []
    assert sorted(r.frame["series_id"].unique()) == sorted(ids)
    for sid, f in zip(ids, frames):
        np.testing.assert_array_equal(r.frame.loc[r.frame["series_id"] == sid, "y"], f["y"])


def test_categorical_series_id_is_accepted(base):
    r = check(base.assign(series_id=base["series_id"].astype("category")))
    assert kept(r) == ["s00", "s01", "s02"] and r.frame["series_id"].dtype == "string"


@pytest.mark.parametrize("freq, start", [("h", "2026-01-01"), ("D", "2026-01-01"), ("W-MON", "2024-01-01")])
def test_frequencies_work(freq, start):
    df = make_frame(n_series=2, length=50, freq=freq, start=start)
    r = check(df, freq=freq)
    assert r.skipped == [] and len(r.frame) == 100


def test_weekly_gap_is_filled_on_mondays():
    df = make_frame(n_series=2, length=50, freq="W-MON", start="2024-01-01")
    r = check(df.drop(index=[10, 11]).reset_index(drop=True), freq="W-MON")
    s00 = r.frame[r.frame["series_id"] == "s00"]
    assert r.filled_points == 2 and len(s00) == 50
    assert (s00["ds"].dt.dayofweek == 0).all()
    assert (s00["ds"].diff().dropna() == pd.Timedelta("7D")).all()
    y9, y12 = df["y"].iloc[9], df["y"].iloc[12]
    np.testing.assert_allclose(s00["y"].iloc[10:12], y9 + (y12 - y9) * np.array([1, 2]) / 3)


def test_only_declared_covariates_are_used_and_future_rows_are_split(base):
    df = base.assign(temp=np.arange(len(base), dtype=float), note="text", extra=1.0)
    future = pd.DataFrame({"series_id": "s00", "ds": pd.date_range("2026-01-03 12:00", periods=H, freq="h"),
                           "y": np.nan, "temp": 1.0, "note": "x", "extra": 2.0})
    r = check(pd.concat([df, future], ignore_index=True), covariates=CovariateSpec(historic=("temp",)))
    assert r.covariates == ["temp"] and r.skipped == []
    assert len(r.frame) == 180 and list(r.frame.columns) == ["series_id", "ds", "y", "temp"]
    assert r.future is None  # no future covariates declared: the future rows are not needed
    undeclared = check(pd.concat([df, future], ignore_index=True))
    assert undeclared.covariates == [] and list(undeclared.frame.columns) == ["series_id", "ds", "y"]


def test_non_finite_covariate_skips_that_series(base):
    df = base.assign(temp=1.0)
    df.loc[125, "temp"] = np.inf
    r = check(df, covariates=CovariateSpec(historic=("temp",)))
    assert kept(r) == ["s00", "s01"] and skipped(r)["s02"][0] == "temp"


def test_declared_covariate_missing_from_the_input_is_named(base):
    with pytest.raises(DataValidationError, match="column 'price': declared covariate column missing"):
        check(base, covariates=CovariateSpec(future=("price",)))


# --- future and static covariates -------------------------------------------
def _with_future(base: pd.DataFrame, steps: dict[str, int]) -> pd.DataFrame:
    """price on every row, plus `steps[sid]` future rows (y empty) after each series' end."""
    df = base.assign(price=10.0)
    rows = []
    for sid, n in steps.items():
        last = base.loc[base["series_id"] == sid, "ds"].max()
        rows.append(pd.DataFrame({"series_id": sid, "ds": pd.date_range(last, periods=n + 1, freq="h")[1:],
                                  "y": np.nan, "price": 20.0 + np.arange(n)}))
    return pd.concat([df, *rows], ignore_index=True)


def test_future_covariates_need_a_value_for_each_step_of_the_horizon(base):
    df = _with_future(base, {"s00": H, "s01": H - 2, "s02": H + 5})
    r = check(df, covariates=CovariateSpec(future=("price",)))
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "price" and f"no value for step {H - 1} of {H}" in reason and "rows with y empty" not in reason
    assert "y empty" in reason
    # exactly the H steps after each kept series' end, in order
    assert len(r.future) == 2 * H and list(r.future.columns) == ["series_id", "ds", "price"]
    s02 = r.future[r.future["series_id"] == "s02"]
    np.testing.assert_array_equal(s02["price"], 20.0 + np.arange(H))
    assert (s02["ds"].diff().dropna() == pd.Timedelta("1h")).all()
    assert s02["ds"].iloc[0] == base.loc[base["series_id"] == "s02", "ds"].max() + pd.Timedelta("1h")


def test_future_covariate_gap_in_the_future_rows_is_named(base):
    df = _with_future(base, {"s00": H, "s01": H, "s02": H})
    df.loc[(df["series_id"] == "s02") & df["y"].isna() & (df["price"] == 23.0), "price"] = np.nan
    r = check(df, covariates=CovariateSpec(future=("price",)))
    assert kept(r) == ["s00", "s01"] and "no value for step 4 of 12" in skipped(r)["s02"][1]


def test_static_covariates_must_be_constant_per_series(base):
    region = base["series_id"].map({"s00": "eu", "s01": "us", "s02": "eu"})
    df = base.assign(region=region, size=base["series_id"].map({"s00": 1.0, "s01": 2.0, "s02": 3.0}))
    df.loc[130, "region"] = "us"  # s02 changes region
    r = check(df, covariates=CovariateSpec(static=("region", "size")))
    assert kept(r) == ["s00", "s01"]
    field, reason = skipped(r)["s02"]
    assert field == "region" and "changes within the series" in reason and "row 130" in reason
    assert list(r.static.index) == ["s00", "s01"] and list(r.static["region"]) == ["eu", "us"]
    assert list(r.frame.columns) == ["series_id", "ds", "y"]  # statics travel per series, not per row
    missing = base.assign(region=region)
    missing.loc[5, "region"] = None
    r = check(missing, covariates=CovariateSpec(static=("region",)))
    assert skipped(r)["s00"] == ("region", "static covariate 'region' is missing (row 5)")


# --- frequencies: inferred, or checked against the data ------------------------------------
@pytest.mark.parametrize("freq, start", [("h", "2026-01-01"), ("D", "2026-01-01"), ("W-MON", "2024-01-01"),
                                         ("MS", "2020-01-01"), ("15min", "2026-01-01")])
def test_frequency_is_inferred_when_not_given(freq, start):
    df = make_frame(n_series=2, length=60, freq=freq, start=start)
    df = df.drop(index=[10]).reset_index(drop=True)  # a gap does not stop the inference
    r = check(df, freq=None)
    assert r.freq is not None and pd.tseries.frequencies.to_offset(r.freq) == pd.tseries.frequencies.to_offset(freq)
    assert r.skipped == [] and r.filled_points == 1


def test_series_disagreeing_on_the_frequency_are_refused_naming_them():
    df = pd.concat([make_frame(n_series=1, length=60, freq="h"),
                    make_frame(n_series=1, length=60, freq="D").assign(series_id="daily")], ignore_index=True)
    with pytest.raises(DataValidationError, match="series disagree on the frequency") as exc:
        check(df.astype({"series_id": "string"}), freq=None)
    assert "'s00' looks 'h'" in str(exc.value) and "'daily' looks 'D'" in str(exc.value)


def test_daily_data_with_an_hourly_freq_name_the_frequency_the_data_have():
    """Daily timestamps sit on the hourly grid, 24 steps apart: not gaps, another frequency."""
    df = make_frame(n_series=2, length=60, freq="D")
    with pytest.raises(DataValidationError) as exc:
        check(df, freq="h")
    message = str(exc.value)
    assert "frequency 'h' matches no series" in message and "series 's00' appears to be 'D'" in message
    assert "24 steps of 'h' apart" in message and exc.value.column == "ds"


def test_hourly_data_with_a_daily_freq_name_the_frequency_the_data_have(base):
    with pytest.raises(DataValidationError, match="appears to be 'h'.*off the grid"):
        check(base, freq="D")


def test_one_coarser_series_among_others_is_skipped_with_its_frequency(base):
    daily = make_frame(n_series=1, length=60, freq="D").assign(series_id="daily")
    r = check(pd.concat([base, daily], ignore_index=True).astype({"series_id": "string"}), freq="h")
    assert kept(r) == ["s00", "s01", "s02"]
    assert skipped(r)["daily"] == ("ds", "timestamps follow 'D', not frequency 'h' (steps of 24)")


# --- encodings of time and numbers -------------------------------------------
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_timestamps_of_any_unit_read_the_same(base, unit):
    r = check(base.assign(ds=base["ds"].astype(f"datetime64[{unit}]")))
    assert r.skipped == [] and str(r.frame["ds"].dtype) == "datetime64[ns]"
    pd.testing.assert_series_equal(r.frame["ds"], base["ds"].astype("datetime64[ns]"), check_names=False)


def test_sentinel_timestamp_quarantines_only_its_series_naming_field_and_row(base):
    df = base.assign(ds=base["ds"].astype("datetime64[us]"))
    df.loc[75, "ds"] = pd.Timestamp("9999-12-31")
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    field, reason = skipped(r)["s01"]
    assert field == "ds" and "9999-12-31" in reason and "row 75" in reason and "outside the range" in reason


def test_sentinel_in_iso_strings_is_the_same(base):
    df = base.assign(ds=base["ds"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    df.loc[75, "ds"] = "9999-12-31T00:00:00"
    r = check(df)
    assert kept(r) == ["s00", "s02"] and "row 75" in skipped(r)["s01"][1]


def test_dates_read_as_midnight(base):
    daily = make_frame(n_series=2, length=60, freq="D")
    r = check(daily.assign(ds=daily["ds"].dt.date), freq="D")
    assert r.skipped == [] and (r.frame["ds"] == daily["ds"]).all()


def test_zone_aware_hourly_timestamps_are_instants_in_utc(base):
    paris = base["ds"].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")
    r = check(base.assign(ds=paris))
    assert r.skipped == [] and str(r.frame["ds"].dt.tz) == "UTC"
    assert (r.frame["ds"] == base["ds"].dt.tz_localize("UTC")).all()


def test_hourly_iso_strings_across_a_dst_switch_are_valid():
    """Europe/Paris on 2026-03-29: offsets +01:00 then +02:00, one hour apart in UTC throughout."""
    utc = pd.date_range("2026-03-27", periods=120, freq="h", tz="UTC")
    text = pd.Series(utc.tz_convert("Europe/Paris").strftime("%Y-%m-%dT%H:%M:%S%z"))
    text = text.str.replace(r"(\d{2})(\d{2})$", r"\1:\2", regex=True)
    assert text.str.endswith("+01:00").any() and text.str.endswith("+02:00").any()
    y = 10 + np.sin(np.arange(120) / 3)
    r = check(pd.DataFrame({"series_id": "paris", "ds": text, "y": y}), freq=None)
    assert r.skipped == [] and r.freq == "h"
    assert (r.frame["ds"] == pd.Series(utc)).all()


def test_daily_data_in_a_zone_stay_on_local_midnight_across_dst():
    local = pd.date_range("2026-03-01", periods=60, freq="D", tz="Europe/Paris")  # crosses 2026-03-29
    df = pd.DataFrame({"series_id": "paris", "ds": local, "y": 10 + np.sin(np.arange(60))})
    r = check(df, freq=None)
    assert r.skipped == [] and r.freq == "D"
    assert str(r.frame["ds"].dt.tz) == "Europe/Paris" and (r.frame["ds"].dt.hour == 0).all()
    text = pd.Series(local.strftime("%Y-%m-%dT%H:%M:%S%z")).str.replace(r"(\d{2})(\d{2})$", r"\1:\2", regex=True)
    r = check(df.assign(ds=text), freq=None)  # the same as strings with offsets: their wall clock
    assert r.skipped == [] and r.freq == "D" and (r.frame["ds"] == pd.Series(local.tz_localize(None))).all()


@pytest.mark.parametrize("encode", [
    lambda y: y.astype("Float64"),
    lambda y: y.round().astype("Int64"),
    lambda y: y.round(2).map(lambda v: __import__("decimal").Decimal(str(v))),
    lambda y: y.astype("float32"),
])
def test_numbers_of_any_encoding_read_as_float64(base, encode):
    r = check(base.assign(y=encode(base["y"])))
    assert r.skipped == [] and r.frame["y"].dtype == "float64"
    np.testing.assert_allclose(r.frame["y"], base["y"], atol=0.5)


def test_nullable_missing_value_is_a_missing_value(base):
    df = base.assign(y=base["y"].astype("Float64"))
    df.loc[65, "y"] = pd.NA
    r = check(df)
    assert kept(r) == ["s00", "s02"] and "non-finite value NaN" in skipped(r)["s01"][1]
