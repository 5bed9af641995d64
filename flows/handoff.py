"""The configuration a caller built, handed to the flow it calls in the same process (the CLI path).

`lstm-forecast run`, `tune` and `demo` build and validate the ForecastConfig once, before any work. The flow
they then call runs with that very object: Prefect 3 runs a synchronous flow called directly in the caller's
thread (`flow_engine.run_flow_sync` calls the body through `call_with_parameters`), so a ContextVar set around
the call is what the body sees. Secrets stay in the object: nothing goes through the process environment, and
the flow run's recorded parameters are `run_parameters(config)`, the public part of the same object.

A deployment run (a worker or `lstm-forecast serve` starts the flow from its stored parameters) has no handed
configuration: it builds its own from `config_path` (re-read at every run) and its settings.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypedDict

from flows.parameters import settings_dict
from lstm_core.config import ForecastConfig
from lstm_core.secrets import has_credentials


class FlowParameters(TypedDict):
    """The parameters a run's flow is called with (and the Prefect server records)."""

    config_path: str | None  # the config file the caller read, recorded (the flow does not re-read it)
    settings: dict[str, Any]  # `public_settings`: JSON values of the settings the run set, nested by section


@dataclass(frozen=True)
class _Handed:
    config: ForecastConfig
    parameters: FlowParameters


_HANDED: ContextVar[_Handed | None] = ContextVar("lstm_forecast_handed_config", default=None)


def public_settings(config: ForecastConfig) -> dict[str, Any]:
    """The settings of `config` that may become flow parameters (the Prefect server stores those).

    Every setting the file, the environment or the flags set (`exclude_unset`, so a flag that sets a value
    back to its default is recorded too), as JSON values; without `storage_options` and without any URL
    setting that carries credentials (user-info or a signed query string).
    """
    settings = config.model_dump(mode="json", exclude={"storage_options"}, exclude_unset=True)
    for name in config.url_settings():
        if has_credentials(getattr(config, name)):
            settings.pop(name, None)
    return settings


def run_parameters(config: ForecastConfig, config_path: str | None) -> FlowParameters:
    """The flow's parameters for a run of `config`: `config_path` (recorded, not re-read) and its public
    settings."""
    return FlowParameters(config_path=config_path, settings=public_settings(config))


@contextmanager
def handing(config: ForecastConfig, config_path: str | None = None) -> Iterator[FlowParameters]:
    """Hand `config` to the flow called in this `with` block; yields the parameters to call it with.

    >>> with handing(config, args.config) as parameters:
    ...     manifest = batch_forecast(**parameters)
    """
    parameters = run_parameters(config, config_path)
    token = _HANDED.set(_Handed(config, parameters))
    try:
        yield parameters
    finally:
        _HANDED.reset(token)


def handed_config(config_path: str | None, settings: Mapping[str, Any]) -> ForecastConfig | None:
    """The configuration handed to this flow call, or None (a deployment run, or a flow called directly).

    `settings` are the flow's `settings` parameter as checked (`flows.parameters.settings_dict`). A flow
    called inside `handing` with parameters other than those it yielded is a programming error: the run's
    record would not describe the configuration it ran with (RuntimeError).
    """
    handed = _HANDED.get()
    if handed is None:
        return None
    if config_path != handed.parameters["config_path"] or \
            dict(settings) != settings_dict(handed.parameters["settings"]):
        raise RuntimeError("the flow was called with parameters other than those of the configuration handed "
                           "to it: call it with the parameters `handing(...)` yields")
    return handed.config
