"""The one configuration object: defaults <- YAML file <- environment <- flags.

Everything a run needs is here and validated before any work starts, so a bad
value stops the run with a message naming the setting.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import pandas as pd
import yaml
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lstm_core.errors import ConfigError
from lstm_core.secrets import MASK, has_credentials, is_secret_name, scrub, without_secrets
from lstm_core.storage import DEFAULT_MISSING, Location

if TYPE_CHECKING:
    from lstm_core.layout import OutputLayout

__all__ = ["ConfigError", "ForecastConfig", "ModelConfig", "TrainingConfig", "TuningConfig", "default_season_length",
           "default_window", "load_config", "validate_config"]

ENV_PREFIX = "LSTM_FORECAST_"
# Variables with the prefix that the project reads for itself (not settings).
NOT_SETTINGS = {"LSTM_FORECAST_DEBUG", "LSTM_FORECAST_PROGRESS", "LSTM_FORECAST_MODEL_SIGNING_KEY",
                "LSTM_FORECAST_DASK_DASHBOARD"}
DASK_ADDRESS = r"^(tcp|tls)://[^\s/:]+:[0-9]{1,5}$"
# Upper bounds of numeric settings: far above any real job, low enough that a planted or mistyped value fails
# validation at once (a horizon of 1e8 took seconds to validate; epochs of 1e9 or 1e6 units would never end).
MAX_STEPS = 100_000  # horizon, seasons, chunk, patch, backtest step, max_gap, validation steps
MAX_WINDOW = 1_000_000  # input steps per window
MAX_UNITS, MAX_LAYERS = 4_096, 16  # LSTM units per layer, stacked layers
MAX_SERIES = 100_000_000  # max_series, shard_size
MAX_MINUTES = 10_080.0  # a week: max_train_minutes, tuning.minutes
log = logging.getLogger("lstm_core.config")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
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
        "series modelled as log, additive otherwise), 'multiplicative' (skips series with zeros or negatives), 'additive', 'off'")

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


class TrainingConfig(_Strict):
    epochs: int = Field(100, ge=1, le=100_000, description="epoch cap")
    batch_size: int = Field(256, ge=1, le=2**20, description="windows per batch (Adam)")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Adam learning rate")
    loss: Literal["mse", "mae", "huber"] = Field("mae", description="training loss")
    patience: int = Field(15, ge=1, le=100_000, description="early-stopping patience, in epochs")
    windows_per_series: int = Field(128, ge=1, le=1_000_000, description="random training windows per series per epoch")
    min_windows_per_epoch: int = Field(
        32_768, ge=0, le=100_000_000, description="draw more windows per series when the panel is small, so an epoch has at least "
        "this many (never more than the panel's distinct windows); 0 = off")
    validation_steps: int | None = Field(None, ge=1, le=MAX_STEPS,
                                         description="validation targets per series (default: horizon)")
    max_train_minutes: float | None = Field(None, gt=0, le=MAX_MINUTES, description="wall-clock training budget")
    ensemble_size: int = Field(1, ge=1, le=64, description="models trained with consecutive seeds and averaged")
    snapshots: int = Field(5, ge=1, le=64, description="weights of the best epochs kept and averaged as an ensemble")
    max_series: int | None = Field(
        10_000, ge=1, le=MAX_SERIES, description="train each model on at most this many series (a stable hash sample); null = all"
    )


class BacktestConfig(_Strict):
    windows: int = Field(3, ge=1, le=1_000, description="rolling-origin backtest windows (cutoffs) at the end of each series")
    step: int | None = Field(None, ge=1, le=MAX_STEPS, description="steps between consecutive cutoffs (default: horizon)")
    refit: bool = Field(False, description="retrain for each window instead of once before the earliest cutoff")


class TuningConfig(_Strict):
    study: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                       description="name of the tuning study (results under tuning/study=<name>/)")
    trials: int | None = Field(20, ge=1, le=100_000, description="trials per tune call (null: until the minutes are spent)")
    minutes: float | None = Field(None, gt=0, le=MAX_MINUTES, description="wall-clock budget of a tune call, in minutes")
    max_series: int | None = Field(
        500, ge=1, le=MAX_SERIES, description="tune on at most this many series (a stable hash sample); null = all")
    space: dict[str, Any] = Field(
        default_factory=dict, description="search space over the defaults (lstm_core.tuning.default_space): "
        "setting -> {low, high[, log, step]} or {choices: [...]} or a list of choices or one value; null drops it")
    pruning: bool = Field(True, description="stop unpromising trials early from their epoch validation losses")


class ForecastConfig(_Strict):
    """Settings of one batch forecasting job."""

    input_url: str = Field("data/demo/series.parquet",
                           description="Parquet file or hive-partitioned folder, any fsspec URL")
    output_url: str = Field("data/demo/output", description="where predictions, metrics, manifests and models go")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options (endpoint_url, client_kwargs...); credentials only in the "
        "config file or the environment, never in flow parameters or a form (the Prefect server stores those)")
    input_format: Literal["auto", "parquet", "csv"] = Field(
        "auto", description="'auto': CSV when the path (or every file of a folder) ends in .csv, else Parquet")
    id_column: str = Field("series_id", min_length=1, description="input column naming each series")
    time_column: str = Field("ds", min_length=1, description="input column holding each point's timestamp")
    target_column: str = Field("y", min_length=1, description="input column holding the value to forecast")
    columns: list[str] | None = Field(
        None, description="replaced by future_covariates / historic_covariates / static_covariates")
    future_covariates: list[str] = Field(
        default_factory=list, description="numeric columns known ahead: the input holds their values for the "
        "horizon after each series' last observed target (rows with the target empty)")
    historic_covariates: list[str] = Field(
        default_factory=list, description="numeric columns observed only up to the last target; carried forward "
        "(their last value) over the horizon")
    static_covariates: list[str] = Field(
        default_factory=list, description="columns constant per series, numeric or categorical (one-hot encoded)")
    calendar_features: Literal["auto", "on", "off"] | list[str] = Field(
        "auto", description="features of the timestamp used as known-ahead inputs: 'off', 'on' (those that suit "
        "the frequency), a list such as [hour, dayofweek], or 'auto' (see covariates.AUTO_CALENDAR)")
    filters: list[list[Any]] | None = Field(None, description="pyarrow filters, e.g. [['region', '==', 'eu']]")
    time_format: str | None = Field(
        None, description="how the time column is written when the file cannot say it: a strftime pattern such as "
        "'%d.%m.%Y' or '%m/%d/%Y', or 'epoch_s' / 'epoch_ms' for integers counting seconds / milliseconds since "
        "1970-01-01 UTC; unset: ISO-8601 and date orders only one reading fits (ambiguous ones are refused)")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field separator (';' for European "
                           "spreadsheet exports, '\\t' for TSV)")
    decimal: Literal[".", ","] = Field(".", description="decimal mark of numbers written as text (CSV)")
    thousands: Literal[",", ".", " ", "'", "_"] | None = Field(
        None, description="thousands separator of numbers written as text, dropped before reading; none unless set")
    missing_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MISSING), description="text read as a missing value in the target "
        "and numeric covariates (empty cells always are); other text there is refused, naming the row")
    static_types: dict[str, Literal["categorical", "numeric"]] = Field(
        default_factory=dict, description="type of a static covariate: 'categorical' (text, one-hot, whatever it "
        "looks like: postcodes, codes) or 'numeric' (standardised); undeclared: as stored (CSV stores text: "
        "categorical)")

    freq: str | None = Field(None, description="pandas frequency of the series; unset: inferred from the data")
    horizon: int = Field(24, ge=1, le=MAX_STEPS, description="steps to forecast (and the holdout length)")
    season_length: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="season in steps (default from freq); a list such as [24, 168] gives more seasons")
    extra_season_lengths: list[int] = Field(
        default_factory=list, description="the further seasons of a season_length list, kept for the model")
    window: int | None = Field(None, ge=2, le=MAX_WINDOW, description="input steps per window (input size); default: the smallest "
                               "multiple of the patch covering three horizons, the season and the frequency's "
                               "natural cycle (a week for hourly and daily data, a year for weekly, monthly, "
                               "quarterly data)")
    scaler: Literal["standard", "minmax", "naive"] = Field("naive", description="per-series scaling")
    target_transform: Literal["auto", "log", "none"] = Field(
        "auto", description="model log(y): 'auto' for series whose training values are all positive")
    gap_policy: Literal["fill", "skip", "error"] = Field("fill", description="what a gap in a series does")
    max_gap: int = Field(3, ge=0, le=MAX_STEPS, description="longest run of missing steps that 'fill' interpolates")
    mode: Literal["global", "per_series"] = Field("global", description="one model for all series, or one each")

    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="how it is trained")
    backtest: BacktestConfig = Field(default_factory=BacktestConfig, description="rolling-origin backtest windows")
    tuning: TuningConfig = Field(default_factory=TuningConfig, description="hyperparameter tuning (lstm-forecast tune)")
    tuned: Literal["off", "latest"] = Field(
        "off", description="'latest': use the newest best settings of the study tuning.study (its best.yaml under "
        "<output_url>/tuning/) over these settings")

    # --- prediction intervals -------------------------------------------
    levels: list[int | float] = Field(
        default_factory=lambda: [80, 95],
        description="prediction interval levels in percent (columns yhat_lo_<level>, yhat_hi_<level>); [] = none")
    interval_method: Literal["conformal", "conformal_log"] = Field(
        "conformal", description="conformal intervals from backtest residuals in units of each series' naive "
        "error ('conformal'), or relative (log-scale) residuals for positive series ('conformal_log')")

    retrain: Literal["auto", "always", "never"] = Field("auto", description="train, or load the saved model")
    max_model_age: timedelta = Field(timedelta(days=7), description="older models are retrained under 'auto'")
    degradation_tolerance: float = Field(
        0.5, ge=0, le=1_000, description="retrain when holdout error exceeds recorded validation error by this share"
    )
    refit: bool = Field(False, description="retrain on all data (no holdout) before the final forecast")
    model_version: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="use this saved model version (found under any key of the model store) instead of choosing")
    model_url: str | None = Field(
        None, description="use the saved model version at this URL (<store>/<model_key>/<version>)")
    max_model_bytes: int = Field(
        2**30, ge=1024, le=2**40, description="a saved model member larger than this (archive or unpacked) is not loaded")
    seed: int = Field(42, description="same data, config and seed give the same forecasts")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$",
                               description="name of the run's partition; re-running a run id replaces it")
    # --- night after night (lstm_core.as_of, lstm_core.catchup) ------------
    as_of: datetime | None = Field(
        None, description="run as the job would have run at this instant (ISO 8601, e.g. 2024-03-07T02:00Z; without "
        "an offset: the data's own clock): only rows with time <= as_of are read; names the run "
        "(asof-<UTC instant>-<hash>) unless run_id is set")
    schedule_interval: timedelta | None = Field(
        timedelta(days=1), gt=timedelta(0), description="time between the deployment's scheduled slots (its cron: "
        "'0 2 * * *' is 1 day): a scheduled run a whole interval late is superseded by the newer slot's run, which "
        "lists the missed slots; null: every run runs and none are listed")
    lease_ttl: timedelta = Field(
        timedelta(minutes=5), gt=timedelta(0),
        description="a run's lease on its run id expires this long after its last heartbeat",
    )

    # --- scale-out ------------------------------------------------------
    shard_size: int = Field(5_000, ge=1, le=MAX_SERIES, description="series per shard; each shard is read and forecast alone")
    shard_rows: int = Field(2_500_000, ge=1, le=10**10, description="rows per shard at most: long series, fewer per shard")
    shard_bytes: int = Field(
        256 * 2**20, ge=1, le=2**40, description="bytes per shard at most, uncompressed, of the columns read (from the "
        "Parquet metadata): wide or hostile files are split into more shards, a series alone over it is refused")
    group_column: str | None = Field(None, min_length=1, description="column naming each series' model group")
    workers: int | None = Field(None, ge=1, le=1_024, description="start a local Dask cluster of this many worker processes")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster")
    scratch_url: str | None = Field(None, description="where shard files go during a run (default <output_url>/_scratch)")

    @field_validator("as_of", mode="before")
    @classmethod
    def _iso_instant(cls, v: Any) -> Any:
        from lstm_core.as_of import parse_as_of

        return parse_as_of(v)

    @field_validator("freq")
    @classmethod
    def _known_freq(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            to_offset(v)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"unknown pandas frequency {v!r}") from exc
        return v

    @field_validator("time_format")
    @classmethod
    def _known_time_format(cls, v: str | None) -> str | None:
        if v is None or v in ("epoch_s", "epoch_ms"):
            return v
        if "%" not in v:
            raise ValueError(f"{v!r} is neither a strftime pattern (such as '%d.%m.%Y') nor epoch_s / epoch_ms")
        from datetime import datetime

        try:  # the pattern must read back what it writes
            sample = datetime(2023, 12, 31, 13, 45, 30)
            written = sample.strftime(v)
            datetime.strptime(written, v)
        except ValueError as exc:
            raise ValueError(f"{v!r} is not a usable strftime pattern: {exc}") from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_frequency(cls, data: Any) -> Any:
        """season_length from freq (a list gives further seasons), then window from freq, season and horizon.

        With freq unset, both wait for `resolved(freq)` once the data are seen.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        season = data.get("season_length")
        if isinstance(season, (list, tuple)):
            if not season:
                raise ValueError("season_length: an empty list; give one season or several, e.g. [24, 168]")
            if data.get("extra_season_lengths"):
                raise ValueError("give further seasons either as a season_length list or as extra_season_lengths")
            data["season_length"], data["extra_season_lengths"] = season[0], list(season[1:])
        if data.get("season_length") is None and data.get("freq") is not None:
            try:
                data["season_length"] = default_season_length(data["freq"])
            except (ValueError, TypeError):
                pass  # the freq validator names the bad value
        if not all(_in_bounds(data.get(k)) for k in ("horizon", "season_length")) or \
                not all(_in_bounds(v) for v in data.get("extra_season_lengths") or ()):
            return data  # the field validators name the value out of bounds (no default computed from it)
        if data.get("window") is None and data.get("season_length") is not None and data.get("freq") is not None:
            model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
            data["window"] = default_window(data["season_length"], data.get("horizon", 24), data["freq"],
                                            model.get("chunk", "auto"), model.get("patch", "auto"),
                                            data.get("extra_season_lengths") or ())
        return data

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int | float]) -> list[int | float]:
        bad = [x for x in v if not 0 < x < 100]
        if bad:
            raise ValueError(f"levels must lie strictly between 0 and 100 (percent), got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"levels must be unique, got {v}")
        if list(v) != sorted(v):
            raise ValueError(f"levels must be sorted ascending, got {v}")
        return v

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is not None and not re.match(DASK_ADDRESS, v):
            raise ValueError(f"{v!r} is not a Dask scheduler address like tcp://host:8786")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ForecastConfig":
        if self.workers is not None and self.dask_address is not None:
            raise ValueError("set either workers (a local Dask cluster) or dask_address (an existing one), not both")
        if self.workers is not None or self.dask_address is not None:
            # Task arguments are pickled to the Dask scheduler: they must carry no credentials.
            for name in self.url_settings():
                if has_credentials(getattr(self, name)):
                    raise ValueError(f"{name} carries credentials (user-info or a signed query string), which "
                                     f"would be sent to the Dask scheduler with every task: give the workers "
                                     f"credentials in their environment (AWS_*, LSTM_FORECAST_STORAGE_OPTIONS)")
        if self.columns is not None:
            raise ValueError("'columns' is replaced by declared roles: list each covariate under future_covariates "
                             "(known ahead), historic_covariates (observed only) or static_covariates")
        if self.model_version is not None and self.model_url is not None:
            raise ValueError("set either model_version or model_url, not both")
        if (self.model_version or self.model_url) and self.retrain == "always":
            raise ValueError("retrain 'always' contradicts a pinned model (model_version / model_url)")
        if (self.model_version or self.model_url) and (self.group_column or self.mode == "per_series"):
            raise ValueError("a pinned model (model_version / model_url) is one model: not with group_column "
                             "or mode 'per_series'")
        if any(not 1 <= m <= MAX_STEPS for m in self.extra_season_lengths):
            raise ValueError(f"extra_season_lengths must be from 1 to {MAX_STEPS:,}")
        sources = (self.id_column, self.time_column, self.target_column)
        if len(set(sources)) < 3:
            raise ValueError(f"id_column, time_column and target_column must differ (got {list(sources)})")
        if self.group_column in ("series_id", "ds", "y", *sources):
            raise ValueError(f"group_column cannot be {self.group_column!r}")
        seen: dict[str, str] = {}
        for role in ("future_covariates", "historic_covariates", "static_covariates"):
            for name in getattr(self, role):
                if name in seen:
                    raise ValueError(f"column {name!r} is declared twice ({seen[name]} and {role})")
                if name in sources or name in ("series_id", "ds", "y") or name == self.group_column:
                    raise ValueError(f"{role}: {name!r} is the id, time, target or group column, not a covariate")
                seen[name] = role
        undeclared = [c for c in self.static_types if c not in self.static_covariates]
        if undeclared:
            raise ValueError(f"static_types: {undeclared} are not static_covariates {self.static_covariates}")
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal cannot both be {self.decimal!r}")
        if self.delimiter in ('"', "\n", "\r"):
            raise ValueError(f"delimiter cannot be {self.delimiter!r}")
        if isinstance(self.calendar_features, list):
            from lstm_core.covariates import CALENDAR_FEATURES

            unknown = [c for c in self.calendar_features if c not in CALENDAR_FEATURES]
            if unknown or len(set(self.calendar_features)) < len(self.calendar_features):
                raise ValueError(f"calendar_features: unknown or repeated {unknown or self.calendar_features}; "
                                 f"choose from {list(CALENDAR_FEATURES)}")
        if self.window is not None and self.window % self.patch_length:
            raise ValueError(f"window ({self.window}) must be a multiple of the patch length ({self.patch_length}); "
                             "set model.patch to a divisor of the window")
        return self

    # --- crossing process boundaries ------------------------------------
    # Tasks on Dask workers get the configuration pickled through the scheduler. Whatever pickles it,
    # it carries no secret storage options; the process that unpickles it takes them from its own
    # memory or environment (a LocalCluster's workers hold the flow's, `hold_storage_options`;
    # an existing cluster's workers set it, or the AWS_* variables, themselves).
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        fields = dict(state["__dict__"])
        fields["storage_options"] = without_secrets(fields.get("storage_options") or {})
        return {**state, "__dict__": fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__["storage_options"] = with_environment_secrets(self.__dict__.get("storage_options") or {})

    # --- derived values -------------------------------------------------
    @property
    def is_resolved(self) -> bool:
        """True once the frequency is known (given, or inferred from the data by `resolved`)."""
        return self.freq is not None and self.season_length is not None and self.window is not None

    def resolved(self, freq: str) -> "ForecastConfig":
        """This configuration with `freq` set (inferred from the data) and the defaults that follow from it.

        Settings given explicitly are kept; an unset season_length and window are derived from `freq`.
        """
        if self.freq is not None and self.is_resolved:
            return self
        data = self.model_dump()
        data["freq"] = freq
        return validate_config(data)

    def _require_resolved(self, what: str, needs_freq: bool = True) -> None:
        known = self.is_resolved if needs_freq else self.season_length is not None
        if not known:
            raise ConfigError(f"{what} needs the frequency: set freq, or resolve it from the data first "
                              "(ForecastConfig.resolved(lstm_core.frequency.infer_frequency(frame)))")

    @property
    def season_lengths(self) -> tuple[int, ...]:
        """Every season in steps: season_length first (metrics and seasonal naive use it), then the others."""
        self._require_resolved("season_lengths", needs_freq=False)
        return (int(self.season_length), *self.extra_season_lengths)

    @property
    def validation_steps(self) -> int:
        return self.training.validation_steps or self.horizon

    @property
    def backtest_step(self) -> int:
        return self.backtest.step or self.horizon

    @property
    def scratch_root(self) -> str:
        return self.layout().scratch()

    def location(self, url: str) -> Location:
        """`url` bound to this configuration's storage options: how every part reaches storage."""
        return Location(url, self.storage_options)

    def layout(self) -> "OutputLayout":
        """Every path of the output contract under `output_url` (scratch under `scratch_url` when set)."""
        from lstm_core.layout import OutputLayout

        return OutputLayout(self.output_url, self.scratch_url)

    @property
    def chunk_length(self) -> int:
        """Steps forecast per recursive step (model.chunk resolved)."""
        return resolve_chunk(self.model.chunk, self.horizon)

    @property
    def patch_length(self) -> int:
        """Window steps per LSTM step (model.patch resolved)."""
        return resolve_patch(self.model.patch, self.chunk_length, self.window)

    def column_names(self) -> dict[str, str]:
        """Canonical name -> input column: {'series_id': id_column, 'ds': time_column, 'y': target_column}."""
        return {"series_id": self.id_column, "ds": self.time_column, "y": self.target_column}

    def read_columns(self) -> list[str]:
        """The input columns every shard reads, in input names: id, time, target, then the declared covariates.

        Nothing else is read from storage (the reader projects these columns); planning adds only the
        group column. Use this list wherever the bytes a shard will read are estimated.
        """
        return list(dict.fromkeys([self.id_column, self.time_column, self.target_column,
                                   *self.historic_covariates, *self.future_covariates, *self.static_covariates]))

    def input_options(self) -> dict[str, Any]:
        """How to read the input (`storage.read_series` and the shard planner take these keywords)."""
        return {"input_format": self.input_format, "names": self.column_names(),
                "numeric": [*self.historic_covariates, *self.future_covariates],
                "static": list(self.static_covariates), "delimiter": self.delimiter}

    def calendar(self) -> tuple[str, ...]:
        """The calendar features this run uses (the setting resolved for the frequency)."""
        from lstm_core.covariates import resolve_calendar_features

        self._require_resolved("calendar features")
        return resolve_calendar_features(self.calendar_features, self.freq)

    def covariate_roles(self) -> dict[str, list[str]]:
        """Declared covariates by role, and the calendar features: what the network takes besides y."""
        return {"historic": list(self.historic_covariates), "future": list(self.future_covariates),
                "calendar": list(self.calendar()), "static": list(self.static_covariates)}

    def network_settings(self) -> dict[str, Any]:
        """The settings that define the network and what its inputs mean; they make up the model key.

        Left out on purpose: the horizon (the model forecasts recursively, one step at a time, so any horizon
        uses the same network) and how the weights were fitted (`training_settings`).
        """
        self._require_resolved("the model key")
        return {
            "freq": self.freq,
            "season_lengths": list(self.season_lengths),
            "window": self.window,
            "scaler": self.scaler,
            "target_transform": self.target_transform,
            "mode": self.mode,
            "model": {**self.model.model_dump(), "chunk": self.chunk_length, "patch": self.patch_length},
            "covariates": self.covariate_roles(),
            # how a static covariate is encoded (one-hot or standardised): only when declared, so keys stay
            **({"static_types": dict(sorted(self.static_types.items()))} if self.static_types else {}),
        }

    def training_settings(self) -> dict[str, Any]:
        """How the weights are fitted: under retrain 'auto' a saved model trained otherwise is retrained.

        Budgets and stopping rules (epochs, patience, max_train_minutes, max_series) are left out: they
        bound a training, they do not ask for a different one. Validation steps count only when set.
        """
        t = self.training
        return {"loss": t.loss, "learning_rate": t.learning_rate, "batch_size": t.batch_size,
                "windows_per_series": t.windows_per_series, "min_windows_per_epoch": t.min_windows_per_epoch,
                "ensemble_size": t.ensemble_size,
                "snapshots": t.snapshots, "validation_steps": t.validation_steps, "seed": self.seed}

    def model_key(self, group: str | None = None) -> str:
        """Stable hash of the network settings: models under one key take the same inputs and are interchangeable.

        With `group_column`, each group has its own model: the column and the group's value are hashed in.
        """
        return self.model_spec(group).key

    def model_spec(self, group: str | None = None) -> "ModelSpec":
        """The frozen specification of this configuration's model (of `group` with `group_column`)."""
        fields = self.network_settings()
        if self.group_column is not None:
            fields["group"] = {"column": self.group_column, "value": group}
        return ModelSpec(json.dumps(fields, sort_keys=True, default=str), group, self)

    def config_hash(self) -> str:
        """Stable hash of the resolved public configuration (secrets redacted, run_id left out)."""
        data = self.public_dict()
        data.pop("run_id", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @classmethod
    def url_settings(cls) -> list[str]:
        """Every setting that names a storage location (input, output, scratch, models...): `*_url`."""
        return [name for name in cls.model_fields if name.endswith("_url")]

    def urls(self) -> list[str]:
        """The values of the URL settings that are set."""
        return [v for v in (getattr(self, name) for name in self.url_settings()) if v]

    def public_dict(self) -> dict[str, Any]:
        """The resolved configuration with secrets removed (for manifests, logs, artifacts).

        Storage options lose their secret-named values; every URL setting loses its user-info and
        credential query parameters (pre-signed and SAS URLs).
        """
        data = self.model_dump(mode="json")
        data["storage_options"] = redact(data["storage_options"])
        for name in self.url_settings():
            if data.get(name):
                data[name] = redact_url(data[name])
        return data



@dataclass(frozen=True)
class ModelSpec:
    """What changes the network, frozen: its hash is the model key.

    Two specs are equal when their networks are (same inputs, same architecture, same group), whatever
    else the run's configuration says; `config` rides along for how to train, forecast and store it.
    Build it with `ForecastConfig.model_spec(group)` (the configuration must be resolved).
    """

    network: str  # canonical JSON (sorted keys) of `ForecastConfig.network_settings()` and the group
    group: str | None = None
    config: ForecastConfig | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """16 hex digits: where the model's versions live in the store (`models/<key>/<version>/`)."""
        return hashlib.sha256(self.network.encode()).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        """The network settings (and group) as a dict."""
        return json.loads(self.network)


def default_season_length(freq: str) -> int:
    """The usual season of a pandas frequency, in steps.

    Hourly 24 (a day), daily 7 (a week), weekly 52, monthly 12, quarterly 4, yearly 1; sub-hourly steps
    a day's worth (15min: 96); business days 5; multiples (2h, 2D) the same span in their steps.
    """
    offset = to_offset(freq)
    name = offset.name.split("-")[0]
    n = max(int(getattr(offset, "n", 1) or 1), 1)
    day = pd.Timedelta(days=1)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        if step < day:
            return max(1, int(day // step))  # the day's cycle: hourly 24, 15min 96, 30s 2880
        if step == day:
            return 7
        return max(1, int(pd.Timedelta(weeks=1) // step)) if step < pd.Timedelta(weeks=1) else 1
    per_year = {"D": 7, "B": 5, "C": 5, "W": 52, "SM": 24, "SMS": 24, "ME": 12, "MS": 12, "BME": 12, "BMS": 12,
                "CBME": 12, "CBMS": 12, "QE": 4, "QS": 4, "BQE": 4, "BQS": 4, "YE": 1, "YS": 1, "BYE": 1, "BYS": 1}
    if name in ("D", "B", "C"):
        return max(1, per_year[name] // n) if per_year[name] % n == 0 else 1
    if name in per_year:
        m = per_year[name]
        return m // n if m % n == 0 and m // n > 1 else 1
    return 1


# Storage options (credentials included) handed to this process in memory: a LocalCluster's workers get the
# run's from the flow through a worker plugin over the cluster's TLS connections (flows/runners.py), never
# through their environment, which their child processes would inherit.
_HELD_STORAGE_OPTIONS: dict[str, Any] = {}


def hold_storage_options(options: Mapping[str, Any]) -> None:
    """Keep `options` in this process's memory: every configuration or Location unpickled here from now on
    gets them back (merged over what travelled), as from LSTM_FORECAST_STORAGE_OPTIONS."""
    _HELD_STORAGE_OPTIONS.clear()
    _HELD_STORAGE_OPTIONS.update(dict(options))


def _in_bounds(value: Any) -> bool:
    """A step count a default may be computed from (anything else is reported by the field validators)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_STEPS)


def with_environment_secrets(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`options` with the storage options of this process merged over them: those of its environment
    (LSTM_FORECAST_STORAGE_OPTIONS, JSON: the workers of an existing cluster set it themselves), then those
    held in memory (`hold_storage_options`: a LocalCluster's workers). How a worker gets the credentials a
    pickled configuration left behind."""
    raw = (os.environ if environ is None else environ).get(ENV_PREFIX + "STORAGE_OPTIONS")
    merged = dict(options)
    if raw:
        try:
            extra = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}STORAGE_OPTIONS is not JSON") from None
        if isinstance(extra, Mapping):
            merged = merge_settings(merged, extra)
    if _HELD_STORAGE_OPTIONS and environ is None:
        merged = merge_settings(merged, _HELD_STORAGE_OPTIONS)
    return merged


def resolve_chunk(chunk: Any, horizon: int) -> int:
    """'auto': half the horizon, rounded up, so a forecast is two recursive steps (one when H = 1)."""
    return int(chunk) if chunk != "auto" else max(1, -(-int(horizon) // 2))


def resolve_patch(patch: Any, chunk: int, window: int | None = None) -> int:
    """'auto': the chunk, so the network reads its input in the same pieces it writes its output; with a
    window that is not a multiple of the chunk, the largest divisor of the window below the chunk."""
    if patch != "auto":
        return int(patch)
    if window is None:
        return int(chunk)
    return max(d for d in range(1, min(int(chunk), int(window)) + 1) if window % d == 0)


def natural_cycle(freq: Any) -> int:
    """Steps in the longest regular cycle a window should see at this frequency: a day for data of minutes,
    a week for hourly and daily data, a year for weekly, monthly and quarterly data (1 when unknown)."""
    try:
        offset = to_offset(freq)
    except (TypeError, ValueError):
        return 1
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        span = pd.Timedelta("1D") if step < pd.Timedelta("1h") else pd.Timedelta("7D")
        return max(1, int(span // step)) if step <= span else 1
    name = offset.name.split("-")[0].upper()
    cycles = {"W": 52, "MS": 12, "ME": 12, "M": 12, "SMS": 24, "SME": 24, "QS": 4, "QE": 4, "Q": 4,
              "BQS": 4, "BQE": 4, "BMS": 12, "BME": 12, "B": 5, "C": 5}
    return cycles.get(name, 1)


def default_window(season_length: Any, horizon: Any, freq: Any = "h", chunk: Any = "auto", patch: Any = "auto",
                   extra_seasons: Any = ()) -> int:
    """The smallest multiple of the patch that covers three horizons, every season and the frequency's natural cycle.

    Three horizons and the cycles of the data let the network see the pattern it continues: a week for
    hourly data (which carry a weekly cycle besides the daily one), a year (52) for weekly data whatever
    season the user passes, so `--season 1` and `--season 52` see the same history.
    """
    try:
        m, h = max(1, int(season_length)), max(1, int(horizon))
        p = resolve_patch(patch, resolve_chunk(chunk, h))
    except (TypeError, ValueError):
        return 48  # the field validators report the bad value itself
    need = max(3 * h, m, *(int(e) for e in extra_seasons or ()), natural_cycle(freq))
    return max(p, p * -(-need // p))


def redact(options: Any) -> Any:
    """Replace values whose key looks secret with '***' and credentials inside URLs, recursively."""
    if isinstance(options, Mapping):
        return {
            k: (MASK if is_secret_name(k) and not isinstance(v, Mapping) else redact(v))
            for k, v in options.items()
        }
    if isinstance(options, list):
        return [redact(v) for v in options]
    if isinstance(options, str):
        return redact_url(options)
    return options


def redact_url(url: str) -> str:
    """Drop credentials embedded in a URL: user-info (`scheme://user:pass@host/...`, with or without the
    scheme) and credential query parameters (`X-Amz-Signature`, `X-Amz-Credential`, `sig`, `token`...)."""
    return scrub(url) if isinstance(url, str) else url


# --- loading ------------------------------------------------------------
def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"setting {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _parse_value(raw: str) -> Any:
    # YAML scalars give ints, floats, bools, null and lists ("[32, 32]") for free.
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def names_a_setting(dotted: str, model: type[BaseModel] | None = None) -> bool:
    """True when `dotted` (e.g. 'training.epochs', 'storage_options.key') is a setting of the configuration."""
    node: Any = model or ForecastConfig
    for i, part in enumerate(dotted.split(".")):
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return False
        field = node.model_fields.get(part)
        if field is None:
            return False
        node = field.annotation
        if typing.get_origin(node) is dict or node is dict:  # free-form (storage_options): any key below
            return True
    return True


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """LSTM_FORECAST_HORIZON=13, LSTM_FORECAST_TRAINING__EPOCHS=5 -> nested dict.

    Only variables that name a setting are read. Others with the prefix are ignored with a debug
    line: a platform may set them (Kubernetes adds LSTM_FORECAST_SERVICE_HOST for a Service named
    lstm-forecast), and the project's own switches (NOT_SETTINGS) are not settings.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if key in NOT_SETTINGS or not key.startswith(ENV_PREFIX) or len(key) == len(ENV_PREFIX):
            continue
        dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
        if not names_a_setting(dotted):
            section = dotted.split(".", 1)[0]
            if "." in dotted and names_a_setting(section):  # a section's own name: most likely a typo
                log.warning("ignoring environment variable %s: %r has no setting %r", key, section,
                            dotted.split(".", 1)[1])
            else:
                log.debug("ignoring environment variable %s: it names no setting", key)
            continue
        _set_dotted(out, dotted, _parse_value(raw))
    return out


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def merge_settings(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings: `override` wins key by key, sections merge."""
    return _merge(dict(base), override)


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ForecastConfig:
    """Build and validate the configuration: defaults <- YAML <- environment <- overrides <- --set."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            # Name the place, never quote the line: it may hold a credential.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: "
                              f"{getattr(exc, 'problem', None) or type(exc).__name__}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        if Path(path).name == TUNING_RESULT_FILE:
            check_tuning_result(loaded, str(path))
        data = _merge(data, loaded)
    data = _merge(data, env_overrides(environ))
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    data = _merge(data, parse_sets(sets))
    return validate_config(data)


# A tune writes <output_url>/tuning/study=<name>/best.yaml into the shared output store, where others can write
# too: read as a configuration (`run --config .../best.yaml`), a file of that name gives only the settings a
# tune writes (the tuned ones and the data settings they were tuned for); where data goes, where code runs and
# storage come from the run's own flags, file and environment.
TUNING_RESULT_FILE = "best.yaml"
TUNED_FILE_TOP = ("window", "scaler", "target_transform", "calendar_features", "freq", "horizon", "season_length",
                  "extra_season_lengths", "mode", "historic_covariates", "future_covariates", "static_covariates",
                  "seed")
TUNED_FILE_SECTIONS = ("model.", "training.")
TUNED_FILE_EXCLUDED = ("training.max_series", "training.max_train_minutes")  # a run's budgets, not its model


def check_tuning_result(settings: Mapping[str, Any], where: str) -> None:
    """Refuse (ConfigError naming the setting) a tuning result (`best.yaml`) that holds anything but tuned and
    data settings: never a URL, storage options, Dask, the model store or a run id."""
    def leaves(node: Mapping[str, Any], prefix: str = "") -> list[str]:
        out = []
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            out.extend(leaves(value, dotted + ".") if isinstance(value, Mapping) and value else [dotted])
        return out

    for dotted in leaves(settings):
        allowed = dotted in TUNED_FILE_TOP or dotted == "tuning.study" or \
            (dotted.startswith(TUNED_FILE_SECTIONS) and dotted not in TUNED_FILE_EXCLUDED)
        if not allowed:
            raise ConfigError(f"config file {where} is a tuning result ({TUNING_RESULT_FILE}): setting {dotted!r} is "
                              f"not one a tune writes; only the tuned settings (model.*, training.*, window...) "
                              f"and the data settings they were tuned for are read from it, and inputs, outputs, "
                              f"storage and Dask come from the run's own flags, file and environment")


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """`--set key=value` items (dotted keys for sections) as nested settings.

    A secret-named storage option is refused (ConfigError naming the key, never quoting the value): a command
    line is visible to every local user (`ps`) and kept in shell history; credentials belong in the environment
    or the config file. (A URL setting carrying credentials, as `--input` may, is redacted everywhere instead.)
    """
    data: dict[str, Any] = {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item.split('=', 1)[0]!r}: expected key=value")
        parts = key.strip().split(".")
        if parts[0] == "storage_options" and any(is_secret_name(p) for p in parts[1:]):
            raise ConfigError(f"--set {key.strip()}: a credential on the command line is visible to every local "
                              f"user (ps) and kept in shell history; put it in the environment (AWS_*, "
                              f"LSTM_FORECAST_STORAGE_OPTIONS) or the config file's storage_options")
        flat: dict[str, Any] = {}
        _set_dotted(flat, key.strip(), _parse_value(raw))
        data = _merge(data, flat)
    return data


def validate_config(data: Mapping[str, Any]) -> ForecastConfig:
    try:
        return ForecastConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"setting {where!r}: {msg}")
    return "invalid configuration: " + "; ".join(parts)
