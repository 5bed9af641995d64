"""Tasks that train or load the model, forecast and evaluate: thin wrappers over lstm_core.modelling."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core import modelling
from lstm_core.config import ForecastConfig
from lstm_core.model_store import ModelChoice, ModelRef, ModelStore
from lstm_core.modelling import Forecasts, Prepared, Scored, run_backtest
from lstm_core.statistical import StatisticalBacktest
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, retry_transient

__all__ = ["Forecasts", "ModelChoice", "Scored", "combine", "evaluate", "fit_statistical", "forecast", "open_model",
           "run_backtest", "train_or_load_model"]


# Retried for storage failures while deciding (listing or loading the model store); the save after
# training retries in place, so a storage hiccup never repeats the training.
@task(name="train_or_load_model", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def train_or_load_model(prepared: Prepared | None, config: ForecastConfig, group: str | None = None,
                        calibrate: bool = False) -> ModelChoice:
    """The model of one group (the only one without `group_column`): `lstm_core.modelling.get_or_train`."""
    choice, _ = modelling.get_or_train(ModelStore.of(config), config.model_spec(group), prepared,
                                       calibrate=calibrate, log=get_run_logger())
    return choice


@task(name="open_model", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def open_model(ref: ModelRef, config: ForecastConfig) -> ModelChoice:
    """The stored model version a group's training chose, opened by a shard (`ModelStore.open`)."""
    return ModelStore.of(config).open(ref, config, log=get_run_logger())


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(choice: ModelChoice, prepared: Prepared, config: ForecastConfig, save: bool = False) -> Forecasts:
    """The backtest windows and the published forecast past T, with its intervals (`save`: store intervals
    calibrated here beside a model trained in this run: a run of one shard)."""
    return modelling.forecast(choice, prepared, config, store=ModelStore.of(config) if save else None,
                              log=get_run_logger())


@task(name="fit_statistical", cache_policy=NO_CACHE)
def fit_statistical(prepared: Prepared, config: ForecastConfig) -> StatisticalBacktest:
    """AutoETS, AutoTheta and the naive forecasts of every series of the shard, on the network's backtest
    cutoffs and past T (`lstm_core.modelling.statistical`): each shard fits its own series."""
    return modelling.statistical(prepared, config, log=get_run_logger())


@task(name="combine", cache_policy=NO_CACHE)
def combine(forecasts: Forecasts | None, statistical: StatisticalBacktest, choice: ModelChoice | None,
            prepared: Prepared, config: ForecastConfig) -> Forecasts:
    """The served forecast of every series, chosen on backtest windows only (`lstm_core.modelling.combine`)."""
    return modelling.combine(forecasts, statistical, choice, prepared, config, log=get_run_logger())


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(forecasts: Forecasts, choice: ModelChoice | None, prepared: Prepared, config: ForecastConfig) -> Scored:
    """Score every backtest window of the model and of seasonal naive, with interval coverage and MSIS."""
    return modelling.score(forecasts, choice, prepared, config, log=get_run_logger())
