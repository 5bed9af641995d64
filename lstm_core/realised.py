"""Realised accuracy: how the committed forecasts of earlier runs did, now that their dates have actuals.

Each earlier run's predictions (the output contract's layout: `series_id, ds, step, yhat, model_version,
run_id, cutoff`, plus `yhat_lo_<L>`/`yhat_hi_<L>` where the run wrote intervals) are matched with the
actuals of the current input on (series_id, ds). Every forecast point that now has an actual is scored,
beside seasonal naive from the same cutoff, with the MASE/MSIS scale of the history up to that cutoff
as the current input holds it (so a revised history is scored as it stands now). Points not yet
observed are left for a later run; a run whose cutoff is no longer in the input is not scored.

The result is keyed by the earlier run (`forecast_run_id`) and its `cutoff`, ready to be written as
`realised/run=<run_id>/part-*.parquet` by the scoring run (whose writer adds `run_id`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from lstm_core.layout import OutputLayout
from lstm_core.metrics import ErrorSums, MetricTotals

KEYS = ("forecast_run_id", "model_version", "cutoff", "series_id")
PREDICTION_COLUMNS = ("series_id", "ds", "step", "yhat", "model_version", "run_id", "cutoff")
COLUMNS = ("series_id", "metric", "value", "model", "forecast_run_id", "cutoff", "points", "model_version")
LSTM = "lstm"  # the `model` label of the LSTM's rows (its version is in `model_version`)
_BOUND = re.compile(r"^yhat_lo_(\d+(?:\.\d+)?)$")


def realised_schema(tz: str | None = None) -> pa.Schema:
    """Parquet schema of `realised/` part files (the writer's `run_id` is the scoring run's)."""
    ts = pa.timestamp("us", tz=tz)  # microseconds: what every reader takes (Spark 3 refuses nanoseconds)
    return pa.schema([("series_id", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
                      ("model", pa.string()), ("forecast_run_id", pa.string()), ("cutoff", ts),
                      ("points", pa.int64()), ("run_id", pa.string()), ("model_version", pa.string())])


def interval_levels(columns: Sequence[str]) -> tuple[float, ...]:
    """Levels that have both bound columns among `columns`, ascending."""
    names = set(columns)
    found = [float(m.group(1)) for c in columns if (m := _BOUND.match(c)) and f"yhat_hi_{m.group(1)}" in names]
    return tuple(sorted(set(found)))


def realised_sums(predictions: pd.DataFrame, actuals: pd.DataFrame, *, season_length: int,
                  levels: Sequence[float] | None = None) -> ErrorSums:
    """Mergeable error sums of earlier runs' forecasts that now have actuals.

    predictions: rows of earlier runs (see module docstring); actuals: the current input, `series_id, ds, y`
    (validated: one row per series and timestamp, on a regular grid). `levels`: interval levels to score
    (default: every level with both bound columns present). Keys: forecast_run_id, model_version, cutoff,
    series_id; models: `forecast` (the run's yhat, with its intervals) and `seasonal_naive`.
    Sums from shards of the input (disjoint series) merge with `ErrorSums.merge`.

    Raises ValueError naming the missing columns.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    missing += [f"actuals.{c}" for c in ("series_id", "ds", "y") if c not in actuals.columns]
    if missing:
        raise ValueError(f"realised accuracy needs the columns {missing}")
    levels = interval_levels(list(predictions.columns)) if levels is None else tuple(float(v) for v in levels)
    m = max(1, int(season_length))

    act = actuals[["series_id", "ds", "y"]].astype({"series_id": "string"})
    act["ds"] = pd.to_datetime(act["ds"]).dt.as_unit("ns")  # predictions are stored in ns; inputs may be us
    act = act.sort_values(["series_id", "ds"], kind="stable").reset_index(drop=True)
    y = act["y"].to_numpy(np.float64)
    codes, _ = pd.factorize(act["series_id"])
    first = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1] if len(codes) else np.zeros(0, np.int64)
    start = np.repeat(first, np.diff(np.r_[first, len(codes)])) if len(codes) else np.zeros(0, np.int64)
    # Prefix sums of |y_t - y_{t-m}| within each series: the MASE denominator of any history prefix.
    lag_ok = np.zeros(len(y), dtype=bool)
    lag_ok[m:] = (np.arange(m, len(y)) - m) >= start[m:]
    diff = np.zeros(len(y))
    diff[m:] = np.abs(y[m:] - y[:-m])
    diff_sum = np.r_[0.0, np.cumsum(np.where(lag_ok, diff, 0.0))]
    diff_count = np.r_[0, np.cumsum(lag_ok)]

    index = act[["series_id", "ds"]].assign(_row=np.arange(len(act)))
    pred = predictions.astype({"series_id": "string"}).reset_index(drop=True)
    for col in ("ds", "cutoff"):
        pred[col] = pd.to_datetime(pred[col]).dt.as_unit("ns")
    pred = pred.merge(index, on=["series_id", "ds"], how="inner")  # points that now have an actual
    pred = pred.merge(index.rename(columns={"ds": "cutoff", "_row": "_end"}), on=["series_id", "cutoff"],
                      how="inner")  # and whose cutoff the input still holds
    row, end = pred["_row"].to_numpy(np.int64), pred["_end"].to_numpy(np.int64)
    begin = start[end] if len(end) else np.zeros(0, np.int64)
    length = end - begin + 1
    m_eff = np.minimum(m, length)
    back = m_eff - ((pred["step"].to_numpy(np.int64) - 1) % m_eff)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = diff_count[end + 1] - diff_count[np.minimum(begin + m, end + 1)]
        scale = np.where(count > 0, (diff_sum[end + 1] - diff_sum[np.minimum(begin + m, end + 1)]) / count, np.nan)
    rows = pd.DataFrame({
        "forecast_run_id": pred["run_id"].astype("string"), "model_version": pred["model_version"].astype("string"),
        "cutoff": pred["cutoff"], "series_id": pred["series_id"], "y": y[row],
        "yhat": pred["yhat"].to_numpy(np.float64), "seasonal_naive": y[end + 1 - back] if len(end) else np.zeros(0),
        "scale": scale,
    })
    for level in levels:
        for side in ("lo", "hi"):
            col = f"yhat_{side}_{level:g}"
            rows[col] = pred[col].to_numpy(np.float64) if col in pred.columns else np.nan
    return ErrorSums.from_rows(rows, forecasts={"forecast": "yhat", "seasonal_naive": "seasonal_naive"}, keys=KEYS,
                               interval_model="forecast" if levels else None, levels=levels)


