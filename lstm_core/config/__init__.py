"""The one configuration object, `ForecastConfig`: defaults <- YAML file <- environment <- flags.

Everything a run needs is here and validated before any work starts, so a bad value stops the run with a
message naming the setting. The configuration is resolved once, at the boundary (the CLI, a flow run, a
notebook: `load_config`, then `resolved(freq)` once the data name the frequency), and the layers below take
the resolved object. By concern:

- `schema`: the top-level settings and how they agree (`ForecastConfig`, `validate_config`);
  `sections`: the `model`, `training`, `backtest` and `tuning` sections; `limits`: bounds of numeric settings.
- `loading`: from a file, the environment (`LSTM_FORECAST_*`) and `--set` (`load_config`).
- `defaults`: what follows from the frequency (season, window, chunk, patch).
- `identity`: the network and training settings, the model key (`ModelSpec`) and the config hash.
- `lstm_core.merging` (nested settings merged key by key) and `lstm_core.secrets` (redaction, the storage
  options a worker takes from its own process) lie below, shared with storage.

Import from here (`from lstm_core.config import ForecastConfig`); the names below are the package's face.
"""
from __future__ import annotations

from lstm_core.config.defaults import (
    default_season_length,
    default_window,
    frequency_defaults,
    natural_cycle,
    resolve_chunk,
    resolve_patch,
)
from lstm_core.config.identity import ModelSpec, NetworkSettings, TrainingSettings
from lstm_core.config.limits import (
    DASK_ADDRESS,
    MAX_LAYERS,
    MAX_MINUTES,
    MAX_SERIES,
    MAX_STEPS,
    MAX_UNITS,
    MAX_WINDOW,
)
from lstm_core.config.loading import (
    ENV_PREFIX,
    NOT_SETTINGS,
    TUNED_FILE_EXCLUDED,
    TUNED_FILE_SECTIONS,
    TUNED_FILE_TOP,
    TUNING_RESULT_FILE,
    check_tuning_result,
    env_overrides,
    load_config,
    names_a_setting,
    parse_sets,
)
from lstm_core.config.schema import (
    ForecastConfig,
    InputOptions,
    format_validation_error,
    validate_config,
)
from lstm_core.config.sections import (
    BacktestConfig,
    ModelConfig,
    TrainingConfig,
    TuningConfig,
)
from lstm_core.errors import ConfigError
from lstm_core.merging import merge_settings
from lstm_core.secrets import (
    hold_storage_options,
    redact,
    redact_url,
    with_environment_secrets,
)

__all__ = [
    "DASK_ADDRESS", "ENV_PREFIX", "MAX_LAYERS", "MAX_MINUTES", "MAX_SERIES", "MAX_STEPS", "MAX_UNITS", "MAX_WINDOW",
    "NOT_SETTINGS", "TUNED_FILE_EXCLUDED", "TUNED_FILE_SECTIONS", "TUNED_FILE_TOP", "TUNING_RESULT_FILE",
    "BacktestConfig", "ConfigError", "ForecastConfig", "InputOptions", "ModelConfig", "ModelSpec", "NetworkSettings",
    "TrainingConfig", "TrainingSettings", "TuningConfig", "check_tuning_result", "default_season_length",
    "default_window", "env_overrides", "format_validation_error", "frequency_defaults", "hold_storage_options",
    "load_config", "merge_settings", "names_a_setting", "natural_cycle", "parse_sets", "redact", "redact_url",
    "resolve_chunk", "resolve_patch", "validate_config", "with_environment_secrets",
]
