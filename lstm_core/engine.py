"""The modelling job end to end on a Panel: fit, forecast, evaluate against a holdout.

This is what a notebook user calls; the Prefect tasks wrap these functions.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np
import pandas as pd

from lstm_core import interrupt
from lstm_core.config import ForecastConfig
from lstm_core.covariates import CovariateSpec, StaticEncoder
from lstm_core.forecasting import recursive_forecast
from lstm_core.frequency import dates_after
from lstm_core.length_rules import length_rule, min_input, min_train_length
from lstm_core.model import build_lstm, model_geometry
from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler, TargetTransform
from lstm_core.seasonality import SeasonalIndices
from lstm_core.training import BatchHook, EpochHook, TrainingResult, train
from lstm_core.validation import ValidationResult
from lstm_core.windows import plan_windows, validation_span

log = logging.getLogger("lstm_core.engine")

SeriesHook = Callable[[int, int, str], None]  # (series done, series total, next series id)


@dataclass(frozen=True)
class ModelSpace:
    """A panel as the network sees it, and how to get back: transform -> deseasonalise -> scale."""

    panel: Panel  # scaled values
    transform: TargetTransform
    seasonal: SeasonalIndices
    scaler: SeriesScaler

    def to_original(self, z: np.ndarray, lengths: np.ndarray, series_ids: np.ndarray) -> np.ndarray:
        """Model-space target forecasts (S, H) continuing series of `lengths` points -> original units."""
        shaped = self.scaler.inverse_y(z.astype(np.float64), series_ids)
        return self.transform.inverse(self.seasonal.restore(shaped, lengths))

    def scale_future(self, future: np.ndarray, known: tuple[int, ...]) -> np.ndarray:
        """Known-ahead covariates (S, H, K) in original units -> scaled like their columns in the window."""
        cols = np.asarray(known, dtype=np.int64)
        rows = np.arange(future.shape[0])
        loc = self.scaler.loc[rows[:, None], cols][:, None, :]  # (S, 1, K)
        scale = self.scaler.scale[rows[:, None], cols][:, None, :]
        return (future - loc) / scale


@dataclass
class Forecaster:
    """A trained model: one or more Keras members (an ensemble) and how its inputs are shaped."""

    members: list[keras.Model]
    window: int
    feature_names: tuple[str, ...]
    scaler_kind: str
    training: dict[str, Any] = field(default_factory=dict)
    scaler: SeriesScaler | None = None  # fitted on the training part; kept for the record
    per_series: dict[str, Forecaster] | None = None  # mode 'per_series'
    target_transform: str = "none"
    static_encoder: StaticEncoder | None = None  # the static covariates' encoding fitted on the training series
    season_length: int = 1
    deseasonalize: str = "off"
    known: tuple[int, ...] = ()  # feature columns known ahead (future, calendar, static): inputs over each chunk

    @property
    def chunk(self) -> int:
        """Steps each recursive call forecasts (the network's output length; 1 with no members)."""
        return model_geometry(self.members[0])["chunk"] if self.members else 1

    @property
    def patch(self) -> int:
        """Window steps the LSTM reads at once (the span of its level layer); 1 without members."""
        return int(self.members[0].get_layer("level").span) if self.members else 1

    def adapt(self, panel: Panel) -> Panel:
        """`panel` with its static covariates encoded as this model was trained (its vocabulary)."""
        return panel.encode_static(self.static_encoder)

    def model_space(self, panel: Panel, pad_to: int | None = None, pad: np.ndarray | None = None) -> ModelSpace:
        """`panel` as the network sees it: log where chosen, seasonal profile removed, scaled per series,
        and series shorter than `pad_to` points (default: the window) padded at the front with their first
        value, so every series fills a window; `pad` (S,): rows of front padding per series instead.

        All three are fitted on the history given (never on what follows it), so a loaded model
        forecasts any series.
        """
        panel = self.adapt(panel)
        transform = TargetTransform.fit(panel, self.target_transform)
        shaped = transform.apply(panel)
        seasonal = SeasonalIndices.fit(shaped, self.season_length, self.deseasonalize, transform.log_mask)
        adjusted = seasonal.remove(shaped)
        scaler = SeriesScaler.fit(adjusted, self.scaler_kind)
        scaled = scaler.transform(adjusted)
        if pad is not None:
            scaled = scaled.pad_rows(pad)
        else:
            scaled = scaled.pad_front(self.window if pad_to is None else pad_to)
        return ModelSpace(scaled, transform, seasonal, scaler)

    def forecast(self, panel: Panel, horizon: int, future_covariates: np.ndarray | None = None) -> np.ndarray:
        """(S, H) forecasts in original units for each series of `panel` (its whole history is the input).

        Known-ahead columns (future, calendar, static) take their values after the end from
        `future_covariates` (S, H, K) when given, else from `panel.future`; historic columns carry their
        last value forward. Transform, seasonal profile and scaling are refitted on the history given, so a
        loaded model forecasts any series. Raises ValueError for data of other features.
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
        space = self.model_space(panel)
        windows = space.panel.last_values(self.window).astype(np.float32)  # (S, window, F)
        future = None
        if self.known:
            future = space.scale_future(panel.known_ahead(horizon), self.known)  # (S, H, K)
        z = recursive_forecast(self.members, windows, horizon, future, self.known)
        return space.to_original(z, panel.lengths, panel.series_ids)


def panel_of(result: ValidationResult, config: ForecastConfig) -> Panel:
    """The Panel of validated series, with the known-ahead values of the horizon after each series' end.

    `config` is resolved (its frequency known: `config.resolved(result.freq)` when the data named it);
    ConfigError otherwise. The configuration is resolved once, where the frequency becomes known, not here.
    """
    freq = config.resolved_values("panel_of").freq
    return Panel.from_frame(result.frame, freq, spec=CovariateSpec.from_config(config), future=result.future,
                            static=result.static, horizon=config.horizon)


def fit(panel: Panel, config: ForecastConfig, *, checkpoint_dir: str | None = None,
        on_epoch: EpochHook | None = None, time_budget_s: float | None = None,
        on_batch: BatchHook | None = None, on_series: SeriesHook | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), init: Forecaster | None = None) -> Forecaster:
    """Train on every point of `panel` (pass `panel.drop_last(H)` to keep a holdout).

    `init`: a warm start. Each ensemble member starts from the weights of `init`'s member trained with the
    same seed (its best epoch) instead of fresh ones, and trains for at most `training.warm_epochs` epochs
    with early stopping on the newest validation points; inputs are shaped as `init` shapes them (its
    window, features, static vocabulary, scaler kind). The optimiser starts afresh (Adam, the configured
    learning rate): saved models keep no optimiser state. Seeded like a full training, so it is reproducible
    on CPU.

    Hooks report progress: `on_epoch(epoch, logs)`, `on_batch(epoch, done, per_epoch)` and, in
    mode 'per_series', `on_series(done, total, series_id)` before each series' model. `callbacks`: further
    Keras callbacks for every member's training (e.g. tuning's pruning). Raises ValueError
    when no series is long enough to train, ConfigError when `config` is not resolved (resolve it once, where
    the frequency becomes known: `config.resolved(panel.freq)`).
    """
    _, season_length, window = config.resolved_values("training")
    need = min_train_length(config)  # the rule validation applies, without the holdout
    if panel.n_series and (panel.lengths < need).all():
        raise ValueError(f"no series is long enough to train: each needs {need} points before its holdout "
                         f"({length_rule(config)})")
    if config.mode == "per_series":
        return _fit_per_series(panel, config, checkpoint_dir, on_epoch, time_budget_s, on_batch, on_series,
                               callbacks)
    known = tuple(int(c) for c in panel.known_index)
    starts: list[keras.Model] = []
    if init is not None:
        panel = init.adapt(panel)  # its static vocabulary: the inputs the champion's network takes
        starts = _seed_members(init)
        config = config.model_copy(update={"training": config.training.model_copy(update={
            "epochs": config.training.warm_epochs, "patience": min(config.training.patience,
                                                                   config.training.warm_epochs)})})
    shaper = Forecaster([], window, tuple(panel.feature_names), config.scaler,
                        target_transform=config.target_transform, static_encoder=panel.static_encoder,
                        season_length=season_length, deseasonalize=config.model.deseasonalize, known=known)
    chunk, patch = config.chunk_length, config.patch_length
    # short series are padded so that every position with a real input point gives a training window; those
    # too short to spare validation points only train (windows.plan_windows)
    plan = plan_windows(panel.lengths, window, chunk, validation_span(config.validation_steps, chunk),
                        min_input(config))
    space = shaper.model_space(panel, pad=plan.pad)
    members, results = [], []
    n = config.training.ensemble_size
    budget = time_budget_s if time_budget_s is not None else (
        config.training.max_train_minutes * 60 if config.training.max_train_minutes else None)
    for i in range(n):
        interrupt.check()  # between ensemble members too (each member's batches check on their own)
        seed = config.seed + i
        keras.utils.set_random_seed(seed)
        if starts:  # a warm start: a copy of the champion's member of this seed (the last one for extra seeds)
            start = starts[min(i, len(starts) - 1)]
            model = keras.models.clone_model(start)
            model.set_weights(start.get_weights())
        else:
            model = build_lstm(window, panel.n_features, config.model.units, chunk=chunk, patch=patch,
                               n_future=len(known), dropout=config.model.dropout,
                               bidirectional=config.model.bidirectional,
                               level_normalization=config.model.level_normalization, seed=seed)
        member_budget = None if budget is None else budget / n
        result = train(model, space.panel, window=window, config=config.training,
                       validation_steps=config.validation_steps, seed=seed, chunk=chunk, known=known,
                       checkpoint_dir=checkpoint_dir, time_budget_s=member_budget, on_epoch=on_epoch,
                       on_batch=on_batch, callbacks=callbacks, plan=plan)
        results.append(result)
        members.extend(_snapshot_members(model, result))
    seasonal = space.seasonal
    summary = {
        "members": [r.summary() for r in results],
        "best_val_loss": float(np.mean([r.best_val_loss for r in results])),
        "seconds": float(sum(r.seconds for r in results)),
        "device": results[0].device,
        "cudnn": results[0].cudnn,
        "series": int(panel.n_series),
        "chunk": int(chunk),
        "patch": int(patch),
        "log_series": int(space.transform.log_mask.sum()),
        "deseasonalized_series": int(seasonal.active.sum()),
        "samples_per_second": float(np.mean([r.samples_per_second for r in results])),
        "gflops": float(np.mean([r.gflops for r in results])),
        **({"warm_start": True} if init is not None else {}),
    }
    not_deseasonalized = [r for r in seasonal.reasons if r]
    if config.model.deseasonalize != "off" and not_deseasonalized:
        log.info("deseasonalised %d of %d series (season %d); the others: %s", int(seasonal.active.sum()),
                 panel.n_series, season_length, _reason_counts(not_deseasonalized))
    return Forecaster(members, window, tuple(panel.feature_names), config.scaler, summary, space.scaler,
                      target_transform=config.target_transform, static_encoder=panel.static_encoder,
                      season_length=season_length, deseasonalize=config.model.deseasonalize, known=known)


def _reason_counts(reasons: list[str]) -> str:
    counts: dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    return "; ".join(f"{n} x {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _seed_members(init: Forecaster) -> list[keras.Model]:
    """The member of each seed of a trained ensemble (its best epoch): members are stored seed by seed, each
    seed's best first and then its other snapshots (`_snapshot_members`), as its training record counts."""
    firsts, at = [], 0
    for record in (init.training or {}).get("members") or [{}]:
        if at >= len(init.members):
            break
        firsts.append(init.members[at])
        at += max(1, len(record.get("snapshot_epochs") or [None]))
    return firsts or init.members[:1]


