"""The modelling job end to end on a Panel: fit, forecast, evaluate against a holdout.

This is what a notebook user calls; the Prefect tasks wrap these functions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd

from lstm_core.config import ForecastConfig
from lstm_core.covariates import CovariateSpec, StaticEncoder
from lstm_core.forecasting import ensemble_forecast
from lstm_core.frequency import dates_after
from lstm_core.metrics import mase_scale, metrics_frame, seasonal_naive
from lstm_core.model import build_lstm
from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler, TargetTransform
from lstm_core.training import BatchHook, EpochHook, TrainingResult, train
from lstm_core.validation import ValidationResult, min_train_length, validate_for

log = logging.getLogger("lstm_core.engine")

SeriesHook = Callable[[int, int, str], None]  # (series done, series total, next series id)


@dataclass
class Forecaster:
    """A trained model: one or more Keras members (an ensemble) and how they were made."""

    members: list[keras.Model]
    window: int
    feature_names: tuple[str, ...]
    scaler_kind: str
    training: dict[str, Any] = field(default_factory=dict)
    scaler: SeriesScaler | None = None  # fitted on the training part; kept for the record
    per_series: dict[str, "Forecaster"] | None = None  # mode 'per_series'
    target_transform: str = "none"
    static_encoder: StaticEncoder | None = None  # the static covariates' encoding fitted on the training series

    def adapt(self, panel: Panel) -> Panel:
        """`panel` with its static covariates encoded as this model was trained (its vocabulary)."""
        return panel.encode_static(self.static_encoder)

    def model_space(self, panel: Panel, horizon: int = 0) -> tuple[Panel, SeriesScaler, TargetTransform]:
        """`panel` as the network sees it: known-ahead columns one step ahead (each window holds the known
        inputs of the step it predicts), transformed (log where chosen), then scaled per series.

        Both are fitted on the history given, so a loaded model forecasts any series.
        """
        return self._space(self.adapt(panel).lead_known(horizon))

    def _space(self, led: Panel) -> tuple[Panel, SeriesScaler, TargetTransform]:
        transform = TargetTransform.fit(led, self.target_transform)
        shaped = transform.apply(led)
        scaler = SeriesScaler.fit(shaped, self.scaler_kind)
        return scaler.transform(shaped), scaler, transform

    def forecast(self, panel: Panel, horizon: int, future_covariates: np.ndarray | None = None) -> np.ndarray:
        """(S, H) forecasts in original units for each series of `panel` (its whole history is the input).

        Known-ahead columns (future, calendar, static) take their values after the end from
        `future_covariates` (S, H, K) when given, else from `panel.future`; historic columns carry their
        last value forward. Scaling is refitted on the history given, so a loaded model forecasts any series.
        """
        panel = self.adapt(panel)
        if future_covariates is not None:
            panel = replace(panel, future=np.asarray(future_covariates, dtype=np.float64))
        if tuple(panel.feature_names) != tuple(self.feature_names):
            raise ValueError(f"model expects features {self.feature_names}, data has {panel.feature_names}")
        if self.per_series is not None:
            out = np.zeros((panel.n_series, horizon))
            for i, sid in enumerate(panel.series_ids):
                out[i] = self.per_series[sid].forecast(panel.select(panel.series_ids == sid), horizon)[0]
            return out
        led = panel.lead_known(horizon)
        scaled, scaler, transform = self._space(led)
        windows = scaled.last_values(self.window).astype(np.float32)
        fut = None
        if panel.n_features > 1:
            rows = np.arange(panel.n_series)
            fut = (led.covariate_path(horizon) - scaler.loc[rows, None, 1:]) / scaler.scale[rows, None, 1:]
        z = ensemble_forecast(self.members, windows, horizon, fut)
        return transform.inverse(scaler.inverse_y(z.astype(np.float64), panel.series_ids))


def prepare(df: pd.DataFrame, config: ForecastConfig, source: str | None = None,
            errors: str = "skip") -> tuple[Panel, ValidationResult]:
    """Validate a long frame and pack it into a Panel (its frequency inferred when `config.freq` is unset:
    `panel.freq`, and `config.resolved(panel.freq)` is the configuration it implies)."""
    result = validate_for(df, config, source=source, errors=errors)
    if not config.is_resolved:
        config = config.resolved(result.freq)
    return panel_of(result, config), result


def panel_of(result: ValidationResult, config: ForecastConfig) -> Panel:
    """The Panel of validated series, with the known-ahead values of the horizon after each series' end."""
    if not config.is_resolved:
        config = config.resolved(result.freq)
    return Panel.from_frame(result.frame, config.freq, spec=CovariateSpec.from_config(config), future=result.future,
                            static=result.static, horizon=config.horizon)


