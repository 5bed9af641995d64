"""The sections of the configuration: the network (`model`), its training, the backtest and tuning.

Strict pydantic models: an unknown key or a bad value is a validation error naming the setting. The
top-level settings and how they agree are `schema.ForecastConfig`, which holds one of each.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lstm_core.config.limits import (
    MAX_LAYERS,
    MAX_MINUTES,
    MAX_SERIES,
    MAX_STEPS,
    MAX_UNITS,
)

__all__ = ["BacktestConfig", "ModelConfig", "StrictSection", "TrainingConfig", "TuningConfig"]


class StrictSection(BaseModel):
    """A part of the configuration: an unknown key is refused and every assignment validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictSection):
    """The network: stacked LSTM layers, how they read the window (patch) and write the forecast (chunk)."""

    units: list[int] = Field(default_factory=lambda: [64], max_length=MAX_LAYERS,
                             description=f"LSTM units per stacked layer (at most {MAX_LAYERS} layers of {MAX_UNITS:,})")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each LSTM layer")
    bidirectional: bool = Field(False, description="wrap each LSTM layer in Bidirectional")
    level_normalization: bool = Field(
        True, description="make each window relative to its level (the mean of its last patch of values)")
    chunk: int | Literal["auto"] = Field(
        "auto", description="steps forecast per recursive step; 'auto': half the horizon, rounded up (1 = one-step "
        "recursion)")
    patch: int | Literal["auto"] = Field(
        "auto", description="window steps the LSTM reads at once (one LSTM step per patch); 'auto': the chunk (or "
        "the largest divisor of the window below it)")
    deseasonalize: Literal["auto", "multiplicative", "additive", "off"] = Field(
        "auto", description="remove each series' seasonal profile (fitted on its history) before the network and "
        "restore it after: 'auto' where the seasonality is strong (seasonal strength >= 0.6; multiplicative for "
        "series modelled as log, additive otherwise), 'multiplicative' (skips series with zeros or negatives), "
        "'additive', 'off'")

    @field_validator("units")
    @classmethod
    def _units_positive(cls, v: list[int]) -> list[int]:
        if not v or any(u <= 0 for u in v):
            raise ValueError("must be a non-empty list of positive integers")
        if any(u > MAX_UNITS for u in v):
            raise ValueError(f"at most {MAX_UNITS:,} units per layer")
        return v

    @field_validator("deseasonalize", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` (in a file, the environment or --set) as false
        return "off" if v is False else v

    @field_validator("chunk", "patch")
    @classmethod
    def _positive_or_auto(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= MAX_STEPS:
            raise ValueError(f"must be an integer from 1 to {MAX_STEPS:,}, or 'auto'")
        return v


class TrainingConfig(StrictSection):
    """How the network is trained: loss, optimiser, windows sampled, budgets and stopping rules."""

    epochs: int = Field(100, ge=1, le=100_000, description="epoch cap")
    batch_size: int = Field(256, ge=1, le=2**20, description="windows per batch (Adam)")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Adam learning rate")
    loss: Literal["mse", "mae", "huber"] = Field("mae", description="training loss")
    patience: int = Field(15, ge=1, le=100_000, description="early-stopping patience, in epochs")
    windows_per_series: int = Field(128, ge=1, le=1_000_000, description="random training windows per series per epoch")
    min_windows_per_epoch: int = Field(
        32_768, ge=0, le=100_000_000,
        description="draw more windows per series when the panel is small, so an epoch has at least "
        "this many (never more than the panel's distinct windows); 0 = off")
    validation_steps: int | None = Field(None, ge=1, le=MAX_STEPS,
                                         description="validation targets per series (default: horizon)")
    max_train_minutes: float | None = Field(None, gt=0, le=MAX_MINUTES, description="wall-clock training budget")
    ensemble_size: int = Field(1, ge=1, le=64, description="models trained with consecutive seeds and averaged")
    snapshots: int = Field(5, ge=1, le=64, description="weights of the best epochs kept and averaged as an ensemble")
    # issue 23: a warm start's budget (a budget, not a kind of training: left out of training_settings)
    warm_epochs: int = Field(5, ge=1, le=100_000, description="epoch cap of a warm start (fine-tuning the champion)")
    max_series: int | None = Field(
        10_000, ge=1, le=MAX_SERIES,
        description="train each model on at most this many series (a stable hash sample); null = all"
    )


class BacktestConfig(StrictSection):
    """The rolling-origin backtest: how many cutoffs, how far apart, and whether each refits."""

    windows: int = Field(3, ge=1, le=1_000,
        description="rolling-origin backtest windows (cutoffs) at the end of each series")
    step: int | None = Field(None, ge=1, le=MAX_STEPS,
        description="steps between consecutive cutoffs (default: horizon)")
    refit: bool = Field(False, description="retrain for each window instead of once before the earliest cutoff")


class TuningConfig(StrictSection):
    """Hyperparameter tuning (`lstm-forecast tune`): the study, its budget, its search space."""

    study: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                       description="name of the tuning study (results under tuning/study=<name>/)")
    trials: int | None = Field(20, ge=1, le=100_000,
        description="trials per tune call (null: until the minutes are spent)")
    minutes: float | None = Field(None, gt=0, le=MAX_MINUTES,
        description="wall-clock budget of a tune call, in minutes")
    max_series: int | None = Field(
        500, ge=1, le=MAX_SERIES, description="tune on at most this many series (a stable hash sample); null = all")
    space: dict[str, Any] = Field(
        default_factory=dict, description="search space over the defaults (lstm_core.tuning.default_space): "
        "setting -> {low, high[, log, step]} or {choices: [...]} or a list of choices or one value; null drops it")
    pruning: bool = Field(True, description="stop unpromising trials early from their epoch validation losses")