def _snapshot_members(model: keras.Model, result: TrainingResult) -> list[keras.Model]:
    """The trained model (best weights) plus copies holding the other best epochs' weights."""
    members = [model]
    for _, _, weights in result.snapshots[1:]:
        twin = keras.models.clone_model(model)
        twin.set_weights(weights)
        members.append(twin)
    return members


def _fit_per_series(panel: Panel, config: ForecastConfig, checkpoint_dir, on_epoch, time_budget_s, on_batch=None,
                    on_series=None, callbacks=()) -> Forecaster:
    each = {}
    global_cfg = config.model_copy(update={"mode": "global"})
    budget = None if time_budget_s is None else time_budget_s / max(panel.n_series, 1)
    for i, sid in enumerate(panel.series_ids):
        if on_series:
            on_series(i, panel.n_series, str(sid))
        each[sid] = fit(panel.select(panel.series_ids == sid), global_cfg, checkpoint_dir=checkpoint_dir,
                        on_epoch=on_epoch, time_budget_s=budget, on_batch=on_batch, callbacks=callbacks)
    losses = [f.training["best_val_loss"] for f in each.values()]
    summary = {"best_val_loss": float(np.mean(losses)), "series": int(panel.n_series),
               "seconds": float(sum(f.training["seconds"] for f in each.values())),
               "device": next(iter(each.values())).training["device"] if each else "CPU"}
    return Forecaster([], config.resolved_values("training").window, tuple(panel.feature_names), config.scaler,
                      summary, None, each, static_encoder=panel.static_encoder)


