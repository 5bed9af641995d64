"""Tasks that train or load the model, forecast and evaluate."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core import artifacts
from lstm_core.config import ForecastConfig
from lstm_core.engine import Evaluation, Forecaster, fit, predictions_frame
from lstm_core.metrics import mase_scale, metrics_frame, seasonal_naive
from lstm_core.model_store import Decision, decide_for
from lstm_core.progress import Progress
from lstm_core.storage import join
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, call_with_retries, retry_transient
from tasks.data import Prepared


def model_store_url(config: ForecastConfig) -> str:
    return join(config.output_url, "models")


@dataclass
class ModelChoice:
    forecaster: Forecaster  # scores the holdout (trained up to T - H)
    final: Forecaster  # forecasts past T (the same model unless refit)
    decision: Decision
    version: str
    group: str | None = None


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
                        features: tuple[str, ...] | None = None) -> ModelChoice:
    """The model of one group (the only one without `group_column`).

    `prepared` is the training data: a bounded sample of the group's series. Under retrain
    'never' it may be None; `features` then names the inputs the saved model must take.
    """
    logger = get_run_logger()
    store = model_store_url(config)
    key = config.model_key(group)
    label = f"group {group!r}: " if config.group_column is not None else ""
    if config.mode == "per_series":
        decision = Decision("train", "mode 'per_series' trains one model per series on every run")
    else:
        decision = decide_for(config, store, prepared.train_panel if prepared is not None else None, group)
    logger.info("%smodel decision: %s (%s)", label, decision.action, decision.reason)
    if decision.action == "load":
        loaded = decision.loaded
        return ModelChoice(loaded.forecaster, loaded.forecaster, decision, loaded.metadata["version"], group)

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
        return ModelChoice(forecaster, final, decision, f"per-series-{prepared.fingerprint[:12]}", group)
    version = artifacts.new_version()  # fixed across retries: a retry rewrites the same objects
    call_with_retries(artifacts.save, final, store, key, config=config.public_dict(),
                      fingerprint=prepared.fingerprint, storage_options=config.storage_options, version=version,
                      extra={"group": group} if config.group_column is not None else None,
                      what="saving the model")
    logger.info("%ssaved model %s/%s/%s", label, "models", key, version)
    return ModelChoice(forecaster, final, decision, version, group)


@dataclass
class Forecasts:
    holdout: np.ndarray  # (S, H) forecasts of the last H points, from T - H
    future: pd.DataFrame  # predictions past T, long format


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(choice: ModelChoice, prepared: Prepared, config: ForecastConfig) -> Forecasts:
    logger = get_run_logger()
    h = config.horizon
    panel = prepared.panel
    if panel.n_series == 0:  # a shard whose series were all skipped
        empty = predictions_frame(panel, np.zeros((0, h)), config.freq).assign(model_version=choice.version)
        return Forecasts(np.zeros((0, h)), empty)
    # One covariate path for both: known-ahead values from the panels (the true ones over the holdout,
    # the given future rows past the end), historic covariates carried forward.
    holdout = choice.forecaster.forecast(prepared.train_panel, h)
    future = choice.final.forecast(panel, h)
    frame = predictions_frame(panel, future, config.freq).assign(model_version=choice.version)
    logger.info("forecast %d series x %d steps", panel.n_series, h)
    return Forecasts(holdout, frame)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(forecasts: Forecasts, choice: ModelChoice, prepared: Prepared, config: ForecastConfig) -> Evaluation:
    logger = get_run_logger()
    h, history = config.horizon, prepared.train_panel
    actual = prepared.panel.last_values(h)[:, :, 0]
    fc = {choice.version: forecasts.holdout, "seasonal_naive": seasonal_naive(history, h, config.season_length)}
    metrics = metrics_frame(history.series_ids, actual, fc, mase_scale(history, config.season_length))
    ev = Evaluation(history.series_ids, actual, fc, metrics)
    for name in fc:
        logger.info("holdout %s: MAE %.4f sMAPE %.3f MASE %.4f", "lstm" if name == choice.version else name,
                    ev.overall(name, "mae"), ev.overall(name, "smape"), ev.overall(name, "mase"))
    return ev

