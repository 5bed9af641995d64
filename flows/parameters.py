"""The flow's parameters as a contract: typed (the Prefect UI shows a form), documented, and checked.

- `RunSettings` is the configuration (lstm_core.config.ForecastConfig) with every setting optional,
  its sections likewise, its field descriptions and constraints kept and unknown keys refused. It
  is derived from the configuration, so a new setting is a new parameter field by itself.
- Settings that decide where data goes or where code runs (every `*_url`, `dask_address`,
  `storage_options`, and the `config_path` parameter) are fixed by the deployment: a run of a
  deployment may change one only if the deployment lists it in its own `allow_overrides`.
- Flow parameters are stored by the Prefect server, so `storage_options` in them may hold no
  secret-named value (keys, secrets, tokens stay in the config file or the environment).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator
from pydantic.json_schema import JsonDict

from lstm_core.config import ConfigError, ForecastConfig, format_validation_error, merge_settings
from lstm_core.secrets import SECRET_NAME_PARTS, SECRET_QUERY_NAMES, has_credentials, is_secret_name

# What a deployment fixes unless it opts in, setting by setting.
PROTECTED: tuple[str, ...] = ("config_path", *ForecastConfig.url_settings(), "dask_address", "storage_options")
# a Literal of the names computed above: a valid type at run time (pydantic checks it), not to mypy
Overridable = Literal[PROTECTED]  # type: ignore[valid-type]  # built from a runtime tuple


def _any_case(word: str) -> str:
    """`word` as an ECMA regex matching it in any case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_SECRET_WORDS = "|".join(_any_case(w) for w in SECRET_NAME_PARTS)
_QUERY_WORDS = "|".join(_any_case(w) for w in (*SECRET_NAME_PARTS, *sorted(SECRET_QUERY_NAMES)))
# What the Prefect UI's form (and a server enforcing the deployment's parameter schema) refuses before a run is
# created, so a secret typed into the form is never stored: secret-named storage options, and URLs carrying
# user-info or a credential query parameter. The flow refuses the same again (settings_dict), whoever skipped it.
NO_SECRET_KEYS: JsonDict = {"propertyNames": {"not": {"pattern": f"({_SECRET_WORDS})"}}}
NO_URL_CREDENTIALS: JsonDict = {"not": {"pattern": f"(^[A-Za-z][A-Za-z0-9+.-]*://[^/@\\s]+@)|([?&;][^=&#]*({_QUERY_WORDS})[^=&#]*=)"}}
_FORM_DESCRIPTIONS = {
    "storage_options": "fsspec options without credentials (endpoint_url, client_kwargs...): the Prefect server "
                       "stores every parameter, so keys, secrets and tokens are refused here; they belong in the "
                       "config file or the worker's environment",
}


