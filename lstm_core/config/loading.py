"""Loading the configuration: defaults <- YAML file <- environment <- overrides <- `--set`, validated once.

`load_config` is the boundary every entry point (the CLI, a deployment's flow run, a benchmark) builds its
configuration at; the layers below take the `ForecastConfig` it returns. Environment variables
(`LSTM_FORECAST_<KEY>`, sections with `__`) are read only when they name a setting; a tuning result
(`best.yaml`) read as a configuration file may hold only the settings a tune writes.
"""
from __future__ import annotations

import logging
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lstm_core.config.schema import ForecastConfig, validate_config
from lstm_core.errors import ConfigError
from lstm_core.merging import merge_settings
from lstm_core.secrets import is_secret_name

__all__ = ["ENV_PREFIX", "NOT_SETTINGS", "TUNED_FILE_TOP", "TUNING_RESULT_FILE", "check_tuning_result",
           "env_overrides", "load_config", "names_a_setting", "parse_sets"]

ENV_PREFIX = "LSTM_FORECAST_"
# Variables with the prefix that the project reads for itself (not settings).
NOT_SETTINGS = {"LSTM_FORECAST_DEBUG", "LSTM_FORECAST_PROGRESS", "LSTM_FORECAST_MODEL_SIGNING_KEY",
                "LSTM_FORECAST_DASK_DASHBOARD"}
# The logger keeps the name of the single-module configuration: logging set-ups and filters name it.
log = logging.getLogger("lstm_core.config")


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
    for part in dotted.split("."):
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
        data = merge_settings(data, loaded)
    data = merge_settings(data, env_overrides(environ))
    if overrides:
        data = merge_settings(data, {k: v for k, v in overrides.items() if v is not None})
    data = merge_settings(data, parse_sets(sets))
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
        data = merge_settings(data, flat)
    return data

