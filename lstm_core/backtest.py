"""Rolling-origin backtests: forecast several windows at the end of each series' history.

Rolling-origin evaluation as reviewed by Tashman 2000 (IJF 16(4)): several forecast origins, each
forecast scored only on data after its origin.

Window w (0 = the earliest of `windows`) cuts each series `drop_w = H + step * (windows - 1 - w)` points
before its end: the history is what precedes that cutoff, the window is the H points after it. So the
last window (step H or not) is exactly today's holdout, and windows are `step` points apart. A series
whose history before a cutoff is shorter than `min_history` skips that window, not the run.

The model is trained once on the data before the earliest cutoff (`fit_fn` on that panel, or a
`forecast_fn` the caller trained so), or refit on each window's history (`refit=True`). Either way a
window's forecast sees nothing after its cutoff; later windows only give the model more recent input.

The result is utilsforecast's cross-validation layout, one row per series, cutoff and step:
`series_id, cutoff, ds, step, y, yhat, seasonal_naive` plus `yhat_lo_<L>, yhat_hi_<L>` per level, where
each window's intervals are calibrated only on the earlier windows whose actuals precede its cutoff
(`intervals.held_out_bounds`; the earliest window has none: NaN), and the conformal intervals fitted on
all windows, for the published forecast.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lstm_core import interrupt
from lstm_core.config import ForecastConfig
from lstm_core.frequency import dates_after
from lstm_core.intervals import (
    PRIOR_WINDOWS,
    ConformalIntervals,
    fit_conformal,
    held_out_bounds,
    naive_scales,
    score_table,
)
from lstm_core.metrics import ErrorSums, interval_columns, mase_scale, seasonal_naive
from lstm_core.panel import Panel

# forecast_fn(history, horizon, future covariates (S, H, K) or None) -> (S, H) in original units
ForecastFn = Callable[[Panel, int, "np.ndarray | None"], np.ndarray]
# fit_fn(training panel) -> a forecast_fn trained on it
FitFn = Callable[[Panel], ForecastFn]
# on_window(windows done, windows): 0 at the start, then after each window is forecast (or skipped by every series)
WindowHook = Callable[[int, int], None]

FRAME_COLUMNS = ("series_id", "cutoff", "ds", "step", "y", "yhat", "seasonal_naive")
KEYS = ("series_id", "window", "cutoff")


def cutoff_drops(windows: int, step: int, horizon: int) -> np.ndarray:
    """(windows,) points each series loses before window w's cutoff, earliest window first."""
    if windows < 1 or step < 1 or horizon < 1:
        raise ValueError(f"windows, step and horizon must be >= 1, got {windows}, {step}, {horizon}")
    return horizon + step * (windows - 1 - np.arange(windows, dtype=np.int64))


@dataclass
class Backtest:
    """A rolling-origin backtest.

    frame: one row per series, window and step (columns `FRAME_COLUMNS` plus interval columns);
    scales: per series and window: `series_id, cutoff, window, mase_scale` (the in-sample MASE
      denominator of the history before the cutoff), `interval_scale` and `log_scale` (`naive_scales`);
    skipped: `series_id, window, history, reason`: the windows a series was too short for;
    intervals: conformal quantiles fitted on every window, for the published forecast (None without levels).
    """

    frame: pd.DataFrame
    scales: pd.DataFrame
    skipped: pd.DataFrame
    horizon: int
    season_length: int
    windows: int
    step: int
    levels: tuple[float, ...] = ()
    intervals: ConformalIntervals | None = None

    def sums(self, model_name: str = "lstm") -> ErrorSums:
        """Mergeable error sums keyed by (series_id, window, cutoff), for the model (`yhat`, with its
        intervals) and `seasonal_naive`."""
        rows = self.frame.merge(self.scales[["series_id", "cutoff", "window", "mase_scale"]],
                                on=["series_id", "cutoff"], how="left")
        return ErrorSums.from_rows(rows, forecasts={model_name: "yhat", "seasonal_naive": "seasonal_naive"},
                                   scale="mase_scale", keys=KEYS, interval_model=model_name, levels=self.levels)

    def metrics(self, model_name: str = "lstm") -> pd.DataFrame:
        """See `backtest_metrics`."""
        return backtest_metrics(self.sums(model_name))


