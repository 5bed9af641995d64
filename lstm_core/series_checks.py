"""Per-series checks of parsed rows: each fault sets only its series aside (`skip`), the rest go on.

Future rows split from the history (`split_future`), static covariates constant per series (`static_values`),
duplicate and non-finite values (`series_problems`), the frequency grid with its gaps filled or refused
(`regularise`), and the future covariates of the horizon (`future_block`). `skip(series_id, field, reason)`
is `lstm_core.validation`'s: it records the series as skipped, or raises under `errors='raise'`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

from lstm_core.errors import DataValidationError
from lstm_core.frequency import dates_after, series_frequency, step_positions

Skip = Callable[[str, str, str], None]  # skip(series_id, field, reason)


def split_future(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Rows after each series' last observed y: the future rows (a series with no y at all keeps its rows)."""
    has_y = frame["y"].notna().to_numpy()
    pos = frame.groupby("series_id", sort=False).cumcount().to_numpy()
    last_obs = pd.Series(np.where(has_y, pos, -1)).groupby(frame["series_id"].to_numpy(), sort=False) \
        .transform("max").to_numpy()
    is_future = (pos > last_obs) & (last_obs >= 0)
    if not is_future.any():
        return frame, None
    return frame.loc[~is_future].reset_index(drop=True), frame.loc[is_future].reset_index(drop=True)


def static_values(frame: pd.DataFrame, future: pd.DataFrame | None, columns: list[str], skip: Skip) -> pd.DataFrame:
    """One value per series and static column: the same on every row (history and future rows)."""
    rows = frame if future is None else pd.concat([frame, future], ignore_index=True)
    out = {}
    for c in columns:
        col = rows[c]
        missing = col.isna().to_numpy()
        for r in np.flatnonzero(missing)[:10_000]:
            skip(str(rows["series_id"].iloc[r]), c,
                 f"static covariate {c!r} is missing (row {int(rows['_row'].iloc[r])})")
        key = col.astype(object).map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else
                                     (v.item() if hasattr(v, "item") else v))
        first = key.groupby(rows["series_id"].to_numpy(), sort=False).transform("first")
        differs = (key != first).to_numpy() & ~missing
        for r in np.flatnonzero(differs)[:10_000]:
            skip(str(rows["series_id"].iloc[r]), c,
                 f"static covariate {c!r} changes within the series: {key.iloc[r]!r} (row {int(rows['_row'].iloc[r])}) "
                 f"after {first.iloc[r]!r}")
        out[c] = col.groupby(rows["series_id"].to_numpy(), sort=False).first()
    static = pd.DataFrame(out)
    static.index = static.index.astype(object)
    static.index.name = "series_id"
    return static


def series_problems(frame: pd.DataFrame, covariates: list[str], skip: Skip) -> None:
    """Series-level faults of the parsed rows, each handed to `skip(series_id, field, reason)`: a duplicate
    timestamp, no y at all, a non-finite y or covariate (with its timestamp and input row)."""
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
        skip(str(sid.iloc[r]), "y",
             f"non-finite value {kind} at {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")
    for c in covariates:
        vals = frame[c].to_numpy()
        for r in np.flatnonzero(~np.isfinite(vals)):
            skip(str(sid.iloc[r]), c,
                 f"non-finite covariate at {frame['ds'].iloc[r]} (row {int(frame['_row'].iloc[r])})")


def _appears(ds: pd.Series) -> str:
    """How one series' own timestamps look, for messages."""
    freq = series_frequency(ds)
    return repr(freq) if freq is not None else "irregular"


