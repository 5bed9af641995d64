"""Timestamps as other tools write them, read one way.

Pandas, pyarrow, polars, Spark and DuckDB write the time column as timestamps of any unit (s, ms, us,
ns; Spark's INT96 arrives as ns or us), with or without a time zone, as dates, or as text. `parse`
turns all of them into nanosecond timestamps once:

- `instants`: the moments in UTC (naive datetime64[ns]); for naive input, the values as given;
- `wall`: the wall-clock time where the data were written (the zone's, or the string's own offset):
  calendar frequencies (days, weeks, months) are counted on it, so midnight stays midnight across a
  daylight-saving switch;
- `zone`: None (naive input), a zone name every reader resolves ('UTC', 'Europe/Paris'), or 'offsets'
  (strings with UTC offsets, and columns in a fixed-offset zone such as +05:30, which has no name).

Text is read without guessing (`read_text`): ISO-8601 dates, months (`2023-01`) and date-times (with `T`
or a space, with or without `Z` or an offset; an offset is only ever read after a time of day, so the
`-02` of `2023-01-02` stays the day), quarters (`2023Q1`, its first day), ISO weeks (`2023-W01`, its
Monday), years (`2023`), `YYYYMMDD`, and dates in other orders (`DD.MM.YYYY`, `MM/DD/YYYY`,
`YYYY/MM/DD`...) when only one order reads every value of the column. Several orders that read the
values differently are refused, naming the row and the `time_format` setting. `time_format` declares the
form: a strftime pattern (`%d.%m.%Y`), or `epoch_s` / `epoch_ms` for integers counting seconds or
milliseconds since 1970-01-01 UTC.

A value nanoseconds cannot hold (the `9999-12-31` placeholder some systems write for "open ended")
puts only its series aside, naming the field and row; the other series go on.
"""
from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from lstm_core.errors import DataValidationError

# A UTC offset, read only after a time of day: `2023-01-02` ends in a day, not in the offset -02.
OFFSET_RE = r"(?<=[T ]\d\d:\d\d)(?::\d\d(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_OFFSET_ONLY = r"\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
ISO_RE = re.compile(r"^\d{4}-\d{2}(?:-\d{2}(?:[T ]\d{1,2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?)?)?$")
QUARTER_RE = re.compile(r"^(\d{4})-?Q([1-4])$", re.IGNORECASE)
WEEK_RE = re.compile(r"^(\d{4})-?W(\d{2})(?:-?([1-7]))?$")  # ISO weeks: 2023-W01 is Monday 2023-01-02
# Date orders read when exactly one of them reads every value (else: refused, naming time_format).
DATE_ORDERS = ("%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%d.%m.%Y", "%m.%d.%Y", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y",
               "%m-%d-%Y")
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
EPOCH_UNITS: dict[str, Literal["s", "ms"]] = {"epoch_s": "s", "epoch_ms": "ms"}
# What datetime64[ns] holds, to the day (1677-09-21 00:12 .. 2262-04-11 23:47).
NS_MIN, NS_MAX = pd.Timestamp("1677-09-22"), pd.Timestamp("2262-04-11")
Skip = Callable[[str, str, str], None]
RESOLVE = ("set time_format to the pattern the file uses (e.g. %d.%m.%Y, %m/%d/%Y; "
           "epoch_s or epoch_ms for epoch integers)")


@dataclass
class Timestamps:
    """Parsed timestamps of an input: UTC instants, the wall clock when a zone or offsets were given, and the zone."""

    instants: pd.Series  # datetime64[ns], naive: UTC when a zone or offset was given
    wall: pd.Series | None  # datetime64[ns] naive wall clock; None when the input was naive
    zone: str | None  # None, a zone name, or "offsets"

    def for_frequency(self, fixed: bool) -> pd.Series:
        """The timestamps a frequency is counted on, as the run writes them.

        Fixed steps (hours, minutes): instants, in UTC when a zone was given. Calendar steps (days,
        weeks, months): the data's own wall clock, in its zone when it has a name (offsets have
        none: their wall clock is written without a zone, so every reader takes the outputs).
        """
        if self.zone is None:
            return self.instants
        if fixed:
            return self.instants.dt.tz_localize("UTC")
        if self.zone == "offsets":
            assert self.wall is not None, "read_text keeps the wall clock of offsets"
            return self.wall
        return self.instants.dt.tz_localize("UTC").dt.tz_convert(self.zone)