def backtest_metrics(sums: ErrorSums) -> pd.DataFrame:
    """The metrics table of a backtest, from (possibly merged) sums keyed by `KEYS`.

    Columns `series_id, metric, value, model, cutoff, window` (the existing metrics layout plus two).
    Four kinds of rows: per series and window; per series over all windows (window and cutoff null,
    the mean of its windows); per window over all series (series_id null; cutoff the latest of that
    window's cutoffs, i.e. the common cutoff when series end together); and pooled (all three null:
    the mean over every series and window; coverage over every point). Metrics: mae, rmse, smape,
    mase, and per level coverage_<L> and msis_<L> for the model with intervals.
    """
    names = sums.metric_names()
    wide = sums.per_key()
    per_key = wide.melt(id_vars=[*KEYS, "model"], value_vars=names, var_name="metric", value_name="value")
    per_series = sums.totals(("series_id",)).finalize()
    per_window = sums.totals(("window",)).finalize()
    latest = wide.groupby("window")["cutoff"].max()
    per_window["cutoff"] = per_window["window"].map(latest) if len(latest) else pd.NaT  # no rows: nothing to map
    pooled = sums.totals(()).finalize()
    parts = [per_key, per_series, per_window, pooled]
    out = pd.concat(parts, ignore_index=True)
    # Coverage and MSIS exist only for the model with intervals; keep NaN point metrics as the
    # metrics table always has (a series without a finite MASE still has its row).
    out = out[out["value"].notna() | out["metric"].isin(("mae", "rmse", "smape", "mase"))]
    cutoff_dtype = wide["cutoff"].dtype if len(wide) else np.dtype("datetime64[ns]")
    frame = pd.DataFrame({
        "series_id": out["series_id"].astype("string"),
        "metric": out["metric"].astype("string"),
        "value": out["value"].astype("float64"),
        "model": out["model"].astype("string"),
        "cutoff": pd.to_datetime(out["cutoff"]).astype(cutoff_dtype),
        "window": out["window"].astype("Int64"),
    })
    return frame.reset_index(drop=True)


LSTM = "lstm"  # the metrics table's `model` label of the LSTM's rows (its version is in `model_version`)


def metrics_table(metrics: pd.DataFrame, lstm_versions: Collection[str]) -> pd.DataFrame:
    """`backtest_metrics` rows (or the overall rows built like them) in the layout of the `metrics/` table.

    The sums key the LSTM by its model version; the table labels it `lstm` and keeps the version in
    `model_version` (null on a baseline's rows, e.g. `seasonal_naive`), and names the backtest window
    `backtest_window` (`window` is a reserved word of DuckDB and of SQL:2016). `lstm_versions`: the model
    versions among `metrics["model"]` (several when group models are pooled). Columns:
    `series_id, metric, value, model, cutoff, backtest_window, model_version`.
    """
    versions = {str(v) for v in lstm_versions}
    model = metrics["model"].astype("string")
    is_lstm = model.isin(versions).fillna(False).to_numpy(bool)
    out = metrics.rename(columns={"window": "backtest_window"})
    return out.assign(model=model.where(~is_lstm, LSTM),
                      model_version=model.where(is_lstm).astype("string")).reset_index(drop=True)  # <NA> elsewhere