def regularise(frame: pd.DataFrame, freq: str, gap_policy: str, max_gap: int, covariates: list[str],
               source: str | None, skip: Skip, skipped: Mapping[str, object]) -> pd.DataFrame:
    """Place each series on its frequency grid; refuse a frequency the data do not follow; fill or reject gaps."""
    sid = frame["series_id"]
    first = frame.groupby("series_id", sort=False)["ds"].transform("min")
    pos, on_grid = step_positions(frame["ds"], first, freq)
    codes, uniques = pd.factorize(frame["series_id"])
    n = len(uniques)
    off_series = np.bincount(codes[~on_grid], minlength=n) > 0
    # A series whose every step is k > 1 steps of `freq` follows a coarser frequency (daily data read
    # as hourly would otherwise be 23-step gaps in every series).
    same = codes[1:] == codes[:-1]
    steps = np.diff(pos)[same]
    step_codes = codes[1:][same]
    coarse = np.zeros(n, dtype=bool)
    multiple = np.zeros(n, dtype=np.int64)
    if len(steps):
        starts = np.flatnonzero(np.r_[True, step_codes[1:] != step_codes[:-1]])
        gcd = np.gcd.reduceat(np.abs(steps), starts)
        multiple[step_codes[starts]] = gcd
        coarse[step_codes[starts]] = gcd > 1
    follows = ~off_series & ~coarse
    if not follows.any():
        i = int(np.flatnonzero(off_series | coarse)[0])
        rows = np.flatnonzero(codes == i)
        looks = _appears(frame["ds"].iloc[rows])
        if off_series[i]:
            r = rows[np.argmax(~on_grid[rows])]
            why = f"timestamp {frame['ds'].iloc[r]} is off the grid"
        else:
            r = rows[0]
            why = f"its timestamps are {int(multiple[i])} steps of {freq!r} apart"
        raise DataValidationError(
            f"frequency {freq!r} matches no series: series {str(uniques[i])!r} appears to be {looks} ({why}); "
            "set freq to the data's frequency, or leave it unset to infer it",
            source=source, column="ds", series_id=str(uniques[i]), row=int(frame["_row"].iloc[r]))
    for r in np.flatnonzero(~on_grid):
        skip(str(sid.iloc[r]), "ds",
             f"timestamp {frame['ds'].iloc[r]} is off frequency {freq!r} (row {int(frame['_row'].iloc[r])})")
    for i in np.flatnonzero(coarse & ~off_series)[:10_000]:
        rows = np.flatnonzero(codes == i)
        skip(str(uniques[i]), "ds", f"timestamps follow {_appears(frame['ds'].iloc[rows])}, not frequency {freq!r} "
                                    f"(steps of {int(multiple[i])})")

    frame = frame.assign(_pos=pos)
    step = np.diff(pos)
    gap = np.where(same, step - 1, 0)
    for r in np.flatnonzero(gap > 0):
        missing = int(gap[r])
        s, at = str(sid.iloc[r + 1]), frame["ds"].iloc[r + 1]
        if s in skipped:  # already set aside (a coarser frequency is not also a gap)
            continue
        if gap_policy == "error":
            raise DataValidationError(f"gap of {missing} missing steps before {at}", source=source, column="ds",
                                      series_id=s, row=int(frame["_row"].iloc[r + 1]))
        if gap_policy == "skip" or missing > max_gap:
            allowed = max_gap if gap_policy == "fill" else 0
            skip(s, "ds", f"gap of {missing} missing steps before {at} (max_gap {allowed})")
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
    firsts = frame.groupby(codes, sort=False)["ds"].first()
    offset = to_offset(freq)
    if isinstance(offset, Tick):  # a fixed step (is_fixed): the k-th point is k steps after the first
        ds = pd.DatetimeIndex(firsts.to_numpy()[out_codes]) + pd.Timedelta(offset) * local
    else:
        grid = pd.date_range(frame["ds"].min(), frame["ds"].max(), freq=freq)
        ds = grid[first_pos[out_codes] + local]
    out = pd.DataFrame({"series_id": pd.Series(np.asarray(uniques, dtype=object)[out_codes], dtype="string"), "ds": ds})
    for c in ["y", *covariates]:
        out[c] = np.interp(glob_all, glob_known, frame[c].to_numpy())
    out["_row"] = -1  # interpolated rows; known rows keep their input row number
    out.loc[glob_known, "_row"] = frame["_row"].to_numpy()
    return out


def future_block(frame: pd.DataFrame, future: pd.DataFrame | None, columns: list[str], freq: str, horizon: int,
                 skip: Skip) -> pd.DataFrame | None:
    """The future covariates at the `horizon` steps after each kept series' last timestamp.

    A series without a finite value at one of those steps is skipped, naming the covariate and step.
    """
    if frame.empty:
        return None
    ends = frame.groupby("series_id", sort=False)["ds"].last()
    want_ds = dates_after(ends.to_numpy(), freq, horizon)  # (S, H)
    want = pd.DataFrame({
        "series_id": np.repeat(ends.index.to_numpy(dtype=object), horizon),
        "ds": pd.Series(want_ds.reshape(-1)).astype(frame["ds"].dtype),
        "step": np.tile(np.arange(1, horizon + 1), len(ends)),
    })
    if future is None:
        future = pd.DataFrame({"series_id": pd.Series([], dtype=object), "ds": pd.Series([], dtype=frame["ds"].dtype),
                               **{c: pd.Series([], dtype=float) for c in columns}})
    have = future.drop_duplicates(["series_id", "ds"]).assign(series_id=lambda f: f["series_id"].astype(object))
    merged = want.merge(have[["series_id", "ds", *columns]], on=["series_id", "ds"], how="left")
    for c in columns:
        bad = ~np.isfinite(merged[c].to_numpy(dtype=np.float64, na_value=np.nan))
        for r in np.flatnonzero(bad):
            s = str(merged["series_id"].iloc[r])
            step, at = int(merged["step"].iloc[r]), merged["ds"].iloc[r]
            skip(s, c, f"future covariate {c!r} has no value for step {step} of {horizon} ({at}) after the last "
                       "observed y; future covariates need a row (y empty) for each step of the horizon")
    out = merged.drop(columns=["step"])
    out["series_id"] = out["series_id"].astype("string")
    return out