def realised_metrics(sums: ErrorSums, per_series: bool = True) -> pd.DataFrame:
    """The `realised/` table from (merged) sums: columns `COLUMNS`.

    One row per metric of each earlier run's cutoff over all its series (series_id null) and, with
    `per_series`, of each series. `model` is the run's model version or `seasonal_naive`; `points` the
    forecast points scored. Metrics: mae, rmse, smape, mase, coverage_<L>, msis_<L> (intervals only).
    """
    names = sums.metric_names()
    group = ["forecast_run_id", "model_version", "cutoff"]
    parts = []
    if len(sums.frame):
        overall = sums.totals(group).finalize()
        points = sums.frame.groupby([*group, "model"], dropna=False)["n"].sum().rename("points").reset_index()
        parts.append(overall.merge(points, on=[*group, "model"], how="left"))
        if per_series:
            wide = sums.per_key()
            parts.append(wide.melt(id_vars=[*KEYS, "model", "points"], value_vars=names, var_name="metric",
                                   value_name="value"))
    if not parts:
        return pd.DataFrame({"series_id": pd.Series([], dtype="string"), "metric": pd.Series([], dtype="string"),
                             "value": pd.Series([], dtype="float64"), "model": pd.Series([], dtype="string"),
                             "forecast_run_id": pd.Series([], dtype="string"),
                             "cutoff": pd.Series([], dtype="datetime64[ns]"), "points": pd.Series([], dtype="int64"),
                             "model_version": pd.Series([], dtype="string")})
    out = pd.concat(parts, ignore_index=True)
    out = out[out["value"].notna() | out["metric"].isin(("mae", "rmse", "smape", "mase"))]
    model = np.where(out["model"] == "forecast", LSTM, "seasonal_naive")
    frame = pd.DataFrame({
        "series_id": (out["series_id"] if "series_id" in out.columns else pd.NA),
        "metric": out["metric"], "value": out["value"], "model": model,
        "forecast_run_id": out["forecast_run_id"], "cutoff": out["cutoff"], "points": out["points"],
        "model_version": out["model_version"],
    }).astype({"series_id": "string", "metric": "string", "value": "float64", "model": "string",
               "forecast_run_id": "string", "points": "int64", "model_version": "string"})
    return frame.sort_values(["forecast_run_id", "cutoff", "series_id", "model", "metric"], na_position="first",
                             kind="stable").reset_index(drop=True)


def realised_accuracy(predictions: pd.DataFrame, actuals: pd.DataFrame, *, season_length: int,
                      levels: Sequence[float] | None = None, per_series: bool = True) -> pd.DataFrame:
    """`realised_metrics(realised_sums(...))` for one shard or a whole input."""
    return realised_metrics(realised_sums(predictions, actuals, season_length=season_length, levels=levels),
                            per_series=per_series)