def backtest(panel: Panel, forecast_fn: ForecastFn | None = None, *, horizon: int, season_length: int,
             windows: int = 3, step: int | None = None, fit_fn: FitFn | None = None, refit: bool = False,
             min_history: int = 1, levels: Sequence[float] = (80, 95), interval_method: str = "conformal",
             prior_windows: float = PRIOR_WINDOWS, first_window: int = 0,
             on_window: WindowHook | None = None) -> Backtest:
    """Backtest a model on `windows` rolling origins `step` apart (default H) at the end of each series.

    Pass either `forecast_fn` (a model already trained on data before the earliest cutoff) or `fit_fn`
    (trained here: once on the data before the earliest cutoff, or per window with `refit=True`).
    Known-ahead columns of `panel` (future, calendar, static) are passed to the forecast at their true
    values over each window (S, H, K); historic ones are not (the forecast carries them forward).
    `min_history`: points a series needs before a cutoff (the model's input size) to join that window.
    `first_window`: windows before it are skipped for every series (their cutoff precedes the end of the
    data `forecast_fn` was trained on, so they would score the model on what it has seen).
    `on_window(done, windows)` reports progress (a person's progress bar): 0 before the first window, then
    after each window.

    Raises ValueError for inconsistent arguments or a forecast of the wrong shape.
    """
    step = horizon if step is None else step
    drops = cutoff_drops(windows, step, horizon)
    if (forecast_fn is None) == (fit_fn is None):
        raise ValueError("pass exactly one of forecast_fn (a trained model) or fit_fn (train here)")
    if refit and fit_fn is None:
        raise ValueError("refit=True needs fit_fn")
    levels = tuple(float(v) for v in levels)
    eligible = [((panel.lengths - d) >= max(1, min_history)) & (w >= first_window) for w, d in enumerate(drops)]
    if fit_fn is not None and not refit:
        first = next((w for w in range(windows) if eligible[w].any()), None)
        if first is not None:
            forecast_fn = fit_fn(panel.select(eligible[first]).drop_last(int(drops[first])))
    frames, scales, skipped = [], [], []
    if on_window is not None:
        on_window(0, windows)
    for w in range(windows):
        interrupt.check()  # a stop request (Ctrl-C, SIGTERM) ends the backtest between windows
        mask = eligible[w]
        for i in np.flatnonzero(~mask):
            have = max(int(panel.lengths[i] - drops[w]), 0)
            skipped.append((str(panel.series_ids[i]), w, have,
                            f"window {w} is before the model's training cutoff (window {first_window})"
                            if w < first_window else
                            f"{have} points before the cutoff of window {w}, fewer than {max(1, min_history)}"))
        if not mask.any():
            if on_window is not None:
                on_window(w + 1, windows)
            continue
        sub = panel.select(mask)
        history = sub.drop_last(int(drops[w]))
        window_values = sub.drop_last(int(drops[w]) - horizon).last_values(horizon)  # (S, H, F)
        known = panel.known_index  # future, calendar and static columns; historic ones are not known ahead
        future = window_values[:, :, known] if known.size else None
        fn = fit_fn(history) if refit and fit_fn is not None else forecast_fn  # refit implies fit_fn (above)
        if fn is None:  # cannot happen: forecast_fn was given or trained on the first window with a series
            raise ValueError(f"no model to forecast window {w}")
        yhat = np.asarray(fn(history, horizon, future), dtype=np.float64)
        if yhat.shape != (history.n_series, horizon):
            raise ValueError(f"the forecast of window {w} has shape {yhat.shape}, expected "
                             f"({history.n_series}, {horizon})")
        frames.append(_window_frame(history, window_values[:, :, 0], yhat,
                                    seasonal_naive(history, horizon, season_length), horizon))
        seasonal = mase_scale(history, season_length)
        linear, log_scale = naive_scales(history, season_length, log=interval_method == "conformal_log",
                                         seasonal=seasonal)
        scales.append(pd.DataFrame({
            "series_id": pd.Series(history.series_ids, dtype="string"),
            "cutoff": history.last_ds, "window": np.full(history.n_series, w, dtype=np.int64),
            "mase_scale": seasonal, "interval_scale": linear, "log_scale": log_scale}))
        if on_window is not None:
            on_window(w + 1, windows)
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame(panel)
    scale_frame = pd.concat(scales, ignore_index=True) if scales else pd.DataFrame(
        {"series_id": pd.Series([], dtype="string"), "cutoff": pd.Series([], dtype=frame["cutoff"].dtype),
         "window": pd.Series([], dtype="int64"), "mase_scale": [], "interval_scale": [], "log_scale": []})
    frame = frame.sort_values(["series_id", "cutoff", "step"], kind="stable").reset_index(drop=True)
    intervals = None
    if levels and len(frame):
        table = score_table(frame, scale_frame)
        bounds = held_out_bounds(table, levels=levels, horizon=horizon, step=step, season_length=season_length,
                                 method=interval_method, prior_windows=prior_windows)
        frame = pd.concat([frame, bounds], axis=1)
        intervals = fit_conformal(table, levels=levels, horizon=horizon, season_length=season_length,
                                  method=interval_method, prior_windows=prior_windows)
    elif levels:
        for lv in levels:
            for c in interval_columns(lv):
                frame[c] = pd.Series([], dtype="float64")
    skipped_frame = pd.DataFrame(skipped, columns=["series_id", "window", "history", "reason"]).astype(
        {"series_id": "string", "window": "int64", "history": "int64", "reason": "string"})
    return Backtest(frame, scale_frame, skipped_frame, horizon, season_length, windows, step, levels, intervals)


def backtest_from_config(panel: Panel, config: ForecastConfig, forecast_fn: ForecastFn | None = None, *,
                         fit_fn: FitFn | None = None, min_history: int | None = None,
                         first_window: int = 0, on_window: WindowHook | None = None) -> Backtest:
    """`backtest` with the configuration's horizon, season, `backtest` section, `levels` and
    `interval_method`; `min_history` defaults to the model's input size (`window`).

    Raises ValueError for a configuration not yet resolved (`season_length` or `window` unset: freq unknown)."""
    min_history = config.window if min_history is None else min_history
    if config.season_length is None or min_history is None:
        raise ValueError("backtest_from_config needs a resolved configuration (season_length and window set)")
    return backtest(panel, forecast_fn, horizon=config.horizon, season_length=config.season_length,
                    windows=config.backtest.windows, step=config.backtest_step, fit_fn=fit_fn,
                    refit=config.backtest.refit, min_history=min_history,
                    levels=config.levels, interval_method=config.interval_method, first_window=first_window,
                    on_window=on_window)


