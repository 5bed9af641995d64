"""Tasks that train or load the model, forecast and evaluate."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core import artifacts
from lstm_core.backtest import Backtest, WindowHook, backtest_from_config, backtest_metrics
from lstm_core.config import ForecastConfig
from lstm_core.engine import Evaluation, Forecaster, fit, predictions_frame
from lstm_core.errors import ArtifactError
from lstm_core.intervals import ConformalIntervals, load_intervals, save_intervals, with_intervals
from lstm_core.metrics import MetricTotals, interval_columns
from lstm_core.model_store import Decision, decide_for
from lstm_core.progress import Progress
from lstm_core.storage import join
from lstm_core.validation import min_train_length
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, call_with_retries, retry_transient
from tasks.data import Prepared


def model_store_url(config: ForecastConfig) -> str:
    return join(config.output_url, "models")


@dataclass
class ModelChoice:
    forecaster: Forecaster  # scores the backtest (trained on the data before its earliest cutoff)
    final: Forecaster  # forecasts past T (the same model unless refit)
    decision: Decision
    version: str
    group: str | None = None
    first_window: int = 0  # backtest windows before it precede the end of the training data: skipped
    intervals: ConformalIntervals | None = None  # saved beside the model version (None: calibrate in the run)
    model_key: str | None = None  # where the version is stored (None: not stored, mode per_series)


def _usable(intervals: ConformalIntervals | None, config: ForecastConfig) -> bool:
    """Saved intervals fit this run: same levels and method, calibrated for at least the horizon."""
    return (intervals is not None and tuple(intervals.levels) == tuple(float(v) for v in config.levels)
            and intervals.method == config.interval_method and intervals.horizon >= config.horizon)


def _saved_intervals(loaded, config: ForecastConfig, logger) -> ConformalIntervals | None:
    """The conformal quantiles saved beside a loaded model version, when they fit this run."""
    if not config.levels:
        return None
    store, key, version = loaded.url.rstrip("/").rsplit("/", 2)
    try:
        saved = load_intervals(store, key, version, config.storage_options)
    except ArtifactError as exc:  # a corrupt file is recalibrated from this run's backtest, not a failed run
        logger.warning("the saved intervals are not used: %s", exc)
        return None
    if saved is None:
        logger.info("model %s has no saved intervals: they are calibrated on this run's backtest", version)
    elif not _usable(saved, config):
        logger.info("model %s's saved intervals (levels %s, %s, %d steps) do not fit this run: recalibrated",
                    version, list(saved.levels), saved.method, saved.horizon)
        return None
    return saved


def _epoch_logger(logger, total: int):
    def hook(epoch: int, logs: dict) -> None:
        logger.info("epoch %d/%d loss=%.4f val_loss=%.4f", epoch, total, logs.get("loss", float("nan")),
                    logs.get("val_loss", float("nan")))
    return hook


class _TrainingProgress:
    """Feeds the engine's batch and series hooks to a terminal progress line (silent when not a terminal)."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.series = epochs, ""
        self.line = Progress()

    def on_series(self, done: int, total: int, series_id: str) -> None:
        self.series = f"series {done + 1}/{total} {series_id} "

    def on_batch(self, epoch: int, done: int, per_epoch: int) -> None:
        self.line.update(f"{self.series}epoch {epoch}/{self.epochs}", done, per_epoch, "batches")