def zone_name(tz: object) -> str:
    """A zone as outputs can name it: its IANA name ('UTC', 'Europe/Paris'), or 'offsets' for a fixed
    offset ('+05:30', 'UTC+05:30'), which readers such as pandas cannot resolve by name."""
    name = str(tz)
    if name in ("UTC", "utc", "Z", "+00:00", "UTC+00:00"):
        return "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "offsets"
    return name


def parse(col: pd.Series, series_id: pd.Series, source: str | None, skip: Skip, *,
          time_format: str | None = None, column: str = "ds") -> Timestamps:
    """Parse a time column of any encoding (`column`: its name in messages; `time_format`: the declared
    form, see the module). Unparseable, ambiguous or null values are dataset errors naming the column,
    series and row; out-of-range values and a series that mixes values with and without an offset are
    skipped per series."""
    col = col.reset_index(drop=True)
    series_id = series_id.reset_index(drop=True)
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(col.cat.categories.dtype)
    if isinstance(col.dtype, pd.ArrowDtype):  # pandas' pyarrow-backed columns (dtype_backend="pyarrow")
        arrow = pa.array(col)
        if pa.types.is_date(arrow.type):  # milliseconds hold every date (9999-12-31 too)
            arrow = arrow.cast(pa.timestamp("ms"))
        col = pd.Series(arrow.to_pandas())
    if time_format in EPOCH_UNITS:
        return _from_epoch(col, series_id, source, EPOCH_UNITS[time_format], column, skip)
    if pd.api.types.is_datetime64_any_dtype(col):
        _check_nulls(col.isna().to_numpy(), series_id, source, column)
        return _from_datetimes(col, series_id, skip, column)
    if time_format is not None and (pd.api.types.is_integer_dtype(col) or pd.api.types.is_float_dtype(col)):
        # integers written as text digits (20230102 with %Y%m%d)
        _check_nulls(col.isna().to_numpy(), series_id, source, column)
        col = pd.Series(col.to_numpy(np.float64).astype(np.int64).astype(str), dtype=object)
    if pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col):
        nonnull = col.dropna()
        if len(nonnull) and nonnull.map(lambda v: hasattr(v, "year") and not isinstance(v, str)).all():
            # datetime.date / datetime.datetime objects (pyarrow dates, object columns)
            _check_nulls(col.isna().to_numpy(), series_id, source, column)
            return _from_datetimes(_objects_to_datetimes(col, series_id, source), series_id, skip, column)
        return _from_strings(col, series_id, source, skip, time_format, column)
    hint = (": integers are read as epoch times only when declared (time_format epoch_s or epoch_ms), or as "
            "digits such as 20230102 with time_format %Y%m%d") if pd.api.types.is_numeric_dtype(col) else ""
    raise DataValidationError(f"must be a timestamp, got {col.dtype}{hint}", source=source, column=column)


