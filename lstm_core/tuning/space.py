"""The search space of a study: which settings are tunable, their ranges (`default_space`, `tuning.space` over
it), and the flat tuned values <-> nested settings of the configuration.

Light (no Optuna, no Keras): the nightly run's `lstm_core.tuning.apply` checks a best.json against `tunable`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import JsonValue

from lstm_core.config import (
    ConfigError,
    ForecastConfig,
    merge_settings,
    names_a_setting,
    validate_config,
)
from lstm_core.tuning.records import Params, RangeSpec, Scalar, Settings

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

log = logging.getLogger("lstm_core.tuning")

LAYERS = "model.layers"  # not a setting: stacked LSTM layers, each of `model.units` units
# Settings a search space may hold: the network, its training, its input size and how the target is shaped.
TUNABLE_TOP = ("window", "scaler", "target_transform", "calendar_features")
TUNABLE_SECTIONS = ("model.", "training.")
NOT_TUNABLE = ("training.max_series", "training.max_train_minutes")  # budgets of a run, not its model


@dataclass(frozen=True)
class Dimension:
    """One tuned setting: `choices` (categorical), or a `low`..`high` range (int when both are ints), `log`
    scaled or in `step`s; `value` alone is a fixed setting (applied to every trial, never sampled)."""

    name: str
    choices: tuple[Scalar, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    value: Scalar = None

    @property
    def fixed(self) -> bool:
        """True for a fixed setting (no choices, no range)."""
        return self.choices is None and self.low is None

    @property
    def is_int(self) -> bool:
        """True for an integer range (`low`, `high` and `step` all ints)."""
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and \
            (self.step is None or isinstance(self.step, int))

    def suggest(self, trial: BaseTrial) -> Scalar:
        """This setting's value for `trial`: drawn by its sampler, or the fixed value."""
        if self.fixed:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None  # not fixed and no choices: a range
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def describe(self) -> RangeSpec | Scalar:
        """This dimension as `tuning.space` spells it (a fixed setting as its value)."""
        if self.fixed:
            return self.value
        if self.choices is not None:
            return {"choices": list(self.choices)}
        assert self.low is not None and self.high is not None
        out: RangeSpec = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def require_resolved(config: ForecastConfig) -> None:
    """Raise ConfigError unless the configuration knows its frequency (tuning needs its season and window)."""
    if not config.is_resolved:
        raise ConfigError("tuning needs the frequency: resolve the configuration from the data first "
                          "(config.resolved(panel.freq))")


def default_space(config: ForecastConfig) -> dict[str, RangeSpec]:
    """The default search space for a resolved configuration, as `tuning.space` spells it.

    Units and layers, dropout, learning rate (log scale), window (half to twice the configured input size),
    loss, batch size, deseasonalisation, chunk length (a quarter, half or all of the horizon) and ensemble size.
    Raises ConfigError for a configuration without its frequency.
    """
    require_resolved(config)
    h, w = config.horizon, cast(int, config.window)  # resolved: the window follows from the frequency
    windows: list[Scalar] = [*sorted({max(2, round(w * f)) for f in (0.5, 1.0, 1.5, 2.0)})]
    chunks: list[Scalar] = [*sorted({max(1, math.ceil(h / 4)), max(1, math.ceil(h / 2)), h})]
    return {
        "model.units": {"choices": [32, 64, 128]},
        LAYERS: {"low": 1, "high": 2},
        "model.dropout": {"low": 0.0, "high": 0.3},
        "training.learning_rate": {"low": 3e-4, "high": 3e-3, "log": True},
        "window": {"choices": windows},
        "training.loss": {"choices": ["mae", "huber", "mse"]},
        "training.batch_size": {"choices": [256, 512]},  # 128 costs twice the steps of 256 for no gain seen
        "model.deseasonalize": {"choices": ["auto", "off"]},
        "model.chunk": {"choices": chunks},
        "training.ensemble_size": {"choices": [1, 2]},
    }


def search_space(config: ForecastConfig) -> dict[str, Dimension]:
    """`default_space` with `tuning.space` over it: a key given replaces the default's range, a new key widens
    the space, `null` drops a key (the configuration's own value is used). Raises ConfigError naming the
    entry for a key that is not a tunable setting or a range that is not one."""
    spec: dict[str, object] = dict(default_space(config))
    for key, value in (config.tuning.space or {}).items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {name: _dimension(name, value) for name, value in spec.items()}


def tunable(name: str) -> bool:
    """A setting a search space (and a best.json) may hold: the network, its training and its input."""
    return name == LAYERS or ((name in TUNABLE_TOP or name.startswith(TUNABLE_SECTIONS)) and name not in NOT_TUNABLE
                              and names_a_setting(name))