def fit(panel: Panel, config: ForecastConfig, *, checkpoint_dir: str | None = None,
        on_epoch: EpochHook | None = None, time_budget_s: float | None = None,
        on_batch: BatchHook | None = None, on_series: SeriesHook | None = None) -> Forecaster:
    """Train on every point of `panel` (pass `panel.drop_last(H)` to keep a holdout).

    Hooks report progress: `on_epoch(epoch, logs)`, `on_batch(epoch, done, per_epoch)` and, in
    mode 'per_series', `on_series(done, total, series_id)` before each series' model.
    """
    if not config.is_resolved:
        config = config.resolved(panel.freq)
    need = min_train_length(config)  # the rule validation applies, without the holdout
    if panel.n_series and (panel.lengths < need).all():
        raise ValueError(f"no series is long enough to train: each needs {need} points before its holdout "
                         f"(window {config.window} + validation {config.validation_steps} + 1)")
    if config.mode == "per_series":
        return _fit_per_series(panel, config, checkpoint_dir, on_epoch, time_budget_s, on_batch, on_series)
    shaper = Forecaster([], config.window, tuple(panel.feature_names), config.scaler,
                        target_transform=config.target_transform)
    scaled, scaler, _ = shaper.model_space(panel)
    skip_lag = config.skip_lag
    if skip_lag is None:
        skip_lag = choose_skip_lag(scaled, config.season_length, config.validation_steps)
        log.info("seasonal skip: %s", f"lag {skip_lag}" if skip_lag else "off (naive beats seasonal naive)")
    members, results = [], []
    n = config.training.ensemble_size
    budget = time_budget_s if time_budget_s is not None else (
        config.training.max_train_minutes * 60 if config.training.max_train_minutes else None)
    for i in range(n):
        seed = config.seed + i
        keras.utils.set_random_seed(seed)
        model = build_lstm(config.window, panel.n_features, config.model.units, config.model.dropout,
                           config.model.bidirectional, config.model.level_normalization, skip_lag,
                           seed=seed)
        member_budget = None if budget is None else budget / n
        result = train(model, scaled, window=config.window, config=config.training,
                       validation_steps=config.validation_steps, seed=seed, checkpoint_dir=checkpoint_dir,
                       time_budget_s=member_budget, on_epoch=on_epoch, on_batch=on_batch)
        results.append(result)
        members.extend(_snapshot_members(model, result))
    summary = {
        "members": [r.summary() for r in results],
        "best_val_loss": float(np.mean([r.best_val_loss for r in results])),
        "seconds": float(sum(r.seconds for r in results)),
        "device": results[0].device,
        "cudnn": results[0].cudnn,
        "series": int(panel.n_series),
        "skip_lag": int(skip_lag),
        "log_series": int(TargetTransform.fit(panel, config.target_transform).log_mask.sum()),
    }
    return Forecaster(members, config.window, tuple(panel.feature_names), config.scaler, summary, scaler,
                      target_transform=config.target_transform, static_encoder=panel.static_encoder)


def _snapshot_members(model: keras.Model, result: TrainingResult) -> list[keras.Model]:
    """The trained model (best weights) plus copies holding the other best epochs' weights."""
    members = [model]
    for _, _, weights in result.snapshots[1:]:
        twin = keras.models.clone_model(model)
        twin.set_weights(weights)
        members.append(twin)
    return members