def _from_epoch(col: pd.Series, series_id: pd.Series, source: str | None, unit: Literal["s", "ms"], column: str,
                skip: Skip) -> Timestamps:
    """Integers (or their text) counting `unit` since 1970-01-01 UTC: naive UTC timestamps."""
    _check_nulls(col.isna().to_numpy(), series_id, source, column)
    values = pd.to_numeric(col, errors="coerce") if not pd.api.types.is_numeric_dtype(col) else col
    bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
    if bad.any():
        r = int(np.argmax(bad))
        raise DataValidationError(f"not an epoch time in {unit}: {col.iloc[r]!r} (time_format epoch_"
                                  f"{unit})", source=source, column=column, series_id=str(series_id.iloc[r]), row=r)
    raw = values.to_numpy(np.float64)
    span = {"s": 1, "ms": 1_000}[unit]
    lo, hi = NS_MIN.value / 1e9 * span, NS_MAX.value / 1e9 * span
    out = (raw < lo) | (raw > hi)
    parsed = pd.to_datetime(pd.Series(np.where(out, 0, raw).astype(np.int64)), unit=unit)
    _skip_rows(out, pd.Series(raw), series_id, skip, column)
    return Timestamps(parsed.astype("datetime64[ns]"), None, None)


def _check_nulls(nulls: np.ndarray, series_id: pd.Series, source: str | None, column: str = "ds") -> None:
    if nulls.any():
        r = int(np.argmax(nulls))
        raise DataValidationError("null timestamp", source=source, column=column, series_id=str(series_id.iloc[r]),
                                  row=r)


def _objects_to_datetimes(col: pd.Series, series_id: pd.Series, source: str | None) -> pd.Series:
    try:
        return pd.to_datetime(col.astype(object), utc=False)
    except (ValueError, TypeError, OverflowError):
        # mixed zones among datetime objects, or values out of range: go through their ISO text
        return pd.Series([v.isoformat() if v is not None else None for v in col], index=col.index, dtype=object)


def _from_datetimes(col: pd.Series, series_id: pd.Series, skip: Skip, column: str = "ds") -> Timestamps:
    if not pd.api.types.is_datetime64_any_dtype(col):  # ISO text from mixed datetime objects
        return _from_strings(col, series_id, None, skip, None, column)
    tz = getattr(col.dt, "tz", None)
    utc = col.dt.tz_convert("UTC").dt.tz_localize(None) if tz is not None else col
    bad = _out_of_range(utc)
    _skip_rows(bad, utc, series_id, skip, column)
    instants = _to_ns(utc, bad)
    if tz is None:
        return Timestamps(instants, None, None)
    wall = _to_ns(col.dt.tz_localize(None), bad)
    # A fixed offset (+05:30) has no zone name readers resolve: handled like text with offsets.
    return Timestamps(instants, wall, zone_name(tz))


def _out_of_range(naive: pd.Series) -> np.ndarray:
    """Rows whose value nanoseconds cannot hold (any unit; NaT excluded)."""
    unit = np.datetime_data(naive.to_numpy().dtype)[0] if naive.dtype.kind == "M" else "ns"
    if unit == "ns":
        return np.zeros(len(naive), dtype=bool)
    raw = naive.to_numpy()
    lo = np.datetime64(NS_MIN.date().isoformat()).astype(f"datetime64[{unit}]")
    hi = np.datetime64(NS_MAX.date().isoformat()).astype(f"datetime64[{unit}]")
    with np.errstate(invalid="ignore"):
        return ~np.isnat(raw) & ((raw < lo) | (raw > hi))


def _skip_rows(bad: np.ndarray, values: pd.Series, series_id: pd.Series, skip: Skip, column: str = "ds") -> None:
    for r in np.flatnonzero(bad):
        skip(str(series_id.iloc[r]), column,
             f"timestamp {values.iloc[r]} (row {r}) is outside the range a run can represent "
             f"({NS_MIN.date()} to {NS_MAX.date()}); a placeholder such as 9999-12-31?")


def _to_ns(naive: pd.Series, bad: np.ndarray) -> pd.Series:
    if bad.any():  # their series are skipped; any in-range value keeps the conversion exact for the rest
        naive = naive.mask(bad, pd.Timestamp("1970-01-01"))
    return naive.astype("datetime64[ns]")


