"""The model key and the config hash are contracts: saved models live under their key (`models/<key>/`) and a
scheduled run's id carries the hash, so moving or retyping the configuration code must not change either.

The values below were computed by the configuration before it was split by concern (issue 24 step 1, the
single-module `lstm_core/config.py` at 6c2af06); a change of a model key orphans every saved model of such a
setting, so the keys never change. The config hash covers every public setting, so it changes (once) when a
setting is added: issue 23 added `promotion_tolerance`, `keep_versions` and `training.warm_epochs` (and
`as_of`, `schedule_interval`), and the hashes below are those of that configuration.
"""
from __future__ import annotations

import pickle

import pytest

from lstm_core.config import validate_config

CASES = {
    "hourly_defaults": ({"freq": "h"}, "6535bb20fe1d8489", "6535bb20fe1d8489", "3378b691105c"),
    "weekly_tuned": ({"freq": "W", "horizon": 13, "season_length": [52, 4], "scaler": "standard",
                      "model": {"units": [32, 16], "chunk": 1, "dropout": 0.1},
                      "training": {"loss": "huber", "validation_steps": 5}, "seed": 7},
                     "0bb57271b3762bff", "0bb57271b3762bff", "6252ad296819"),
    "grouped_covariates": ({"freq": "D", "horizon": 14, "group_column": "region", "future_covariates": ["promo"],
                            "historic_covariates": ["temp"], "static_covariates": ["store"],
                            "static_types": {"store": "categorical"}, "calendar_features": ["dayofweek"],
                            "output_url": "s3://bucket/out", "run_id": "r1",
                            "storage_options": {"key": "AKIA", "secret": "s3cr3t-value",
                                                "endpoint_url": "http://localhost:9000"}},
                           "8440287b6a1cac5a", "b0234f16305ff37f", "1571045667e4"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_key_and_config_hash_are_those_of_the_single_module_configuration(name: str) -> None:
    data, key, group_key, config_hash = CASES[name]
    config = validate_config(data)
    assert config.model_key() == key
    assert config.model_key("north") == group_key
    assert config.config_hash() == config_hash
    # a configuration that crossed a process boundary (a Dask worker) names the same model
    assert pickle.loads(pickle.dumps(config)).model_key("north") == group_key


def test_network_and_training_settings_keep_their_shape() -> None:
    config = validate_config(CASES["weekly_tuned"][0])
    assert config.model_spec().network == (
        '{"covariates": {"calendar": [], "future": [], "historic": [], "static": []}, "freq": "W", "mode": "global", '
        '"model": {"bidirectional": false, "chunk": 1, "deseasonalize": "auto", "dropout": 0.1, '
        '"level_normalization": true, "patch": 1, "units": [32, 16]}, "scaler": "standard", "season_lengths": [52, 4], '
        '"target_transform": "auto", "window": 52}')
    assert config.training_settings() == {
        "loss": "huber", "learning_rate": 0.001, "batch_size": 256, "windows_per_series": 128,
        "min_windows_per_epoch": 32768, "ensemble_size": 1, "snapshots": 5, "validation_steps": 5, "seed": 7}
    assert config.input_options() == {"input_format": "auto", "names": {"series_id": "series_id", "ds": "ds", "y": "y"},
                                      "numeric": [], "static": [], "delimiter": ","}