def training_cutoff(panel: Panel, config: ForecastConfig) -> tuple[int, Panel]:
    """(first window, training panel) of a run: the model that scores the backtest is trained on each series
    up to the earliest cutoff before which it has the points the network learns from
    (`validation.min_train_length`: a patch of input and a chunk of targets); series with no such cutoff
    are left out of training. The first window is the earliest of those cutoffs.

    A series is scored by the backtest from the window whose cutoff ends its training part on (that is the
    first window where it has `min_train_length` points, `backtest`'s `min_history`), so no window scores
    the model on points of a series it learned (in calendar time, a short series' training part may overlap a
    longer one's earlier windows, as with any global model over series that end on different dates). Long
    histories all share the earliest cutoff (as before); on short ones
    the earlier windows drop for the series that cannot reach them, and each still trains on what it has
    (a 14-point yearly series of H 6 trains on its first 8 points). With one window that is every series
    without its last H points. A panel where no series reaches any cutoff gets the last window's split of
    every series.
    """
    from lstm_core.validation import min_train_length

    drops = cutoff_drops(config.backtest.windows, config.backtest_step, config.horizon)
    need = min_train_length(config)
    reach = (panel.lengths[:, None] - drops[None, :]) >= need  # (S, windows): series i trains before cutoff w
    ok = reach.any(axis=1)
    if not ok.any():  # no series reaches a cutoff: fit refuses the panel, naming the rule
        return len(drops) - 1, panel.drop_upto(int(drops[-1]))
    first = np.argmax(reach, axis=1)  # each series' earliest reachable cutoff
    sub = panel if ok.all() else panel.select(ok)
    return int(first[ok].min()), sub.drop_each(drops[first[ok]])


def history_frame(panel: Panel) -> pd.DataFrame:
    """The target of a panel in long format: `series_id, ds, y`, sorted (what realised accuracy and the
    plots read as actuals). Timestamps are rebuilt from each series' end on the panel's frequency."""
    from lstm_core.frequency import dates_before

    lengths = panel.lengths
    if panel.n_series == 0:
        dtype = pd.Series(panel.last_ds).dtype if len(panel.last_ds) else np.dtype("datetime64[ns]")
        return pd.DataFrame({"series_id": pd.Series([], dtype="string"), "ds": pd.Series([], dtype=dtype),
                             "y": pd.Series([], dtype="float64")})
    ds = dates_before(panel.last_ds, panel.freq, lengths)
    return pd.DataFrame({"series_id": pd.Series(np.repeat(panel.series_ids, lengths), dtype="string"),
                         "ds": pd.Series(ds).astype(pd.Series(panel.last_ds).dtype),
                         "y": panel.values[:, 0].astype(np.float64)})


def _window_frame(history: Panel, actual: np.ndarray, yhat: np.ndarray, snaive: np.ndarray,
                  horizon: int) -> pd.DataFrame:
    s = history.n_series
    dtype = pd.Series(history.last_ds).dtype
    ds = dates_after(history.last_ds, history.freq, horizon)
    return pd.DataFrame({
        "series_id": pd.Series(np.repeat(history.series_ids, horizon), dtype="string"),
        "cutoff": pd.Series(np.repeat(history.last_ds, horizon)).astype(dtype),
        "ds": pd.Series(ds.reshape(-1)).astype(dtype),
        "step": np.tile(np.arange(1, horizon + 1, dtype=np.int64), s),
        "y": actual.reshape(-1).astype(np.float64),
        "yhat": yhat.reshape(-1),
        "seasonal_naive": snaive.reshape(-1).astype(np.float64),
    })


def _empty_frame(panel: Panel) -> pd.DataFrame:
    dtype = pd.Series(panel.last_ds).dtype if len(panel.last_ds) else np.dtype("datetime64[ns]")
    return pd.DataFrame({"series_id": pd.Series([], dtype="string"), "cutoff": pd.Series([], dtype=dtype),
                         "ds": pd.Series([], dtype=dtype), "step": pd.Series([], dtype="int64"),
                         "y": pd.Series([], dtype="float64"), "yhat": pd.Series([], dtype="float64"),
                         "seasonal_naive": pd.Series([], dtype="float64")})