def _from_strings(col: pd.Series, series_id: pd.Series, source: str | None, skip: Skip,
                  time_format: str | None = None, column: str = "ds") -> Timestamps:
    text = col.astype(object).where(col.notna(), None)
    _check_nulls(text.isna().to_numpy(), series_id, source, column)
    text = pd.Series(text.map(lambda v: v if isinstance(v, str) else str(v)), dtype=object).str.strip()
    if time_format is not None:
        return _declared(text, series_id, source, skip, time_format, column)
    text = text.str.replace(r"(?<=\d)\s*(?:UTC|GMT)$", "Z", regex=True)  # '2023-01-02 00:00:00 UTC'
    has_offset = text.str.contains(OFFSET_RE, regex=True).to_numpy(bool)
    if has_offset.any() and not has_offset.all():
        # Per series: a series whose own values mix both forms cannot be placed on one clock.
        codes, uniques = pd.factorize(series_id)
        with_off = np.bincount(codes, weights=has_offset, minlength=len(uniques))
        total = np.bincount(codes, minlength=len(uniques))
        for i in np.flatnonzero((with_off > 0) & (with_off < total)).tolist():
            skip(str(uniques[i]), column, "timestamps mix values with and without a UTC offset (row "
                 f"{int(np.flatnonzero((codes == i) & ~has_offset)[0])} has none)")
        if (with_off == total).any() and (with_off == 0).any():
            # Some series carry offsets, others do not: no single clock for the run.
            i, j = int(np.flatnonzero(with_off == total)[0]), int(np.flatnonzero(with_off == 0)[0])
            raise DataValidationError(
                f"some series have timestamps with a UTC offset ({uniques[i]!r}), others without ({uniques[j]!r})",
                source=source, column=column, series_id=str(uniques[j]))
        mixed = (with_off > 0) & (with_off < total)
        placeholder = mixed[codes]
        text = text.where(~placeholder, "1970-01-01T00:00:00+00:00" if (with_off == total).any() else "1970-01-01")
        has_offset = text.str.contains(OFFSET_RE, regex=True).to_numpy(bool)
    if not has_offset.any():
        parsed = read_text(text, series_id, source, column)
        bad = _out_of_range(parsed)
        _skip_rows(bad, parsed, series_id, skip, column)
        return Timestamps(_to_ns(parsed, bad), None, None)
    instants = _parse_iso(text, series_id, source, utc=True, column=column).dt.tz_localize(None)
    wall = _parse_iso(text.str.replace(_OFFSET_ONLY, "", regex=True), series_id, source, utc=False, column=column)
    bad = _out_of_range(instants) | _out_of_range(wall)
    _skip_rows(bad, instants, series_id, skip, column)
    return Timestamps(_to_ns(instants, bad), _to_ns(wall, bad), "offsets")


def _declared(text: pd.Series, series_id: pd.Series, source: str | None, skip: Skip, time_format: str,
              column: str) -> Timestamps:
    """Text in the declared strftime pattern (with %z: one offset or several, read as offsets)."""
    utc = "%z" in time_format or "%Z" in time_format
    try:
        parsed = pd.to_datetime(text, format=time_format, utc=utc, errors="coerce")
    except (ValueError, TypeError) as exc:
        raise DataValidationError(f"time_format {time_format!r} cannot be used: {exc}", source=source,
                                  column=column) from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        r = int(np.argmax(bad))
        raise DataValidationError(f"{text.iloc[r]!r} does not match time_format {time_format!r}", source=source,
                                  column=column, series_id=str(series_id.iloc[r]), row=r)
    if not utc:
        out = _out_of_range(parsed)
        _skip_rows(out, parsed, series_id, skip, column)
        return Timestamps(_to_ns(parsed, out), None, None)
    # The wall clock of each value, in its own offset (values may carry different ones).
    wall = pd.Series([datetime.strptime(v, time_format).replace(tzinfo=None) for v in text], dtype="datetime64[ns]")
    none = np.zeros(len(text), dtype=bool)
    return Timestamps(_to_ns(parsed.dt.tz_localize(None), none), _to_ns(wall, none), "offsets")