def _dimension(name: str, value: object) -> Dimension:
    where = f"setting 'tuning.space.{name}'"
    if name != LAYERS and not tunable(name):
        raise ConfigError(f"{where}: not a tunable setting (model.*, training.*, {', '.join(TUNABLE_TOP)} or "
                              f"{LAYERS})")
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, Mapping):
        return Dimension(name, value=cast(Scalar, value))  # a plain value from YAML: a fixed setting
    unknown = set(value) - {"choices", "low", "high", "log", "step"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (use choices, or low/high with log or step)")
    if "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if any(not isinstance(c, (str, int, float, bool)) and c is not None for c in choices):
            hint = f"; for stacked layers use {LAYERS}" if name == "model.units" else ""
            raise ConfigError(f"{where}: each choice must be a number, a string, true/false or null{hint}")
        return Dimension(name, choices=tuple(choices))
    if "low" not in value or "high" not in value:
        raise ConfigError(f"{where}: give choices, or both low and high")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        raise ConfigError(f"{where}: low and high must be numbers with low <= high")
    if value.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0")
    return Dimension(name, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step"))


def settings_of(params: Mapping[str, JsonValue], config: ForecastConfig | None = None) -> Settings:
    """Flat tuned values (dotted names, `model.layers` included) -> nested settings of the configuration.

    `model.units` and `model.layers` become one list of units (layers x units); the one given alone takes
    the other from `config` (or 64 units, 1 layer without one).
    """
    flat: dict[str, Any] = dict(params)
    layers = flat.pop(LAYERS, None)
    if layers is not None or "model.units" in flat:
        units = flat.pop("model.units", None)
        if units is None:
            units = (config.model.units[0] if config is not None else 64)
        n = int(layers) if layers is not None else (len(config.model.units) if config is not None else 1)
        flat["model.units"] = [int(units)] * max(1, n)
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *sections, leaf = dotted.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    return nested


def apply_settings(config: ForecastConfig, settings: Mapping[str, JsonValue]) -> ForecastConfig:
    """`config` with nested `settings` over it, validated (ConfigError names a bad setting)."""
    return validate_config(merge_settings(config.model_dump(), settings))


def narrow_to_data(space: dict[str, Dimension], shortest: int) -> dict[str, Dimension]:
    """Window choices the data can use: none longer than the shortest series (`shortest` points), the rule a
    run with `tuned: latest` enforces. Raises ConfigError when no window choice is left."""
    dim = space.get("window")
    if dim is None:
        return space
    if dim.choices is not None:
        kept = tuple(c for c in dim.choices if _points(c) <= shortest)
        if not kept:
            raise ConfigError(f"setting 'tuning.space.window': every choice {list(dim.choices)} is longer than the "
                              f"shortest series ({shortest} points)")
        if len(kept) < len(dim.choices):
            log.info("window choices longer than the shortest series (%d points) left out: %s", shortest,
                     [c for c in dim.choices if _points(c) > shortest])
        return {**space, "window": Dimension("window", choices=kept)}
    if dim.low is not None and dim.high is not None:
        if dim.low > shortest:
            raise ConfigError(f"setting 'tuning.space.window': low {dim.low} is longer than the shortest series "
                              f"({shortest} points)")
        return {**space, "window": Dimension("window", low=dim.low, high=min(dim.high, shortest), log=dim.log,
                                             step=dim.step)}
    if _points(dim.value) > shortest:
        raise ConfigError(f"setting 'tuning.space.window': {dim.value} is longer than the shortest series "
                          f"({shortest} points)")
    return space


def _points(window: Scalar) -> int:
    """A window value (an int, or a number YAML gave) as points."""
    return int(cast(float, window))


def baseline_params(config: ForecastConfig, space: Mapping[str, Dimension]) -> Params:
    """The configuration's own values of the space's settings that the space can express (a choice, or within
    the range): a new study's first trial, so the study measures the settings it should beat."""
    out: Params = {}
    units = config.model.units
    for name, dim in space.items():
        if dim.fixed:
            continue
        value: Any
        if name == LAYERS:
            value = len(units)
        elif name == "model.units":
            if len(set(units)) != 1:
                continue
            value = units[0]
        elif name == "model.chunk":
            value = config.chunk_length
        elif name == "model.patch":
            value = config.patch_length
        else:
            value = config
            for part in name.split("."):
                value = getattr(value, part)
        in_range = dim.low is not None and dim.high is not None and isinstance(value, (int, float)) \
            and dim.low <= value <= dim.high
        if (dim.choices is not None and value in dim.choices) or in_range:
            out[name] = value
    return out
