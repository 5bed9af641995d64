"""Revisions: how far tonight's forecast moved from the previous committed run's, for the same series and dates.

For every (series_id, ds) that both this run's and the previous committed run's `predictions/` hold, the
revision is the change of the served forecast in units of the series' naive error:

    revision = (yhat - yhat_previous) / scale

`scale` is the series' in-sample seasonal naive MAE on this run's history (mean |y_t - y_{t-m}|, m the season
length; the MASE denominator of Hyndman & Koehler 2006, "Another look at measures of forecast accuracy"), the
one-step naive MAE (m = 1) for a series too short for a season, and a revision is null where the scale is 0
or undefined (a constant series). So a revision of 0.5 moved the forecast by half a typical seasonal change
of that series, comparable across series of any level ("nervousness" in supply-planning terms).

The rows are written as `revisions/run=<run_id>/part-<k>.parquet` (one part per shard) before the manifest,
so they are committed with the run or not at all. The manifest's `revisions` gives the median (`p50`) and the
95th percentile (`p95`) of |revision| over all rows with a value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from lstm_core.metrics import mase_scale
from lstm_core.panel import Panel

__all__ = ["COLUMNS", "RevisionRows", "compute_revisions", "naive_scale", "previous_run", "revision_stats",
           "revisions_schema"]

COLUMNS = ("series_id", "ds", "yhat_previous", "yhat", "revision", "scale", "previous_run_id")


def revisions_schema(tz: str | None = None) -> pa.Schema:
    """Columns of `revisions/`: series_id, ds, yhat_previous, yhat, revision (scaled), scale (the naive MAE
    it was divided by), previous_run_id (the run compared with), run_id."""
    return pa.schema([
        ("series_id", pa.string()), ("ds", pa.timestamp("us", tz=tz)), ("yhat_previous", pa.float64()),
        ("yhat", pa.float64()), ("revision", pa.float64()), ("scale", pa.float64()),
        ("previous_run_id", pa.string()), ("run_id", pa.string()),
    ])


def naive_scale(panel: Panel, season_length: int) -> pd.Series:
    """(S,) series_id -> in-sample seasonal naive MAE (one-step naive MAE where a series has no full season
    before its last point); NaN where neither exists, or 0 for a constant series."""
    seasonal = mase_scale(panel, season_length)
    if season_length > 1:
        one_step = mase_scale(panel, 1)
        seasonal = np.where(np.isfinite(seasonal), seasonal, one_step)
    return pd.Series(seasonal, index=pd.Index(panel.series_ids.astype(str), name="series_id"), dtype="float64")


def compute_revisions(current: pd.DataFrame, previous: pd.DataFrame, scale: pd.Series,
                      previous_run_id: str) -> pd.DataFrame:
    """The revisions table (`COLUMNS`, without run_id) of `current` against `previous` predictions.

    current, previous: frames with `series_id, ds, yhat` (one row per series and date); scale: series_id ->
    naive MAE (`naive_scale`). Only (series_id, ds) pairs in both are compared; rows sorted by series_id, ds.
    """
    cur = current[["series_id", "ds", "yhat"]].astype({"series_id": "string"})
    prev = previous[["series_id", "ds", "yhat"]].astype({"series_id": "string"}).rename(
        columns={"yhat": "yhat_previous"})
    prev["ds"] = _like(prev["ds"], cur["ds"])
    rows = cur.merge(prev, on=["series_id", "ds"], how="inner")
    s = rows["series_id"].astype(str).map(scale).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        revision = (rows["yhat"].to_numpy(np.float64) - rows["yhat_previous"].to_numpy(np.float64)) / s.to_numpy()
    revision[~np.isfinite(revision)] = np.nan  # a zero or undefined scale: no revision in naive units
    out = pd.DataFrame({"series_id": rows["series_id"], "ds": rows["ds"],
                        "yhat_previous": rows["yhat_previous"].astype("float64"),
                        "yhat": rows["yhat"].astype("float64"), "revision": revision, "scale": s.to_numpy(),
                        "previous_run_id": pd.Series([previous_run_id] * len(rows), dtype="string")})
    return out.sort_values(["series_id", "ds"], kind="stable").reset_index(drop=True)


def _like(ds: pd.Series, target: pd.Series) -> pd.Series:
    """`ds` in the zone and unit of `target` (a previous run read back in microseconds, maybe in UTC)."""
    ds = pd.to_datetime(ds)
    tz = getattr(target.dtype, "tz", None)
    if tz is not None:
        ds = ds.dt.tz_localize("UTC") if ds.dt.tz is None else ds
        ds = ds.dt.tz_convert(tz)
    elif ds.dt.tz is not None:
        ds = ds.dt.tz_localize(None)
    return ds.dt.as_unit(getattr(target.dtype, "unit", "ns"))


@dataclass
class RevisionRows:
    """One shard's revisions: where its part file is, and |revision| of its rows (for the run's percentiles)."""

    path: str | None
    previous_run_id: str | None
    rows: int
    series: int
    abs_revisions: np.ndarray  # (rows with a value,) float64


def revision_stats(parts: Sequence[RevisionRows]) -> dict[str, float | int | None]:
    """The run's figures over its shards: rows, series, p50 and p95 of |revision| (null when none)."""
    values = np.concatenate([p.abs_revisions for p in parts]) if parts else np.empty(0)
    values = values[np.isfinite(values)]
    p50, p95 = (float(np.percentile(values, 50)), float(np.percentile(values, 95))) if len(values) else (None, None)
    return {"rows": int(sum(p.rows for p in parts)), "series": int(sum(p.series for p in parts)),
            "scored": len(values), "p50": p50, "p95": p95}


def previous_run(history: Sequence, moment) -> str | None:
    """The run id of the newest committed run (`lstm_core.catchup.CommittedRun`s) strictly before `moment`:
    the one tonight's forecast is compared with (a replay of an earlier night compares with the night before
    it, not with a later one)."""
    earlier = [r for r in history if r.moment < moment]
    return max(earlier, key=lambda r: (r.moment, r.run_id)).run_id if earlier else None