def earlier_predictions(fs, root: str, run_ids: Sequence[str], series_ids: Sequence[str] | None = None,
                        skipped: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """The committed predictions of `run_ids` (under `root`/predictions/run=<id>/), of `series_ids` only
    when given, as one frame whatever columns each run wrote (a run written before intervals existed
    reads with null bounds). Empty when none exist.

    Each run is read on its own, and a run that cannot be read as predictions (a part that is a folder, a
    truncated or non-Parquet file, a wrong schema: missing columns or values of the wrong type) is left
    out, with `(run_id, reason)` appended to `skipped`: an earlier run, planted or damaged, is a view of the
    past and never fails tonight's run. Transient storage failures (connection, 5xx) are raised, so the
    calling task retries them.
    """
    frames = []
    for rid in run_ids:
        try:
            frame = _run_predictions(fs, root, rid, series_ids)
        except Exception as exc:  # sorted below: only a retry-able failure propagates
            if _retryable(exc):
                raise
            if skipped is not None:
                skipped.append((rid, f"{type(exc).__name__}: {_one_line(exc)}"))
            continue
        if frame is not None and len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


# What each prediction column must read as; a run whose columns do not is not scored.
_COLUMN_TYPES = {"series_id": "string", "ds": "datetime", "cutoff": "datetime", "step": "int",
                 "yhat": "float", "model_version": "string", "run_id": "string"}


def _run_predictions(fs, root: str, rid: str, series_ids: Sequence[str] | None) -> pd.DataFrame | None:
    """One earlier run's predictions (None when it has none), checked; raises on anything unreadable."""
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    partition = OutputLayout(root).partition("predictions", rid)
    fs.invalidate_cache(partition)
    try:
        entries = fs.ls(partition, detail=True)
    except FileNotFoundError:
        return None
    paths = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/")
        if not (name.rsplit("/", 1)[-1].startswith("part-") and name.endswith(".parquet")):
            continue
        if entry.get("type") != "file":  # a folder (or link) where a part file belongs
            raise IsADirectoryError(f"{name} is not a file")
        paths.append(name)
    if not paths:
        return None
    schemas = []
    for path in sorted(paths):
        with fs.open(path, "rb") as fh:
            schemas.append(pq.read_schema(fh).remove_metadata())
    # permissive: files other writers made (string or large_string, ns or us) read as one
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    missing = [c for c in PREDICTION_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"no column(s) {missing}")
    for column, kind in _COLUMN_TYPES.items():
        t = schema.field(column).type
        ok = {"string": pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
              "datetime": pa.types.is_timestamp(t), "int": pa.types.is_integer(t),
              "float": pa.types.is_floating(t) or pa.types.is_integer(t)}[kind]
        if not ok:
            raise ValueError(f"column {column!r} is {t}, not {kind}")
    for column in schema.names:  # interval bounds are scored as numbers
        if re.match(r"^yhat_(lo|hi)_", column) and not (pa.types.is_floating(schema.field(column).type)
                                                         or pa.types.is_integer(schema.field(column).type)):
            raise ValueError(f"column {column!r} is {schema.field(column).type}, not float")
    dataset = pds.dataset(sorted(paths), schema=schema, format="parquet", filesystem=fs)
    condition = None
    if series_ids is not None:
        condition = pds.field("series_id").isin(pa.array([str(s) for s in series_ids], pa.string()))
    return dataset.to_table(filter=condition).to_pandas()


def _retryable(exc: BaseException) -> bool:
    """A storage hiccup a retry may fix; not a folder, a missing or unreadable file, or bad bytes."""
    from lstm_core.retries import is_transient  # imported here: retries imports config, which is heavier

    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileNotFoundError, PermissionError,
                        UnicodeDecodeError, pa.ArrowException, ValueError, TypeError, KeyError)):
        return False
    return is_transient(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def realised_overall(totals: MetricTotals, points: pd.DataFrame) -> pd.DataFrame:
    """The overall rows (series_id null) of the `realised/` table from totals grouped by
    (forecast_run_id, model_version, cutoff) and their points per model, pooled over shards."""
    group = ["forecast_run_id", "model_version", "cutoff"]
    overall = totals.finalize()
    points = points.groupby([*group, "model"], dropna=False)["n"].sum().rename("points").reset_index()
    out = overall.merge(points, on=[*group, "model"], how="left")
    out = out[out["value"].notna() | out["metric"].isin(("mae", "rmse", "smape", "mase"))]
    model = np.where(out["model"] == "forecast", LSTM, "seasonal_naive")
    return pd.DataFrame({
        "series_id": pd.Series([pd.NA] * len(out), dtype="string"), "metric": out["metric"].astype("string"),
        "value": out["value"].astype("float64"), "model": pd.Series(model, dtype="string"),
        "forecast_run_id": out["forecast_run_id"].astype("string"), "cutoff": out["cutoff"].to_numpy(),
        "points": out["points"].fillna(0).astype("int64"),
        "model_version": out["model_version"].astype("string").to_numpy()}).reset_index(drop=True)