# Retried for storage failures while deciding (listing or loading the model store); the save after
# training retries in place, so a storage hiccup never repeats the training.
# Retried for storage failures while deciding (listing or loading the model store); the save after
# training retries in place, so a storage hiccup never repeats the training.
@task(name="train_or_load_model", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def train_or_load_model(prepared: Prepared | None, config: ForecastConfig, group: str | None = None,
                        features: tuple[str, ...] | None = None, calibrate: bool = False) -> ModelChoice:
    """The model of one group (the only one without `group_column`).

    `prepared` is the training data: a bounded sample of the group's series. Under retrain
    'never' it may be None; `features` then names the inputs the saved model must take.
    A model trained here learns from the data before the earliest backtest cutoff
    (`prepared.train_panel`). `calibrate`: also backtest it on `prepared` and save the conformal
    intervals beside the model version (the training sample of a sharded run; a run of one shard
    calibrates on its own backtest instead). A loaded model brings the intervals saved beside it.
    """
    logger = get_run_logger()
    store = model_store_url(config)
    key = config.model_key(group)
    label = f"group {group!r}: " if config.group_column is not None else ""
    if config.mode == "per_series":
        decision = Decision("train", "mode 'per_series' trains one model per series on every run")
    else:
        # The degradation check scores a saved model on the newest data before the holdout (the last
        # backtest window), as it always did; training below uses only the data before the earliest cutoff.
        newest = prepared.panel.drop_last(config.horizon) if prepared is not None and prepared.panel.n_series else \
            (prepared.train_panel if prepared is not None else None)
        decision = decide_for(config, store, newest, group)
    logger.info("%smodel decision: %s (%s)", label, decision.action, decision.reason)
    if decision.action == "load":
        loaded = decision.loaded
        return ModelChoice(loaded.forecaster, loaded.forecaster, decision, loaded.metadata["version"], group,
                           intervals=_saved_intervals(loaded, config, logger),
                           model_key=loaded.metadata.get("model_key") or key)

    hook = _epoch_logger(logger, config.training.epochs)
    progress = _TrainingProgress(config.training.epochs)
    with progress.line:
        forecaster = fit(prepared.train_panel, config, on_epoch=hook, on_batch=progress.on_batch,
                         on_series=progress.on_series)
    logger.info("trained on %s (cuDNN eligible: %s) in %.1f s, best validation loss %.4f",
                forecaster.training["device"], forecaster.training.get("cudnn"), forecaster.training["seconds"],
                forecaster.training["best_val_loss"])
    final = forecaster
    if config.refit:
        logger.info("refitting on all data before the final forecast")
        with progress.line:
            final = fit(prepared.panel, config, on_epoch=hook, on_batch=progress.on_batch,
                        on_series=progress.on_series)
    if config.mode == "per_series":
        return ModelChoice(forecaster, final, decision, f"per-series-{prepared.fingerprint[:12]}", group,
                           first_window=prepared.first_window)
    version = artifacts.new_version()  # fixed across retries: a retry rewrites the same objects
    call_with_retries(artifacts.save, final, store, key, config=config.public_dict(),
                      fingerprint=prepared.fingerprint, storage_options=config.storage_options, version=version,
                      extra={"group": group} if config.group_column is not None else None,
                      what="saving the model")
    logger.info("%ssaved model %s/%s/%s", label, "models", key, version)
    choice = ModelChoice(forecaster, final, decision, version, group, first_window=prepared.first_window,
                         model_key=key)
    if calibrate and config.levels:
        bt = run_backtest(choice, prepared, config)
        if bt.intervals is not None:
            choice.intervals = bt.intervals
            call_with_retries(save_intervals, bt.intervals, store, key, version, config.storage_options,
                              what="saving the intervals")
            logger.info("%scalibrated intervals on the training sample's backtest (%d rows)", label, len(bt.frame))
    return choice


def run_backtest(choice: ModelChoice, prepared: Prepared, config: ForecastConfig,
                 on_window: WindowHook | None = None) -> Backtest:
    """The rolling-origin backtest of `prepared`'s series with the model that scores it: `choice.forecaster`
    (trained once before the earliest cutoff), or a model refit on each window's history
    (`backtest.refit`). A series joins a window when it has the history a holdout needs before its cutoff."""
    if config.backtest.refit:
        def fit_fn(history):
            return fit(history, config).forecast
        return backtest_from_config(prepared.panel, config, fit_fn=fit_fn, min_history=min_train_length(config),
                                    on_window=on_window)
    return backtest_from_config(prepared.panel, config, choice.forecaster.forecast,
                                min_history=min_train_length(config), first_window=choice.first_window,
                                on_window=on_window)


@dataclass
class Forecasts:
    backtest: Backtest  # every window's forecasts (the last one is the holdout), with held-out intervals
    future: pd.DataFrame  # predictions past T, long format, with the interval columns of `config.levels`
    intervals_source: str = "none"  # "model" (saved beside it), "run" (this shard's backtest) or "none"
    backtest_seconds: float = 0.0  # forecasting (and refitting) the backtest windows


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(choice: ModelChoice, prepared: Prepared, config: ForecastConfig, save: bool = False) -> Forecasts:
    """The backtest windows and the published forecast past T, with its intervals.

    The intervals are those saved beside the model when they fit the run (levels, method, horizon),
    else calibrated on this shard's backtest; `save`: store them beside a model trained in this run
    that has none yet (a run of one shard).
    """
    logger = get_run_logger()
    h = config.horizon
    panel = prepared.panel
    t0 = time.perf_counter()
    with Progress() as line:  # on a terminal: the backtest windows, then the forecast past T
        bt = run_backtest(choice, prepared, config, on_window=lambda done, n: line.update("backtest windows", done, n))
    seconds = time.perf_counter() - t0
    intervals, source = None, "none"
    if config.levels:
        if _usable(choice.intervals, config):
            intervals, source = choice.intervals, "model"
        elif bt.intervals is not None:
            intervals, source = bt.intervals, "run"
            if save and choice.model_key is not None and choice.decision.action == "train":
                call_with_retries(save_intervals, intervals, model_store_url(config), choice.model_key,
                                  choice.version, config.storage_options, what="saving the intervals")
    if panel.n_series == 0:  # a shard whose series were all skipped
        future = np.zeros((0, h))
    else:
        # One covariate path for the windows and the future: known-ahead values from the panel (the true
        # ones over each window, the given future rows past the end), historic covariates carried forward.
        with Progress() as line:
            line.update(f"forecast of {panel.n_series} series past their end", 0, 1)
            future = choice.final.forecast(panel, h)
    frame = predictions_frame(panel, future, config.freq).assign(model_version=choice.version)
    if config.levels:
        bounds = intervals.predict(panel, future) if intervals is not None and panel.n_series else \
            {c: np.full(future.shape, np.nan) for lv in config.levels for c in interval_columns(lv)}
        frame = with_intervals(frame, bounds)
    logger.info("forecast %d series x %d steps; backtest: %d windows, %d rows in %.1f s; intervals: %s",
                panel.n_series, h, config.backtest.windows, len(bt.frame), seconds, source)
    return Forecasts(bt, frame, source, seconds)


@dataclass
class Scored:
    """A shard's scores: the metrics table (per series and window, per series, per window, pooled)
    and what the flow pools over shards."""

    holdout: Evaluation  # the last window (today's holdout) of every series, for the plots
    metrics: pd.DataFrame  # `backtest_metrics` layout: series_id, metric, value, model, cutoff, window
    pooled: MetricTotals  # over every series and window, by model and metric
    per_window: MetricTotals  # by window, model and metric
    window_cutoffs: dict[int, Any] = field(default_factory=dict)  # window -> its latest cutoff

    @property
    def series_ids(self) -> np.ndarray:
        return self.holdout.series_ids


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(forecasts: Forecasts, choice: ModelChoice, prepared: Prepared, config: ForecastConfig) -> Scored:
    """Score every backtest window of the model and of seasonal naive, with interval coverage and MSIS."""
    logger = get_run_logger()
    bt = forecasts.backtest
    sums = bt.sums(choice.version)
    metrics = backtest_metrics(sums)  # the same as bt.metrics(), without summing the rows twice
    holdout = _holdout_of(bt, prepared, choice, config)
    latest = {int(w): c for w, c in bt.scales.groupby("window")["cutoff"].max().items()}
    scored = Scored(holdout, metrics, sums.totals(()), sums.totals(("window",)), latest)
    pooled = scored.pooled.finalize()
    for name in (choice.version, "seasonal_naive"):
        values = dict(zip(pooled.loc[pooled["model"] == name, "metric"], pooled.loc[pooled["model"] == name, "value"]))
        logger.info("backtest %s (%d windows): MAE %.4f sMAPE %.3f MASE %.4f%s",
                    "lstm" if name == choice.version else name, bt.windows, values.get("mae", np.nan),
                    values.get("smape", np.nan), values.get("mase", np.nan),
                    "".join(f" coverage_{k[9:]} {v:.3f}" for k, v in values.items() if k.startswith("coverage_")))
    return scored


def _holdout_of(bt: Backtest, prepared: Prepared, choice: ModelChoice, config: ForecastConfig) -> Evaluation:
    """The last window (every series has it: it is the holdout validation guarantees) as (S, H) arrays."""
    h = config.horizon
    ids = prepared.panel.series_ids
    window = bt.windows - 1
    rows = bt.frame.merge(bt.scales.loc[bt.scales["window"] == window, ["series_id", "cutoff"]],
                          on=["series_id", "cutoff"], how="inner")
    actual = np.full((len(ids), h), np.nan)
    fc = {choice.version: np.full((len(ids), h), np.nan), "seasonal_naive": np.full((len(ids), h), np.nan)}
    pos = pd.Index(ids.astype(str)).get_indexer(rows["series_id"].astype(str))
    step = rows["step"].to_numpy(np.int64) - 1
    ok = pos >= 0
    actual[pos[ok], step[ok]] = rows["y"].to_numpy(np.float64)[ok]
    fc[choice.version][pos[ok], step[ok]] = rows["yhat"].to_numpy(np.float64)[ok]
    fc["seasonal_naive"][pos[ok], step[ok]] = rows["seasonal_naive"].to_numpy(np.float64)[ok]
    return Evaluation(ids, actual, fc, pd.DataFrame())