def _optional(model: type[BaseModel], name: str, validators: dict | None = None) -> type[BaseModel]:
    """`model` with every field optional (default None) and its sections likewise; descriptions,
    constraints and value types kept; unknown keys refused. Storage options and URLs carry JSON Schema
    constraints that keep credentials out of the form (`NO_SECRET_KEYS`, `NO_URL_CREDENTIALS`)."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation: Any = info.annotation  # a type form built at run time (a model, Annotated, Literal...)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = _optional(annotation, annotation.__name__.replace("Config", "Settings"))
        elif info.metadata:
            annotation = Annotated[annotation, *info.metadata]
        extra: JsonDict | None = NO_SECRET_KEYS if field_name == "storage_options" else \
            NO_URL_CREDENTIALS if model is ForecastConfig and field_name.endswith("_url") else None
        fields[field_name] = (annotation | None, Field(None, description=_FORM_DESCRIPTIONS.get(
            field_name, info.description), json_schema_extra=extra))
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=model.__doc__,
                        __validators__=validators or {}, **fields)


def _no_secrets(value: Any, where: str = "storage_options") -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if is_secret_name(key) and not isinstance(inner, Mapping):
                raise ValueError(f"{where}.{key} looks like a secret, and flow parameters are stored by the "
                                 f"Prefect server: put it in the config file or the environment")
            _no_secrets(inner, f"{where}.{key}")


def _storage_options_without_secrets(cls, value):
    if value is not None:
        _no_secrets(value)
    return value


def _urls_without_credentials(cls, value):
    if value is not None and has_credentials(value):
        raise ValueError("its URL carries credentials (user-info or a signed query string), and flow parameters "
                         "are stored by the Prefect server: put the URL in the config file or the environment")
    return value


RunSettings = _optional(ForecastConfig, "RunSettings", {
    "no_secrets": field_validator("storage_options")(_storage_options_without_secrets),
    "no_url_credentials": field_validator(*ForecastConfig.url_settings())(_urls_without_credentials)})
RunSettings.__doc__ = ("Settings of this run, over the deployment's and the config file's (leave a field empty "
                       "to keep theirs). Secrets never go here: parameters are stored by the Prefect server.")


def settings_dict(settings: Any) -> dict[str, Any]:
    """The settings a run passed, checked against RunSettings, as nested plain values (only those it set;
    None means 'not set here'). A bad one raises ConfigError naming the setting, as the configuration does."""
    if settings is None:
        return {}
    try:
        checked = settings if isinstance(settings, RunSettings) else RunSettings.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    return checked.model_dump(mode="json", exclude_unset=True)


def overrides_list(allow_overrides: Any) -> list[str]:
    """`allow_overrides` checked: a list of protected settings' names (ConfigError otherwise)."""
    try:
        return list(TypeAdapter(list[Overridable] | None).validate_python(allow_overrides) or [])
    except ValidationError as exc:
        raise ConfigError(f"parameter 'allow_overrides': each item must be one of {', '.join(PROTECTED)}; "
                          f"{exc.errors()[0]['msg']}") from None


def current_deployment():
    """The deployment the current flow run was created from (None outside deployments and flow runs)."""
    from prefect import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or run.deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        return client.read_deployment(run.deployment_id)


def deployment_settings(flow_name: str, config_path: str | None, given: Mapping[str, Any],
                        allow_overrides: Any) -> dict[str, Any]:
    """The settings of this run: in a deployment run, the deployment's `settings` with the run's (`given`)
    merged over them, after refusing (ConfigError, naming it) a run that changes a setting the deployment
    fixes (`check_overrides`); outside deployments, `given` itself.

    Every flow a deployment names calls this before it reads any setting: the one contract of all of them
    (tests/security/test_deployment_contract.py walks infra/prefect.yaml).
    """
    overrides_list(allow_overrides)
    deployment = current_deployment()
    if deployment is None:
        return dict(given)
    fixed = deployment.parameters or {}
    check_overrides(f"{flow_name}/{deployment.name}", fixed,
                    {"config_path": config_path, "settings": given, "allow_overrides": allow_overrides})
    return merge_settings(dict(fixed.get("settings") or {}), given)


def check_overrides(deployment: str, fixed: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse (ConfigError, naming the setting) a run of `deployment` that changes a protected setting the
    deployment does not list in `allow_overrides`.

    `fixed` and `given` are the deployment's parameters and the run's (`config_path`, `settings`,
    `allow_overrides`); settings absent from the run's own `settings` are the deployment's, unchanged.
    """
    allowed = list(fixed.get("allow_overrides") or [])
    if overrides_list(given.get("allow_overrides")) != allowed:
        raise ConfigError(f"parameter 'allow_overrides': fixed by the deployment {deployment} (it allows "
                          f"{allowed or 'no overrides'}); a run cannot change it")
    if given.get("config_path") != fixed.get("config_path") and "config_path" not in allowed:
        raise ConfigError(f"parameter 'config_path': fixed by the deployment {deployment}; a run may change it "
                          f"only if the deployment lists it in allow_overrides")
    base, run = dict(fixed.get("settings") or {}), settings_dict(given.get("settings"))
    for name in PROTECTED:
        if name == "config_path" or name not in run or name in allowed:
            continue
        if merge_settings(base, {name: run[name]}).get(name) != base.get(name):
            raise ConfigError(f"setting {name!r}: fixed by the deployment {deployment}; a run may change it only "
                              f"if the deployment lists it in allow_overrides")