def read_text(text: pd.Series, series_id: pd.Series, source: str | None, column: str = "ds") -> pd.Series:
    """Naive timestamps from text without offsets, in the one form every value takes (see the module).

    Raises DataValidationError naming the column, series and row of a value no form reads, or of
    the first value two date orders read differently (with the setting that resolves it).
    """
    if text.map(lambda v: bool(ISO_RE.match(v))).all():
        return _parse_iso(text, series_id, source, utc=False, column=column)
    quarter = text.str.extract(QUARTER_RE)
    if quarter.notna().all().all():
        years, qs = quarter[0].astype(int).to_numpy(), quarter[1].astype(int).to_numpy()
        return pd.Series(pd.to_datetime({"year": years, "month": 3 * qs - 2, "day": np.ones_like(years)}))
    week = text.str.extract(WEEK_RE)
    if week[[0, 1]].notna().all().all():
        try:
            days = [datetime.fromisocalendar(int(y), int(w), int(d) if isinstance(d, str) else 1)
                    for y, w, d in week.itertuples(index=False)]
            return pd.Series(pd.to_datetime(days))
        except ValueError:
            pass  # week 53 of a year without one: named below
    # Other date orders: the date part (before a space or T), then an optional time of day.
    split = text.str.extract(r"^([^ T]+)(?:[ T](.+))?$")
    dates, times = split[0], split[1]
    uniques = pd.Series(dates.dropna().unique())
    readings = {}
    for form in DATE_ORDERS:
        got = pd.to_datetime(uniques, format=form, errors="coerce") if len(uniques) else uniques
        if len(uniques) and got.notna().all():
            readings[form] = pd.Series(got.to_numpy(), index=uniques.to_numpy())
    if not readings or dates.isna().any():
        return _parse_iso(text, series_id, source, utc=False, column=column)  # names the first bad value
    forms = list(readings)
    first = readings[forms[0]]
    for other in forms[1:]:
        differs = (readings[other] != first).to_numpy()
        if differs.any():
            at = int(np.argmax(differs))
            value = first.index[at]
            r = int(np.flatnonzero((dates == value).to_numpy())[0])
            raise DataValidationError(
                f"ambiguous date {text.iloc[r]!r}: it reads as {forms[0]} ({first.iloc[at].date()}) "
                f"and as {other} ({readings[other].iloc[at].date()}); {RESOLVE}",
                source=source, column=column, series_id=str(series_id.iloc[r]), row=r)
    day = pd.Series(first.reindex(dates.to_numpy()).to_numpy())
    has_time = times.notna().to_numpy()
    if has_time.any():
        clock = times.where(times.notna(), "0:00")
        ok = clock.map(lambda v: bool(_TIME_OF_DAY.match(v))).to_numpy()
        if not ok.all():
            r = int(np.argmax(~ok))
            raise DataValidationError(f"not a timestamp: {text.iloc[r]!r}; {RESOLVE}", source=source, column=column,
                                      series_id=str(series_id.iloc[r]), row=r)
        parts = clock.str.split(":", expand=True).astype(float).fillna(0.0)
        seconds = parts[0] * 3600 + parts[1] * 60 + (parts[2] if 2 in parts.columns else 0.0)
        day = day + pd.to_timedelta(seconds.to_numpy(), unit="s")
    return day


def _parse_iso(text: pd.Series, series_id: pd.Series, source: str | None, utc: bool, column: str = "ds") -> pd.Series:
    try:
        out = pd.to_datetime(text, format="ISO8601", utc=utc)
    except (ValueError, TypeError, OverflowError):
        bad = pd.to_datetime(text, format="ISO8601", utc=utc, errors="coerce").isna().to_numpy()
        r = int(np.argmax(bad)) if bad.any() else 0
        raise DataValidationError(f"not a timestamp: {text.iloc[r]!r}; {RESOLVE}", source=source, column=column,
                                  series_id=str(series_id.iloc[r]), row=r) from None
    return out
