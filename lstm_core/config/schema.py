"""The schema of the one configuration object: what each setting is, its bounds and how settings agree.

`ForecastConfig` and its sections (`model`, `training`, `backtest`, `tuning`) are strict pydantic models:
an unknown key or a bad value is a validation error naming the setting (`validate_config` turns it into a
ConfigError). How a configuration is built from a file, the environment and flags is `loading`; what follows
from the frequency, `defaults`; the model key and config hash, `identity` (the methods here delegate).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pandas.tseries.frequencies import to_offset
from pydantic import Field, ValidationError, field_validator, model_validator

from lstm_core.config import identity
from lstm_core.config.defaults import frequency_defaults, resolve_chunk, resolve_patch
from lstm_core.config.limits import DASK_ADDRESS, MAX_SERIES, MAX_STEPS, MAX_WINDOW
from lstm_core.config.sections import (
    BacktestConfig,
    ModelConfig,
    StrictSection,
    TrainingConfig,
    TuningConfig,
)
from lstm_core.errors import ConfigError
from lstm_core.inputs import DEFAULT_MISSING
from lstm_core.location import Location
from lstm_core.secrets import (
    has_credentials,
    redact,
    redact_url,
    with_environment_secrets,
    without_secrets,
)

if TYPE_CHECKING:
    from lstm_core.config.identity import ModelSpec, NetworkSettings, TrainingSettings
    from lstm_core.layout import OutputLayout

__all__ = ["BacktestConfig", "ForecastConfig", "InputOptions", "ModelConfig", "TrainingConfig", "TuningConfig",
           "format_validation_error", "validate_config"]


class InputOptions(TypedDict):
    """How to read the input: the keywords `storage.read_series` and the shard planner take."""

    input_format: str  # 'auto', 'parquet' or 'csv'
    names: dict[str, str]  # canonical name (series_id, ds, y) -> the input's column
    numeric: list[str]  # historic and future covariates: numbers
    static: list[str]  # static covariates
    delimiter: str  # CSV field separator


class ForecastConfig(StrictSection):
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
        None, ge=1, le=MAX_STEPS,
        description="season in steps (default from freq); a list such as [24, 168] gives more seasons")
    extra_season_lengths: list[int] = Field(
        default_factory=list, description="the further seasons of a season_length list, kept for the model")
    window: int | None = Field(None, ge=2, le=MAX_WINDOW,
        description="input steps per window (input size); default: the smallest "
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
        default_factory=lambda: list[int | float]([80, 95]),
        description="prediction interval levels in percent (columns yhat_lo_<level>, yhat_hi_<level>); [] = none")
    interval_method: Literal["conformal", "conformal_log"] = Field(
        "conformal", description="conformal intervals from backtest residuals in units of each series' naive "
        "error ('conformal'), or relative (log-scale) residuals for positive series ('conformal_log')")

    retrain: Literal["auto", "always", "warm", "never"] = Field(
        "auto", description="auto: load the champion, warm-start it on newer data (gated) or retrain it when too old "
        "or degraded; always: full training; warm: warm-start the champion; never: load it")
    max_model_age: timedelta = Field(timedelta(days=7), description="older models are retrained under 'auto'")
    degradation_tolerance: float = Field(
        0.5, ge=0, le=1_000, description="retrain when the champion's gate MASE on the newest windows exceeds the one "
        "recorded when it was saved by this share"
    )
    # issue 23: the promotion gate and retention (README "Retrain or load")
    promotion_tolerance: float = Field(
        0.0, ge=0, le=1_000, description="a warm-started challenger is promoted when its gate MASE is at most the "
        "champion's x (1 + this)")
    keep_versions: int = Field(5, ge=1, le=100_000, description="newest model versions kept per key (besides the "
                                                                "champion and its lineage to the last full training)")
    refit: bool = Field(False, description="retrain on all data (no holdout) before the final forecast")
    model_version: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="use this saved model version (found under any key of the model store) instead of choosing")
    model_url: str | None = Field(
        None, description="use the saved model version at this URL (<store>/<model_key>/<version>)")
    max_model_bytes: int = Field(
        2**30, ge=1024, le=2**40,
        description="a saved model member larger than this (archive or unpacked) is not loaded")
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
    shard_size: int = Field(5_000, ge=1, le=MAX_SERIES,
        description="series per shard; each shard is read and forecast alone")
    shard_rows: int = Field(2_500_000, ge=1, le=10**10,
        description="rows per shard at most: long series, fewer per shard")
    shard_bytes: int = Field(
        256 * 2**20, ge=1, le=2**40, description="bytes per shard at most, uncompressed, of the columns read (from the "
        "Parquet metadata): wide or hostile files are split into more shards, a series alone over it is refused")
    group_column: str | None = Field(None, min_length=1, description="column naming each series' model group")
    workers: int | None = Field(None, ge=1, le=1_024,
        description="start a local Dask cluster of this many worker processes")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster")
    scratch_url: str | None = Field(None,
        description="where shard files go during a run (default <output_url>/_scratch)")

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

        With freq unset, both wait for `resolved(freq)` once the data are seen (`defaults.frequency_defaults`).
        """
        if not isinstance(data, dict):
            return data
        return frequency_defaults(data)

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
    def _consistent(self) -> ForecastConfig:
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
        if (self.model_version or self.model_url) and self.retrain in ("always", "warm"):
            raise ValueError("retrain 'always' or 'warm' contradicts a pinned model (model_version / model_url)")
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

    def resolved(self, freq: str) -> ForecastConfig:
        """This configuration with `freq` set (inferred from the data) and the defaults that follow from it.

        Settings given explicitly are kept; an unset season_length and window are derived from `freq`.
        """
        if self.freq is not None and self.is_resolved:
            return self
        data = self.model_dump()
        data["freq"] = freq
        return validate_config(data)

    def require_resolved(self, what: str, needs_freq: bool = True) -> None:
        """Raise ConfigError ("<what> needs the frequency...") unless the configuration is resolved (with
        `needs_freq` False: unless its season length is known). How the layers below the boundary refuse an
        unresolved configuration instead of resolving it again."""
        known = self.is_resolved if needs_freq else self.season_length is not None
        if not known:
            raise ConfigError(f"{what} needs the frequency: set freq, or resolve it from the data first "
                              "(ForecastConfig.resolved(lstm_core.frequency.infer_frequency(frame)))")

    @property
    def season_lengths(self) -> tuple[int, ...]:
        """Every season in steps: season_length first (metrics and seasonal naive use it), then the others."""
        self.require_resolved("season_lengths", needs_freq=False)
        return (int(self.season_length or 0), *self.extra_season_lengths)  # set: require_resolved checked it

    @property
    def validation_steps(self) -> int:
        """Validation targets per series: training.validation_steps, or the horizon."""
        return self.training.validation_steps or self.horizon

    @property
    def backtest_step(self) -> int:
        """Steps between consecutive backtest cutoffs: backtest.step, or the horizon."""
        return self.backtest.step or self.horizon

    @property
    def scratch_root(self) -> str:
        """Where shard files go during a run (`scratch_url`, or <output_url>/_scratch)."""
        return self.layout().scratch()

    def location(self, url: str) -> Location:
        """`url` bound to this configuration's storage options: how every part reaches storage."""
        return Location(url, self.storage_options)

    def layout(self) -> OutputLayout:
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

    def input_options(self) -> InputOptions:
        """How to read the input (`storage.read_series` and the shard planner take these keywords)."""
        return {"input_format": self.input_format, "names": self.column_names(),
                "numeric": [*self.historic_covariates, *self.future_covariates],
                "static": list(self.static_covariates), "delimiter": self.delimiter}

    def calendar(self) -> tuple[str, ...]:
        """The calendar features this run uses (the setting resolved for the frequency)."""
        from lstm_core.covariates import resolve_calendar_features

        self.require_resolved("calendar features")
        return resolve_calendar_features(self.calendar_features, str(self.freq))

    def covariate_roles(self) -> dict[str, list[str]]:
        """Declared covariates by role, and the calendar features: what the network takes besides y."""
        return {"historic": list(self.historic_covariates), "future": list(self.future_covariates),
                "calendar": list(self.calendar()), "static": list(self.static_covariates)}

    def network_settings(self) -> NetworkSettings:
        """The settings that define the network and what its inputs mean; they make up the model key
        (`identity.network_settings`: the horizon and how the weights were fitted are left out)."""
        return identity.network_settings(self)

    def training_settings(self) -> TrainingSettings:
        """How the weights are fitted: under retrain 'auto' a saved model trained otherwise is retrained
        (`identity.training_settings`: budgets and stopping rules are left out)."""
        return identity.training_settings(self)

    def model_key(self, group: str | None = None) -> str:
        """Stable hash of the network settings: models under one key take the same inputs and are interchangeable.

        With `group_column`, each group has its own model: the column and the group's value are hashed in.
        """
        return self.model_spec(group).key

    def model_spec(self, group: str | None = None) -> ModelSpec:
        """The frozen specification of this configuration's model (of `group` with `group_column`)."""
        return identity.model_spec(self, group)

    def config_hash(self) -> str:
        """Stable hash of the resolved public configuration (secrets redacted, run_id left out)."""
        return identity.config_hash(self)

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



def validate_config(data: Mapping[str, Any]) -> ForecastConfig:
    """`data` (nested settings) as a validated ForecastConfig; ConfigError naming every bad setting."""
    try:
        return ForecastConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line naming each setting at fault: "invalid configuration: setting 'horizon': ...; ..."."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"setting {where!r}: {msg}")
    return "invalid configuration: " + "; ".join(parts)