@dataclass
class Evaluation:
    """The holdout scored: actuals and forecasts per series (S, H), and the metrics table."""
    series_ids: np.ndarray
    actual: np.ndarray  # (S, H)
    forecasts: dict[str, np.ndarray]  # model name -> (S, H)
    metrics: pd.DataFrame

    def overall(self, model: str, metric: str) -> float:
        """The pooled value of `metric` for `model` (the row with no series id); NaN when absent."""
        m = self.metrics
        row = m[(m["model"] == model) & (m["metric"] == metric) & m["series_id"].isna()]
        return float(row["value"].iloc[0])


def predictions_frame(panel: Panel, yhat: np.ndarray, freq: str) -> pd.DataFrame:
    """Long frame of forecasts past each series' end: series_id, ds, step, yhat, cutoff."""
    s, h = yhat.shape
    ds = dates_after(panel.last_ds, freq, h)
    return pd.DataFrame({
        "series_id": pd.Series(np.repeat(panel.series_ids, h), dtype="string"),
        "ds": (pd.Series(ds.reshape(-1)).astype(pd.Series(panel.last_ds).dtype) if s
               else pd.Series([], dtype="datetime64[ns]")),
        "step": np.tile(np.arange(1, h + 1, dtype=np.int64), s),
        "yhat": yhat.reshape(-1).astype(np.float64),
        "cutoff": pd.Series(np.repeat(panel.last_ds, h)).astype(pd.Series(panel.last_ds).dtype),
    })
