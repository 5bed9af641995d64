"""What a configuration's model is: the network settings (hashed into the model key), the training settings
(the retrain decision compares them) and the hash of the whole public configuration.

The model key and the config hash are contracts: saved models live under `models/<key>/` and a scheduled
run's id carries the hash (tests/lstm_core/test_config_identity.py pins both). `ForecastConfig` exposes these
as its methods (`network_settings`, `training_settings`, `model_key`, `model_spec`, `config_hash`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

if TYPE_CHECKING:
    from lstm_core.config.schema import ForecastConfig

__all__ = ["ModelSpec", "NetworkSettings", "TrainingSettings", "config_hash", "model_spec", "network_settings",
           "training_settings"]


class NetworkSettings(TypedDict):
    """The settings that define the network and what its inputs mean (JSON types; the model key hashes them)."""

    freq: str
    season_lengths: list[int]
    window: int
    scaler: str
    target_transform: str
    mode: str
    # every ModelConfig field (a new one counts at once), with chunk and patch resolved to integers
    model: dict[str, Any]
    covariates: dict[str, list[str]]  # role (historic, future, calendar, static) -> columns or features
    static_types: NotRequired[dict[str, str]]  # only when declared, so the keys of other models stay
    group: NotRequired[dict[str, str | None]]  # with group_column: {"column": ..., "value": ...} (ModelSpec)


class TrainingSettings(TypedDict):
    """How the weights are fitted: under retrain 'auto' a saved model trained otherwise is retrained."""

    loss: str
    learning_rate: float
    batch_size: int
    windows_per_series: int
    min_windows_per_epoch: int
    ensemble_size: int
    snapshots: int
    validation_steps: int | None
    seed: int


def network_settings(config: ForecastConfig) -> NetworkSettings:
    """The settings that define the network and what its inputs mean; they make up the model key.

    Left out on purpose: the horizon (the model forecasts recursively, one step at a time, so any horizon
    uses the same network) and how the weights were fitted (`training_settings`). Raises ConfigError when
    the configuration is not resolved (its frequency unknown).
    """
    config.require_resolved("the model key")
    settings: NetworkSettings = {
        "freq": str(config.freq),
        "season_lengths": list(config.season_lengths),
        "window": int(config.window or 0),
        "scaler": config.scaler,
        "target_transform": config.target_transform,
        "mode": config.mode,
        "model": {**config.model.model_dump(), "chunk": config.chunk_length, "patch": config.patch_length},
        "covariates": config.covariate_roles(),
    }
    if config.static_types:  # how a static covariate is encoded (one-hot or standardised)
        settings["static_types"] = dict(sorted(config.static_types.items()))
    return settings


def training_settings(config: ForecastConfig) -> TrainingSettings:
    """How the weights are fitted: under retrain 'auto' a saved model trained otherwise is retrained.

    Budgets and stopping rules (epochs, patience, max_train_minutes, max_series) are left out: they
    bound a training, they do not ask for a different one. Validation steps count only when set.
    """
    t = config.training
    return {"loss": t.loss, "learning_rate": t.learning_rate, "batch_size": t.batch_size,
            "windows_per_series": t.windows_per_series, "min_windows_per_epoch": t.min_windows_per_epoch,
            "ensemble_size": t.ensemble_size,
            "snapshots": t.snapshots, "validation_steps": t.validation_steps, "seed": config.seed}


def model_spec(config: ForecastConfig, group: str | None = None) -> ModelSpec:
    """The frozen specification of `config`'s model (of `group` with `group_column`): with `group_column`,
    each group has its own model, so the column and the group's value are hashed in."""
    fields = network_settings(config)
    if config.group_column is not None:
        fields["group"] = {"column": config.group_column, "value": group}
    return ModelSpec(json.dumps(fields, sort_keys=True, default=str), group, config)


def config_hash(config: ForecastConfig) -> str:
    """12 hex digits: a stable hash of the resolved public configuration (secrets redacted, run_id left out)."""
    data = config.public_dict()
    data.pop("run_id", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


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

    def settings(self) -> NetworkSettings:
        """The network settings (and group) as a dict."""
        loaded: NetworkSettings = json.loads(self.network)
        return loaded
