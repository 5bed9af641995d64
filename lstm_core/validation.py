"""Check a long-format frame (series_id, ds, y [, covariates...]) against the data contract.

Dataset-level problems raise `DataValidationError` naming the file, column and
row. Problems that belong to one series put that series in `skipped` with a
reason, and the rest go on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lstm_core.errors import DataValidationError
from lstm_core.frequency import is_fixed, step_positions

REQUIRED = ("series_id", "ds", "y")


@dataclass(frozen=True)
class SkippedSeries:
    series_id: str
    field: str
    reason: str


@dataclass
class ValidationResult:
    frame: pd.DataFrame  # clean rows, sorted by (series_id, ds), on a regular grid
    skipped: list[SkippedSeries] = field(default_factory=list)
    covariates: list[str] = field(default_factory=list)
    future: pd.DataFrame | None = None  # rows past each series' end with covariates but no y
    filled_points: int = 0
    rows_read: int = 0  # rows of the input frame

    def skipped_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "series_id": pd.Series([s.series_id for s in self.skipped], dtype="string"),
                "field": pd.Series([s.field for s in self.skipped], dtype="string"),
                "reason": pd.Series([s.reason for s in self.skipped], dtype="string"),
            }
        )


def min_length(window: int, horizon: int) -> int:
    """Points a series needs: one window, the evaluation horizon and one training target."""
    return window + horizon + 1


def validate(
    df: pd.DataFrame,
    freq: str,
    *,
    window: int,
    horizon: int,
    gap_policy: str = "fill",
    max_gap: int = 3,
    source: str | None = None,
    errors: str = "skip",
) -> ValidationResult:
    """Validate and regularise `df`. `errors='raise'` turns series-level problems into errors too."""
    if gap_policy not in ("fill", "skip", "error"):
        raise ValueError(f"gap_policy must be fill, skip or error, not {gap_policy!r}")
    for col in REQUIRED:
        if col not in df.columns:
            raise DataValidationError(f"missing required column (have {list(df.columns)})", source=source, column=col)
    if len(df) == 0:
        raise DataValidationError("dataset has no rows", source=source)

    df = df.reset_index(drop=True)
    series_id = _check_series_id(df["series_id"], source)
    y = _check_numeric(df["y"], "y", source)
    covariates = [c for c in df.columns if c not in REQUIRED and _is_numeric(df[c])]
    skipped: dict[str, SkippedSeries] = {}

    def skip(sid: str, fld: str, reason: str) -> None:
        if errors == "raise":
            raise DataValidationError(reason, source=source, column=fld, series_id=sid)
        skipped.setdefault(sid, SkippedSeries(sid, fld, reason))

    ds = _check_ds(df["ds"], series_id, source, skip)
    frame = pd.DataFrame({"series_id": series_id, "ds": ds, "y": y})
    for c in covariates:
        frame[c] = df[c].astype("float64")
    frame["_row"] = np.arange(len(frame))
    frame = _drop(frame, skipped)
    frame = frame.sort_values(["series_id", "ds"], kind="stable").reset_index(drop=True)

    # Rows past the last observed y that carry covariates are known-future inputs.
    future = None
    if covariates:
        frame, future = _split_future(frame, covariates)

    _series_problems(frame, covariates, skip)
    frame = _drop(frame, skipped)
    if len(frame) == 0:
        return ValidationResult(_finish(frame), list(skipped.values()), covariates, future, rows_read=len(df))

    frame = _regularise(frame, freq, gap_policy, max_gap, covariates, source, skip)
    frame = _drop(frame, skipped)

    # Length, constant and scale checks on the regular series (vectorised; only failures loop).
    need = min_length(window, horizon)
    codes, uniques = pd.factorize(frame["series_id"], sort=False)
    g = frame["y"].groupby(codes, sort=False)
    n, mean = g.size().to_numpy(), g.mean().to_numpy()
    centred = frame["y"].to_numpy() - mean[codes]
    with np.errstate(over="ignore", invalid="ignore"):
        ss = np.bincount(codes, weights=centred * centred, minlength=len(uniques))
    short = n < need
    overflow = ~short & (~np.isfinite(mean) | ~np.isfinite(ss))
    constant = ~short & ~overflow & (ss == 0)
    for i in np.flatnonzero(short | overflow | constant):
        sid = str(uniques[i])
        if short[i]:
            skip(sid, "y", f"series too short: {int(n[i])} points, needs {need} (window {window} + horizon {horizon} + 1)")
        elif overflow[i]:
            skip(sid, "y", "values too large to scale (overflow)")
        else:
            skip(sid, "y", "series is constant")
    frame = _drop(frame, skipped)
    if future is not None:
        future = future[future["series_id"].isin(frame["series_id"].unique())].reset_index(drop=True)
    filled = int((frame["_row"] < 0).sum())  # interpolated rows of the series kept
    return ValidationResult(_finish(frame), list(skipped.values()), covariates, future, filled, len(df))


def _drop(frame: pd.DataFrame, skipped: dict) -> pd.DataFrame:
    """The rows of series not skipped, renumbered."""
    if skipped:
        frame = frame[~frame["series_id"].isin(list(skipped))]
    return frame.reset_index(drop=True)


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in ("_row", "_pos") if c in frame.columns])
    frame["series_id"] = frame["series_id"].astype("string")
    return frame


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _check_series_id(col: pd.Series, source: str | None) -> pd.Series:
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object).where(col.notna(), None)
    if not (pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col)):
        raise DataValidationError(f"must be string, got {col.dtype}", source=source, column="series_id")
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise DataValidationError("null series_id", source=source, column="series_id", row=int(np.argmax(nulls)))
    if isinstance(col.dtype, pd.StringDtype) or pd.api.types.infer_dtype(col, skipna=False) == "string":
        return col.astype("string")  # every value is a str: no per-row check needed
    bad = ~col.map(lambda v: isinstance(v, str)).to_numpy(bool)
    if bad.any():
        r = int(np.argmax(bad))
        raise DataValidationError(f"must be string, got {type(col.iloc[r]).__name__} {col.iloc[r]!r}",
                                  source=source, column="series_id", row=r)
    return col.astype("string")


def _check_numeric(col: pd.Series, name: str, source: str | None) -> pd.Series:
    if not _is_numeric(col):
        raise DataValidationError(f"must be numeric, got {col.dtype}", source=source, column=name)
    return col.astype("float64")


def _check_ds(col: pd.Series, series_id: pd.Series, source: str | None, skip) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = col
    elif pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col):
        try:
            parsed = pd.to_datetime(col, format="ISO8601")
        except (ValueError, TypeError) as exc:
            if "timezone" in str(exc).lower() or "tz" in str(exc).lower():
                parsed = _parse_mixed_tz(col, series_id, skip)
            else:
                bad = pd.to_datetime(col, format="ISO8601", errors="coerce").isna() & col.notna()
                r = int(np.argmax(bad.to_numpy())) if bad.any() else 0
                raise DataValidationError(f"not a timestamp: {col.iloc[r]!r}", source=source, column="ds",
                                          series_id=str(series_id.iloc[r]), row=r) from None
    else:
        raise DataValidationError(f"must be a timestamp, got {col.dtype}", source=source, column="ds")
    nulls = parsed.isna().to_numpy()
    if nulls.any():
        r = int(np.argmax(nulls))
        raise DataValidationError("null timestamp", source=source, column="ds", series_id=str(series_id.iloc[r]), row=r)
    # One clock for all series: tz-aware input is compared and written in UTC.
    if parsed.dt.tz is not None:
        return parsed.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return parsed.astype("datetime64[ns]")


def _parse_mixed_tz(col: pd.Series, series_id: pd.Series, skip) -> pd.Series:
    """Parse per series; a series whose own timestamps carry several UTC offsets is skipped."""
    out = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns, UTC]")
    for sid, idx in series_id.groupby(series_id, sort=False).groups.items():
        values = col.loc[idx]
        try:
            out.loc[idx] = pd.to_datetime(values, format="ISO8601").dt.tz_convert("UTC") \
                if pd.to_datetime(values.iloc[:1], format="ISO8601").dt.tz is not None \
                else pd.to_datetime(values, format="ISO8601").dt.tz_localize("UTC")
        except (ValueError, TypeError):
            skip(str(sid), "ds", "timestamps in mixed time zones")
            out.loc[idx] = pd.Timestamp("1970-01-01", tz="UTC")
    return out


def _split_future(frame: pd.DataFrame, covariates: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    has_y = frame["y"].notna().to_numpy()
    # Position of each series' last observed y; rows after it are future rows.
    pos = frame.groupby("series_id", sort=False).cumcount().to_numpy()
    last_obs = pd.Series(np.where(has_y, pos, -1)).groupby(frame["series_id"].to_numpy(), sort=False).transform("max").to_numpy()
    is_future = (pos > last_obs) & (last_obs >= 0)
    if not is_future.any():
        return frame, None
    future = frame.loc[is_future, ["series_id", "ds", *covariates]].reset_index(drop=True)
    return frame.loc[~is_future].reset_index(drop=True), future


def _series_problems(frame: pd.DataFrame, covariates: list[str], skip) -> None:
    sid = frame["series_id"]
    dup = frame.duplicated(["series_id", "ds"], keep="first").to_numpy()
    for r in np.flatnonzero(dup)[:10_000]:
        skip(str(sid.iloc[r]), "ds", f"duplicate timestamp {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")
    y = frame["y"].to_numpy()
    nan = np.isnan(y)
    if nan.any():
        all_missing = pd.Series(nan).groupby(sid.to_numpy(), sort=False).all()
        for s in all_missing[all_missing].index:
            skip(str(s), "y", "all values missing")
    bad = ~np.isfinite(y)
    for r in np.flatnonzero(bad):
        kind = "NaN" if np.isnan(y[r]) else ("+inf" if y[r] > 0 else "-inf")
        skip(str(sid.iloc[r]), "y", f"non-finite value {kind} at {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")
    for c in covariates:
        vals = frame[c].to_numpy()
        for r in np.flatnonzero(~np.isfinite(vals)):
            skip(str(sid.iloc[r]), c, f"non-finite covariate at {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")


def _regularise(frame, freq, gap_policy, max_gap, covariates, source, skip):
    """Place each series on its frequency grid; fill or reject gaps."""
    sid = frame["series_id"]
    first = frame.groupby("series_id", sort=False)["ds"].transform("min")
    pos, on_grid = step_positions(frame["ds"], first, freq)
    off = ~on_grid
    codes = pd.factorize(frame["series_id"])[0]
    # A frequency that no series follows is a wrong setting, not bad series (each series' first
    # timestamp anchors a fixed grid, so count series with an off-grid point, not points).
    if off.any() and np.bincount(codes[off], minlength=codes.max() + 1).all():
        r = int(np.argmax(off))
        raise DataValidationError(
            f"frequency {freq!r} matches no series: timestamp {frame['ds'].iloc[r]} is off the grid",
            source=source, column="ds", series_id=str(sid.iloc[r]), row=int(frame["_row"].iloc[r]))
    for r in np.flatnonzero(off):
        skip(str(sid.iloc[r]), "ds", f"timestamp {frame['ds'].iloc[r]} is off frequency {freq!r} (row {int(frame['_row'].iloc[r])})")

    frame = frame.assign(_pos=pos)
    step = np.diff(pos)
    same = codes[1:] == codes[:-1]
    gap = np.where(same, step - 1, 0)
    for r in np.flatnonzero(gap > 0):
        missing = int(gap[r])
        s, at = str(sid.iloc[r + 1]), frame["ds"].iloc[r + 1]
        if gap_policy == "error":
            raise DataValidationError(f"gap of {missing} missing steps before {at}", source=source, column="ds",
                                      series_id=s, row=int(frame["_row"].iloc[r + 1]))
        if gap_policy == "skip" or missing > max_gap:
            skip(s, "ds", f"gap of {missing} missing steps before {at} (max_gap {max_gap if gap_policy == 'fill' else 0})")
    if not (gap > 0).any():
        return frame
    return _fill(frame, freq, covariates)


def _fill(frame: pd.DataFrame, freq: str, covariates: list[str]) -> pd.DataFrame:
    """Linear interpolation over the full grid of each series (blocks end on known values)."""
    codes, uniques = pd.factorize(frame["series_id"])
    pos = frame["_pos"].to_numpy()
    first_pos = pd.Series(pos).groupby(codes).min().to_numpy()
    last_pos = pd.Series(pos).groupby(codes).max().to_numpy()
    lengths = last_pos - first_pos + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    glob_known = starts[codes] + (pos - first_pos[codes])
    total = int(lengths.sum())
    glob_all = np.arange(total)
    out_codes = np.repeat(np.arange(len(uniques)), lengths)
    local = glob_all - starts[out_codes]
    firsts = frame.groupby(codes, sort=False)["ds"].first().to_numpy()
    if is_fixed(freq):
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
        ds = pd.DatetimeIndex(firsts[out_codes]) + step * local
    else:
        grid = pd.date_range(frame["ds"].min(), frame["ds"].max(), freq=freq)
        ds = grid[first_pos[out_codes] + local]
    out = pd.DataFrame({"series_id": pd.Series(np.asarray(uniques, dtype=object)[out_codes], dtype="string"), "ds": ds})
    for c in ["y", *covariates]:
        out[c] = np.interp(glob_all, glob_known, frame[c].to_numpy())
    out["_row"] = -1  # interpolated rows; known rows keep their input row number
    out.loc[glob_known, "_row"] = frame["_row"].to_numpy()
    return out