def choose_skip_lag(scaled: Panel, season_length: int, steps: int) -> int:
    """Season length if seasonal naive beats naive on the series' last `steps` points, else 0.

    A data-driven choice: strong regular seasonality (hourly, daily) gains from the seasonal
    base; weak or shifting seasonality (weekly retail) loses to the last value.
    """
    m = season_length
    if m <= 1:
        return 0
    usable = scaled.lengths >= m + steps + 1
    if not usable.any():
        return 0
    panel = scaled.select(usable)
    history = panel.drop_last(steps)
    actual = panel.last_values(steps)[:, :, 0]
    scale = mase_scale(history, 1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)

    def error(fc: np.ndarray) -> float:
        return float(np.nanmean(np.mean(np.abs(actual - fc), axis=1) / scale))

    return m if error(seasonal_naive(history, steps, m)) < error(seasonal_naive(history, steps, 1)) else 0


def _fit_per_series(panel, config, checkpoint_dir, on_epoch, time_budget_s, on_batch=None,
                    on_series=None) -> Forecaster:
    each = {}
    global_cfg = config.model_copy(update={"mode": "global"})
    budget = None if time_budget_s is None else time_budget_s / max(panel.n_series, 1)
    for i, sid in enumerate(panel.series_ids):
        if on_series:
            on_series(i, panel.n_series, str(sid))
        each[sid] = fit(panel.select(panel.series_ids == sid), global_cfg, checkpoint_dir=checkpoint_dir,
                        on_epoch=on_epoch, time_budget_s=budget, on_batch=on_batch)
    losses = [f.training["best_val_loss"] for f in each.values()]
    summary = {"best_val_loss": float(np.mean(losses)), "series": int(panel.n_series),
               "seconds": float(sum(f.training["seconds"] for f in each.values())),
               "device": next(iter(each.values())).training["device"] if each else "CPU"}
    return Forecaster([], config.window, tuple(panel.feature_names), config.scaler, summary, None, each,
                      static_encoder=panel.static_encoder)


@dataclass
class Evaluation:
    series_ids: np.ndarray
    actual: np.ndarray  # (S, H)
    forecasts: dict[str, np.ndarray]  # model name -> (S, H)
    metrics: pd.DataFrame

    def overall(self, model: str, metric: str) -> float:
        m = self.metrics
        row = m[(m["model"] == model) & (m["metric"] == metric) & m["series_id"].isna()]
        return float(row["value"].iloc[0])


def evaluate(forecaster: Forecaster, panel: Panel, config: ForecastConfig, model_name: str = "lstm",
             future_covariates: np.ndarray | None = None) -> Evaluation:
    """Forecast the last H points of each series from what precedes them; score it and seasonal naive.

    The holdout takes the same covariate path as the published forecast: known-ahead columns at their
    true values over the last H points (`drop_last` keeps them), historic ones carried forward.
    """
    if not config.is_resolved:
        config = config.resolved(panel.freq)
    h = config.horizon
    history = panel.drop_last(h)
    actual = panel.last_values(h)[:, :, 0]
    forecasts = {
        model_name: forecaster.forecast(history, h, future_covariates),
        "seasonal_naive": seasonal_naive(history, h, config.season_length),
    }
    scale = mase_scale(history, config.season_length)
    return Evaluation(history.series_ids, actual, forecasts, metrics_frame(history.series_ids, actual, forecasts, scale))


def predictions_frame(panel: Panel, yhat: np.ndarray, freq: str) -> pd.DataFrame:
    """Long frame of forecasts past each series' end: series_id, ds, step, yhat, cutoff."""
    s, h = yhat.shape
    ds = dates_after(panel.last_ds, freq, h)
    return pd.DataFrame({
        "series_id": pd.Series(np.repeat(panel.series_ids, h), dtype="string"),
        "ds": pd.Series(ds.reshape(-1)).astype(pd.Series(panel.last_ds).dtype) if s else pd.Series([], dtype="datetime64[ns]"),
        "step": np.tile(np.arange(1, h + 1, dtype=np.int64), s),
        "yhat": yhat.reshape(-1).astype(np.float64),
        "cutoff": pd.Series(np.repeat(panel.last_ds, h)).astype(pd.Series(panel.last_ds).dtype),
    })
