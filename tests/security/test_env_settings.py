"""Only LSTM_FORECAST_* variables that name a setting are read; platform-injected ones are ignored."""
from __future__ import annotations

import logging

import pytest

from lstm_core.config import ConfigError, env_overrides, load_config, names_a_setting

# What Kubernetes injects for a Service named `lstm-forecast` (docker links inject the same shape).
KUBERNETES = {
    "LSTM_FORECAST_SERVICE_HOST": "10.96.12.7",
    "LSTM_FORECAST_SERVICE_PORT": "8080",
    "LSTM_FORECAST_PORT": "tcp://10.96.12.7:8080",
    "LSTM_FORECAST_PORT_8080_TCP": "tcp://10.96.12.7:8080",
    "LSTM_FORECAST_PORT_8080_TCP_ADDR": "10.96.12.7",
}


def test_platform_variables_are_ignored_and_real_settings_still_read(caplog):
    env = {**KUBERNETES, "LSTM_FORECAST_HORIZON": "13", "LSTM_FORECAST_TRAINING__EPOCHS": "4",
           "LSTM_FORECAST_STORAGE_OPTIONS__ENDPOINT_URL": "http://minio:9000",
           "LSTM_FORECAST_PROGRESS": "0", "LSTM_FORECAST_DEBUG": "1",
           "LSTM_FORECAST_MODEL_SIGNING_KEY": "k" * 40}
    with caplog.at_level(logging.DEBUG, logger="lstm_core.config"):
        cfg = load_config(environ=env)
    assert cfg.horizon == 13 and cfg.training.epochs == 4
    assert cfg.storage_options == {"endpoint_url": "http://minio:9000"}
    ignored = {r.getMessage().split()[3].rstrip(":") for r in caplog.records if "names no setting" in r.getMessage()}
    assert ignored == set(KUBERNETES)
    # The project's own switches are not settings and are not even mentioned.
    assert not any("PROGRESS" in r.getMessage() or "SIGNING" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("dotted, known", [
    ("horizon", True), ("training.epochs", True), ("model.units", True), ("storage_options.key", True),
    ("storage_options.client_kwargs.region_name", True), ("service_host", False), ("port_8080_tcp", False),
    ("training.epoch", False), ("horizon.x", False), ("model", True), ("columns.x", False),
])
def test_names_a_setting(dotted, known):
    assert names_a_setting(dotted) is known


def test_a_bad_value_of_a_real_setting_is_still_refused_by_name():
    with pytest.raises(ConfigError, match="setting 'horizon'"):
        load_config(environ={**KUBERNETES, "LSTM_FORECAST_HORIZON": "zero"})


def test_env_overrides_reads_nothing_else():
    assert env_overrides({**KUBERNETES, "HORIZON": "3", "LSTM_FORECAST_": "x"}) == {}
