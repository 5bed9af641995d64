"""validate(): the data contract, dataset-level errors, and series sent to `skipped` with a reason."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core.errors import DataValidationError
from lstm_core.validation import min_length, validate
from tests.conftest import make_frame

W, H = 24, 12  # need W + H + 1 = 37 points per series


def check(df: pd.DataFrame, freq: str = "h", **kw):
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


def test_string_y_is_refused(base):
    with pytest.raises(DataValidationError, match="column 'y': must be numeric") as exc:
        check(base.assign(y=base["y"].astype(str)))
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


def test_too_short_series_is_skipped_at_exactly_the_limit():
    need = min_length(W, H)
    assert need == W + H + 1
    ok = make_frame(n_series=1, length=need)
    short = make_frame(n_series=1, length=need - 1).assign(series_id="short")
    df = pd.concat([ok, short], ignore_index=True).astype({"series_id": "string"})
    r = check(df)
    assert kept(r) == ["s00"]
    field, reason = skipped(r)["short"]
    assert field == "y" and f"series too short: {need - 1} points, needs {need}" in reason


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


def test_mixed_time_zones_in_one_series_are_skipped(base):
    utc = base["ds"].dt.tz_localize("UTC")
    df = base.assign(ds=utc.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    s01 = df.index[df["series_id"] == "s01"]
    odd = s01[s01 % 2 == 1]
    df.loc[odd, "ds"] = utc[odd].dt.tz_convert("Asia/Tokyo").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    r = check(df)
    assert kept(r) == ["s00", "s02"]
    assert skipped(r)["s01"] == ("ds", "timestamps in mixed time zones")
    assert str(r.frame["ds"].dt.tz) == "UTC"


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
    frames = [make_frame(n_series=1, length=40, seed=i).assign(series_id=sid) for i, sid in enumerate(ids)]
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


def test_numeric_extra_columns_are_covariates_and_future_rows_are_split(base):
    df = base.assign(temp=np.arange(len(base), dtype=float), note="text")
    future = pd.DataFrame({"series_id": "s00", "ds": pd.date_range("2026-01-03 12:00", periods=H, freq="h"),
                           "y": np.nan, "temp": 1.0, "note": "x"})
    r = check(pd.concat([df, future], ignore_index=True))
    assert r.covariates == ["temp"] and r.skipped == []
    assert len(r.frame) == 180 and list(r.frame.columns) == ["series_id", "ds", "y", "temp"]
    assert len(r.future) == H and (r.future["series_id"] == "s00").all()


def test_non_finite_covariate_skips_that_series(base):
    df = base.assign(temp=1.0)
    df.loc[125, "temp"] = np.inf
    r = check(df)
    assert kept(r) == ["s00", "s01"] and skipped(r)["s02"][0] == "temp"
