"""Timestamps as other tools write them, read one way.

Pandas, pyarrow, Spark and DuckDB write `ds` as timestamps of any unit (s, ms, us, ns; Spark's INT96
arrives as ns or us), with or without a time zone, as dates, or as ISO-8601 strings with or without a
UTC offset (the offset changing at a daylight-saving switch is fine: every instant is unambiguous).
`parse` turns all of them into nanosecond timestamps once:

- `instants`: the moments in UTC (naive datetime64[ns]); for naive input, the values as given;
- `wall`: the wall-clock time where the data were written (the zone's, or the string's own offset):
  calendar frequencies (days, weeks, months) are counted on it, so midnight stays midnight across a
  daylight-saving switch;
- `zone`: None (naive input), a zone name ('UTC', 'Europe/Paris'), or 'offsets' (strings with offsets).

A value nanoseconds cannot hold (the `9999-12-31` placeholder some systems write for "open ended")
puts only its series aside, naming the field and row; the other series go on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from lstm_core.errors import DataValidationError

OFFSET_RE = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"
# What datetime64[ns] holds, to the day (1677-09-21 00:12 .. 2262-04-11 23:47).
NS_MIN, NS_MAX = pd.Timestamp("1677-09-22"), pd.Timestamp("2262-04-11")
Skip = Callable[[str, str, str], None]


@dataclass
class Timestamps:
    instants: pd.Series  # datetime64[ns], naive: UTC when a zone or offset was given
    wall: pd.Series | None  # datetime64[ns] naive wall clock; None when the input was naive
    zone: str | None  # None, a zone name, or "offsets"

    def for_frequency(self, fixed: bool) -> pd.Series:
        """The timestamps a frequency is counted on, as the run writes them.

        Fixed steps (hours, minutes): instants, in UTC when a zone was given. Calendar steps (days,
        weeks, months): the data's own wall clock, in its zone when it has a name (strings with offsets
        have none: their wall clock is written without a zone).
        """
        if self.zone is None:
            return self.instants
        if fixed:
            return self.instants.dt.tz_localize("UTC")
        if self.zone == "offsets":
            return self.wall
        return self.instants.dt.tz_localize("UTC").dt.tz_convert(self.zone)


def parse(col: pd.Series, series_id: pd.Series, source: str | None, skip: Skip) -> Timestamps:
    """Parse a `ds` column of any encoding. Unparseable or null values are dataset errors (row named);
    out-of-range values and a series that mixes values with and without an offset are skipped per series."""
    col = col.reset_index(drop=True)
    series_id = series_id.reset_index(drop=True)
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(col.cat.categories.dtype)
    if pd.api.types.is_datetime64_any_dtype(col):
        _check_nulls(col.isna().to_numpy(), series_id, source)
        return _from_datetimes(col, series_id, skip)
    if pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col):
        nonnull = col.dropna()
        if len(nonnull) and nonnull.map(lambda v: hasattr(v, "year") and not isinstance(v, str)).all():
            # datetime.date / datetime.datetime objects (pyarrow dates, object columns)
            _check_nulls(col.isna().to_numpy(), series_id, source)
            return _from_datetimes(_objects_to_datetimes(col, series_id, source), series_id, skip)
        return _from_strings(col, series_id, source, skip)
    raise DataValidationError(f"must be a timestamp, got {col.dtype}", source=source, column="ds")


def _check_nulls(nulls: np.ndarray, series_id: pd.Series, source: str | None) -> None:
    if nulls.any():
        r = int(np.argmax(nulls))
        raise DataValidationError("null timestamp", source=source, column="ds", series_id=str(series_id.iloc[r]), row=r)


def _objects_to_datetimes(col: pd.Series, series_id: pd.Series, source: str | None) -> pd.Series:
    try:
        return pd.to_datetime(col.astype(object), utc=False)
    except (ValueError, TypeError, OverflowError):
        # mixed zones among datetime objects, or values out of range: go through their ISO text
        return pd.Series([v.isoformat() if v is not None else None for v in col], index=col.index, dtype=object)


def _from_datetimes(col: pd.Series, series_id: pd.Series, skip: Skip) -> Timestamps:
    if not pd.api.types.is_datetime64_any_dtype(col):  # ISO text from mixed datetime objects
        return _from_strings(col, series_id, None, skip)
    tz = getattr(col.dt, "tz", None)
    utc = col.dt.tz_convert("UTC").dt.tz_localize(None) if tz is not None else col
    bad = _out_of_range(utc)
    _skip_rows(bad, utc, series_id, skip)
    instants = _to_ns(utc, bad)
    if tz is None:
        return Timestamps(instants, None, None)
    wall = _to_ns(col.dt.tz_localize(None), bad)
    return Timestamps(instants, wall, str(tz))


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


def _skip_rows(bad: np.ndarray, values: pd.Series, series_id: pd.Series, skip: Skip) -> None:
    for r in np.flatnonzero(bad):
        skip(str(series_id.iloc[r]), "ds",
             f"timestamp {values.iloc[r]} (row {r}) is outside the range a run can represent "
             f"({NS_MIN.date()} to {NS_MAX.date()}); a placeholder such as 9999-12-31?")


def _to_ns(naive: pd.Series, bad: np.ndarray) -> pd.Series:
    if bad.any():  # their series are skipped; any in-range value keeps the conversion exact for the rest
        naive = naive.mask(bad, pd.Timestamp("1970-01-01"))
    return naive.astype("datetime64[ns]")


def _from_strings(col: pd.Series, series_id: pd.Series, source: str | None, skip: Skip) -> Timestamps:
    text = col.astype(object).where(col.notna(), None)
    _check_nulls(text.isna().to_numpy(), series_id, source)
    text = text.map(lambda v: v if isinstance(v, str) else str(v)).str.strip()
    has_offset = text.str.contains(OFFSET_RE, regex=True).to_numpy(bool)
    if has_offset.any() and not has_offset.all():
        # Per series: a series whose own values mix both forms cannot be placed on one clock.
        codes, uniques = pd.factorize(series_id)
        with_off = np.bincount(codes, weights=has_offset, minlength=len(uniques))
        total = np.bincount(codes, minlength=len(uniques))
        for i in np.flatnonzero((with_off > 0) & (with_off < total)):
            skip(str(uniques[i]), "ds", "timestamps mix values with and without a UTC offset (row "
                 f"{int(np.flatnonzero((codes == i) & ~has_offset)[0])} has none)")
        if (with_off == total).any() and (with_off == 0).any():
            # Some series carry offsets, others do not: no single clock for the run.
            i, j = int(np.flatnonzero(with_off == total)[0]), int(np.flatnonzero(with_off == 0)[0])
            raise DataValidationError(
                f"some series have timestamps with a UTC offset ({uniques[i]!r}), others without ({uniques[j]!r})",
                source=source, column="ds", series_id=str(uniques[j]))
        mixed = (with_off > 0) & (with_off < total)
        placeholder = mixed[codes]
        text = text.where(~placeholder, "1970-01-01T00:00:00+00:00" if (with_off == total).any() else "1970-01-01")
        has_offset = text.str.contains(OFFSET_RE, regex=True).to_numpy(bool)
    if not has_offset.any():
        parsed = _parse_iso(text, series_id, source, utc=False)
        bad = _out_of_range(parsed)
        _skip_rows(bad, parsed, series_id, skip)
        return Timestamps(_to_ns(parsed, bad), None, None)
    instants = _parse_iso(text, series_id, source, utc=True).dt.tz_localize(None)
    wall = _parse_iso(text.str.replace(OFFSET_RE, "", regex=True), series_id, source, utc=False)
    bad = _out_of_range(instants) | _out_of_range(wall)
    _skip_rows(bad, instants, series_id, skip)
    return Timestamps(_to_ns(instants, bad), _to_ns(wall, bad), "offsets")


def _parse_iso(text: pd.Series, series_id: pd.Series, source: str | None, utc: bool) -> pd.Series:
    try:
        out = pd.to_datetime(text, format="ISO8601", utc=utc)
    except (ValueError, TypeError, OverflowError):
        bad = pd.to_datetime(text, format="ISO8601", utc=utc, errors="coerce").isna().to_numpy()
        r = int(np.argmax(bad)) if bad.any() else 0
        raise DataValidationError(f"not a timestamp: {text.iloc[r]!r}", source=source, column="ds",
                                  series_id=str(series_id.iloc[r]), row=r) from None
    return out
