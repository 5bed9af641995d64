"""The one configuration: validation, precedence (YAML < env < overrides < --set), secret redaction."""
from __future__ import annotations

import json

import pytest

from lstm_core.config import (ConfigError, ForecastConfig, TrainingConfig, load_config, redact, redact_url,
                              validate_config)


def test_defaults_are_valid():
    cfg = load_config(environ={})
    assert isinstance(cfg, ForecastConfig) and cfg.horizon == 24 and cfg.gap_policy == "fill"
    # the frequency is inferred from the data unless set; season and window follow from it then
    assert cfg.freq is None and cfg.season_length is None and cfg.window is None and not cfg.is_resolved
    hourly = cfg.resolved("h")
    assert (hourly.freq, hourly.season_length, hourly.window) == ("h", 24, 168) and hourly.is_resolved


@pytest.mark.parametrize("data, where", [
    ({"horizn": 3}, "'horizn'"),
    ({"training": {"epoch": 3}}, "'training.epoch'"),
    ({"model": {"layers": [8]}}, "'model.layers'"),
])
def test_unknown_keys_are_refused_by_name(data, where):
    with pytest.raises(ConfigError, match=f"setting {where}: unknown setting"):
        validate_config(data)


@pytest.mark.parametrize("data, where", [
    ({"horizon": 0}, "horizon"), ({"horizon": -3}, "horizon"), ({"window": 1}, "window"),
    ({"freq": "fortnightly"}, "freq"), ({"scaler": "robust"}, "scaler"), ({"gap_policy": "drop"}, "gap_policy"),
    ({"model": {"units": []}}, "model.units"), ({"model": {"dropout": 1.0}}, "model.dropout"),
    ({"training": {"loss": "mape"}}, "training.loss"), ({"run_id": "../x"}, "run_id"),
])
def test_bad_values_are_refused_by_name(data, where):
    with pytest.raises(ConfigError, match=f"setting '{where}'"):
        validate_config(data)


def test_unknown_frequency_message():
    with pytest.raises(ConfigError, match="unknown pandas frequency 'fortnightly'"):
        validate_config({"freq": "fortnightly"})


def test_window_must_be_a_multiple_of_the_patch():
    with pytest.raises(ConfigError, match=r"window \(30\) must be a multiple of the patch length \(12\)"):
        validate_config({"window": 30, "horizon": 24, "model": {"patch": 12}})
    cfg = validate_config({"window": 30, "horizon": 24, "model": {"patch": 5}})
    assert (cfg.chunk_length, cfg.patch_length) == (12, 5)
    # an automatic patch divides any window: the largest divisor not above the chunk
    assert validate_config({"window": 30, "horizon": 24}).patch_length == 10
    assert validate_config({"window": 31, "horizon": 24}).patch_length == 1


@pytest.mark.parametrize("horizon, chunk", [(1, 1), (2, 1), (13, 7), (24, 12), (48, 24)])
def test_auto_chunk_is_half_the_horizon_and_the_patch_follows_it(horizon, chunk):
    cfg = validate_config({"horizon": horizon, "freq": "W-MON", "season_length": 1})
    assert cfg.chunk_length == chunk and cfg.patch_length == chunk
    assert validate_config({"horizon": horizon, "model": {"chunk": 1}, "window": 30}).chunk_length == 1


@pytest.mark.parametrize("freq, season, horizon, window", [
    ("h", 24, 48, 168),  # hourly: a week (7 patches of 24)
    ("h", 24, 24, 168),  # a week in patches of 12
    ("W-MON", 52, 13, 56),  # a year (52) rounded up to patches of 7
    ("W-MON", 1, 13, 56),  # the same year whatever season the user passes
    ("D", 7, 14, 42),  # three horizons (a week is shorter)
    ("MS", 12, 18, 54),
    ("QS", 4, 8, 24),
    ("15min", 96, 96, 288),  # minutes: a day, but three horizons are longer
])
def test_default_window_covers_three_horizons_the_season_and_the_natural_cycle(freq, season, horizon, window):
    cfg = validate_config({"freq": freq, "season_length": season, "horizon": horizon})
    assert cfg.window == window and cfg.window % cfg.patch_length == 0
    assert validate_config({"season_length": season, "horizon": horizon, "window": 10,
                            "model": {"patch": 1}}).window == 10


def test_precedence_yaml_env_overrides_set(tmp_path, monkeypatch):
    path = tmp_path / "job.yaml"
    path.write_text("horizon: 10\nwindow: 30\nfreq: D\nseason_length: 7\ntraining:\n  epochs: 5\n  patience: 4\n")
    cfg = load_config(path, environ={})
    assert (cfg.horizon, cfg.window, cfg.freq, cfg.training.epochs, cfg.training.patience) == (10, 30, "D", 5, 4)

    env = {"LSTM_FORECAST_TRAINING__EPOCHS": "7", "LSTM_FORECAST_WINDOW": "32", "LSTM_FORECAST_MODEL__UNITS": "[16, 8]",
           "OTHER_TRAINING__EPOCHS": "99"}
    cfg = load_config(path, environ=env)
    assert (cfg.training.epochs, cfg.window, cfg.model.units) == (7, 32, [16, 8])
    assert cfg.training.patience == 4 and cfg.horizon == 10  # untouched YAML values stay

    cfg = load_config(path, overrides={"window": 40, "horizon": None}, environ=env)
    assert cfg.window == 40 and cfg.horizon == 10  # None means "flag not given"

    cfg = load_config(path, overrides={"window": 40}, sets=["window=44", "training.epochs=9"], environ=env)
    assert (cfg.window, cfg.training.epochs, cfg.training.patience) == (44, 9, 4)

    # the process environment is read when none is passed
    monkeypatch.setenv("LSTM_FORECAST_TRAINING__EPOCHS", "3")
    assert load_config(path).training.epochs == 3


@pytest.mark.parametrize("item", ["window", "=3", "  =3"])
def test_malformed_set_is_refused(item):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(sets=[item], environ={})


def test_unknown_key_from_environment_is_ignored_with_a_warning(caplog):
    # Not fatal (issue 16: platforms inject LSTM_FORECAST_* variables), but a section's typo is warned about.
    cfg = load_config(environ={"LSTM_FORECAST_TRAINING__EPOCH": "3"})
    assert cfg.training.epochs == TrainingConfig().epochs != 3
    assert "LSTM_FORECAST_TRAINING__EPOCH: 'training' has no setting 'epoch'" in caplog.text


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    (tmp_path / "bad.yaml").write_text("horizon: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml", environ={})
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml", environ={})


def test_public_dict_redacts_secrets():
    cfg = validate_config({
        "input_url": "s3://AKIAUSER:hunter2@minio.local:9000/bucket/in.parquet",
        "output_url": "https://user:pw@example.com/out",
        "storage_options": {
            "key": "AKIAEXAMPLE", "secret": "s3cr3t", "token": "TOKVALUE", "endpoint_url": "http://minio:9000",
            "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "SESSVALUE",
                              "aws_secret_access_key": "SAKVALUE"},
            "password": "PWVALUE", "anon": False,
        },
    })
    pub = cfg.public_dict()
    assert pub["input_url"] == "s3://***@minio.local:9000/bucket/in.parquet"
    assert pub["output_url"] == "https://***@example.com/out"
    so = pub["storage_options"]
    assert so["key"] == so["secret"] == so["token"] == so["password"] == "***"
    assert so["client_kwargs"] == {"region_name": "eu-west-1", "aws_session_token": "***",
                                   "aws_secret_access_key": "***"}
    assert so["endpoint_url"] == "http://minio:9000" and so["anon"] is False
    text = json.dumps(pub)
    for secret in ("AKIAEXAMPLE", "s3cr3t", "TOKVALUE", "SESSVALUE", "SAKVALUE", "PWVALUE", "hunter2", "AKIAUSER",
                   ":pw@"):
        assert secret not in text
    # the live object still has the real values for the storage layer
    assert cfg.storage_options["secret"] == "s3cr3t"


def test_redact_helpers():
    assert redact_url("s3://bucket/key") == "s3://bucket/key"
    assert redact_url("data/local.parquet") == "data/local.parquet"
    assert redact_url("s3://bucket/path@v2/x") == "s3://bucket/path@v2/x"  # '@' past the host is not a credential
    assert redact([{"api_key": 1}, {"name": "x"}]) == [{"api_key": "***"}, {"name": "x"}]


def test_model_key_tracks_what_makes_models_interchangeable():
    base = validate_config({"freq": "h"})
    assert base.model_key() == validate_config({"freq": "h"}).model_key()
    # the network and the meaning of its inputs change the key ...
    for changed in ({"window": 72}, {"model": {"units": [32]}}, {"freq": "30min", "season_length": 24},
                    {"season_length": [24, 168]}, {"scaler": "standard"}, {"target_transform": "none"},
                    {"future_covariates": ["price"]}, {"historic_covariates": ["price"]},
                    {"static_covariates": ["region"]}, {"calendar_features": ["hour"]}, {"mode": "per_series"}):
        assert base.model_key() != validate_config({"freq": "h", **changed}).model_key(), changed
    # ... the roles too: the same column known ahead or only observed is another model
    assert validate_config({"freq": "h", "future_covariates": ["price"]}).model_key() != \
        validate_config({"freq": "h", "historic_covariates": ["price"]}).model_key()
    # the horizon (a recursive one-step network) and how the weights were fitted do not
    # (with the chunk set: 'auto' makes it half the horizon, and the chunk is the network's output size)
    for same in ({"horizon": 48, "model": {"chunk": 12}}, {"training": {"epochs": 3, "patience": 1, "snapshots": 2}},
                 {"seed": 1}, {"training": {"learning_rate": 0.01}}, {"retrain": "never"}, {"refit": True}):
        assert base.model_key() == validate_config({"freq": "h", **same}).model_key(), same
    # training settings are recorded beside the key (retrain 'auto' retrains when they change)
    assert base.training_settings() != validate_config({"freq": "h", "seed": 1}).training_settings()
    assert base.training_settings() == validate_config({"freq": "h", "training": {"epochs": 9}}).training_settings()
    # a warm start's epoch cap is a budget (issue 23): a model fine-tuned for longer is not trained otherwise
    assert base.training_settings() == validate_config({"freq": "h", "training": {"warm_epochs": 9}}).training_settings()


@pytest.mark.parametrize("freq, season", [("h", 24), ("D", 7), ("W-MON", 52), ("W", 52), ("MS", 12), ("ME", 12),
                                          ("QS", 4), ("QE-DEC", 4), ("YS", 1), ("15min", 96), ("30min", 48),
                                          ("min", 1440), ("2h", 12), ("B", 5)])
def test_season_length_defaults_from_the_frequency(freq, season):
    cfg = validate_config({"freq": freq, "horizon": 2})
    assert cfg.season_length == season and cfg.season_lengths == (season,)
    assert validate_config({"freq": freq, "season_length": 3}).season_length == 3  # given wins


def test_a_daily_run_without_season_uses_7_and_its_window():
    cfg = validate_config({"freq": "D", "horizon": 14})
    assert (cfg.season_length, cfg.window) == (7, 42)  # three horizons in patches of 7


def test_several_seasons_first_for_metrics_rest_kept():
    cfg = validate_config({"freq": "h", "season_length": [24, 168]})
    assert cfg.season_length == 24 and cfg.extra_season_lengths == [168] and cfg.season_lengths == (24, 168)
    again = validate_config(cfg.model_dump())  # round trip (the CLI passes resolved settings to the flow)
    assert again.season_lengths == (24, 168)
    with pytest.raises(ConfigError, match="season_length"):
        validate_config({"season_length": []})


def test_unresolved_configuration_says_what_it_needs():
    cfg = validate_config({})
    with pytest.raises(ConfigError, match="needs the frequency"):
        cfg.model_key()
    assert cfg.resolved("D").model_key() == validate_config({"freq": "D"}).model_key()


@pytest.mark.parametrize("data, fragment", [
    ({"columns": ["price"]}, "'columns' is replaced by declared roles"),
    ({"future_covariates": ["price"], "historic_covariates": ["price"]}, "declared twice"),
    ({"future_covariates": ["y"]}, "is the id, time, target or group column"),
    ({"target_column": "sales", "static_covariates": ["sales"]}, "is the id, time, target or group column"),
    ({"calendar_features": ["hour", "fortnight"]}, "calendar_features"),
    ({"calendar_features": "sometimes"}, "calendar_features"),
    ({"id_column": "x", "time_column": "x"}, "must differ"),
    ({"model_version": "v1", "retrain": "always"}, "contradicts a pinned model"),
    ({"model_version": "v1", "model_url": "s3://b/models/k/v1"}, "either model_version or model_url"),
    ({"model_version": "v1", "group_column": "g"}, "pinned model"),
    ({"input_format": "xlsx"}, "input_format"),
])
def test_covariate_input_and_pin_settings_are_checked(data, fragment):
    with pytest.raises(ConfigError, match="invalid configuration") as exc:
        validate_config(data)
    assert fragment in str(exc.value)


def test_read_columns_are_the_mapped_required_columns_and_declared_covariates():
    cfg = validate_config({"id_column": "store", "time_column": "date", "target_column": "sales",
                           "future_covariates": ["price"], "historic_covariates": ["visits"],
                           "static_covariates": ["region"], "group_column": "line"})
    assert cfg.read_columns() == ["store", "date", "sales", "visits", "price", "region"]
    assert cfg.column_names() == {"series_id": "store", "ds": "date", "y": "sales"}


def test_config_error_is_a_forecast_error():
    from lstm_core.errors import LstmForecastError

    assert issubclass(ConfigError, LstmForecastError) and issubclass(ConfigError, ValueError)


def test_backtest_and_interval_settings_have_defaults_and_reach_every_source():
    cfg = load_config(environ={})
    assert (cfg.backtest.windows, cfg.backtest.step, cfg.backtest.refit) == (3, None, False)
    assert cfg.backtest_step == cfg.horizon == 24
    assert cfg.levels == [80, 95] and cfg.interval_method == "conformal"
    cfg = load_config(sets=["backtest.windows=5", "backtest.step=6", "backtest.refit=true", "levels=[50, 97.5]",
                            "interval_method=conformal_log"],
                      environ={"LSTM_FORECAST_BACKTEST__WINDOWS": "4"})
    assert (cfg.backtest.windows, cfg.backtest_step, cfg.backtest.refit) == (5, 6, True)
    assert cfg.levels == [50, 97.5] and cfg.interval_method == "conformal_log"
    assert load_config(environ={"LSTM_FORECAST_BACKTEST__WINDOWS": "4"}).backtest.windows == 4
    assert load_config(sets=["levels=[]"], environ={}).levels == []  # no intervals


@pytest.mark.parametrize("data, message", [
    ({"levels": [0, 80]}, "strictly between 0 and 100"),
    ({"levels": [80, 100]}, "strictly between 0 and 100"),
    ({"levels": [-5]}, "strictly between 0 and 100"),
    ({"levels": [95, 80]}, "sorted ascending"),
    ({"levels": [80, 80]}, "unique"),
    ({"levels": ["wide"]}, "levels"),
    ({"interval_method": "bootstrap"}, "interval_method"),
    ({"backtest": {"windows": 0}}, "backtest.windows"),
    ({"backtest": {"step": 0}}, "backtest.step"),
    ({"backtest": {"folds": 3}}, "backtest.folds': unknown setting"),
])
def test_bad_backtest_and_interval_settings_are_refused_by_name(data, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(data)


# README (Retrain or load): the model key "hashes every setting that changes the model". Each setting is
# classed here; a setting added without a class fails the completeness test below, so whoever adds one
# decides whether a saved model stays usable when it changes.
KEY_CHANGES = {  # setting -> another value; each must change the key (the network or what its inputs mean)
    "freq": "D",
    "season_length": 12,
    "window": 72,
    "scaler": "standard",
    "target_transform": "none",
    "mode": "per_series",
    "model.units": [32],
    "model.dropout": 0.1,
    "model.bidirectional": True,
    "model.level_normalization": False,
    "model.chunk": 6,
    "model.patch": 4,
    "model.deseasonalize": "off",
    "future_covariates": ["promo"],
    "historic_covariates": ["temp"],
    "static_covariates": ["region"],
    "calendar_features": ["hour"],
    "extra_season_lengths": [168],
}
# How the weights were fitted: not in the key (a model under the key takes the same inputs), recorded in the
# model's metadata, and retrain 'auto' retrains a model trained otherwise (test_core_model_store.py).
TRAINING_RECORDED = {
    "training.batch_size": 128,
    "training.learning_rate": 0.01,
    "training.loss": "mse",
    "training.windows_per_series": 64,
    "training.min_windows_per_epoch": 0,
    "training.validation_steps": 12,
    "training.ensemble_size": 2,
    "training.snapshots": 1,
    "seed": 7,
}
KEY_KEEPS = {  # setting -> another value; none may change the key (where and when a run runs, budgets)
    "horizon": 12,  # the network forecasts recursively: any horizon uses the same model
    "input_url": "s3://other/in.parquet",
    "output_url": "s3://other/out",
    "storage_options": {"key": "AKIA", "secret": "s"},
    "input_format": "csv",
    "id_column": "store",
    "time_column": "timestamp",
    "target_column": "sales",
    "model_version": "20260101T000000000000Z-aaaaaa",  # a pin chooses a saved model; it does not make one
    "model_url": "s3://models/key/20260101T000000000000Z-aaaaaa",
    "filters": [["region", "==", "eu"]],
    "gap_policy": "skip",
    "max_gap": 1,
    "training.epochs": 3,
    "training.patience": 2,
    "training.max_train_minutes": 5,
    "training.max_series": 100,
    "retrain": "always",
    "max_model_age": 60,
    "degradation_tolerance": 0.1,
    # issue 23: the gate, retention and a warm start's budget choose and keep models; they make none different
    "promotion_tolerance": 0.05,
    "keep_versions": 2,
    "training.warm_epochs": 2,
    "run_id": "nightly",
    # issue 23: which data a run reads and which slots it stands for; the network is the same
    "as_of": "2024-03-07T02:00:00",
    "schedule_interval": 3600,
    # backtests and intervals score the model and widen its forecasts; the saved model is the same
    "backtest.windows": 5,
    "backtest.step": 6,
    "backtest.refit": True,
    "levels": [50],
    "interval_method": "conformal_log",
    "lease_ttl": 30,
    "shard_size": 10,
    "shard_rows": 1000,
    "shard_bytes": 2**20,  # issue 16: how much a shard reads, and what size of saved model is loaded
    "max_model_bytes": 2**20,
    "workers": 2,
    "dask_address": "tcp://sched:8786",
    "scratch_url": "s3://other/scratch",
    # tuning (issue 14): the study and its budget change no network; the settings `tuned: latest` applies do,
    # through the settings themselves (tests/lstm_core/test_tuning.py)
    "tuning.study": "weekly",
    "tuning.trials": 5,
    "tuning.minutes": 10,
    "tuning.max_series": 50,
    "tuning.space": {"model.units": [16]},
    "tuning.pruning": False,
    "tuned": "latest",
    # issue 25: how the input's text is read (the frame validation hands on is the same)
    "time_format": "%d.%m.%Y",
    "delimiter": ";",
    "decimal": ",",
    "thousands": ",",
    "missing_values": ["-"],
}
# Settings deliberately not asserted either way, with the reason.
KEY_UNDECIDED = {
    "columns": "refused: replaced by the declared covariate roles (future_, historic_, static_covariates)",
    "refit": "a refit model is saved under the same key, and a later run that loads it scores a holdout the "
             "model has seen; whether refit belongs in the key is open",
    "group_column": "tested on its own below: the column and each group's value name the model",
    "static_types": "needs static_covariates: tested on its own below (a declared type changes the encoding)",
}
# explicit window and chunk, so horizon and season do not move the derived window or the chunk
BASE = {"window": 48, "freq": "h", "model": {"chunk": 12}}


def _with(dotted: str, value) -> ForecastConfig:
    data = json.loads(json.dumps(BASE))
    node = data
    *sections, leaf = dotted.split(".")
    for s in sections:
        node = node.setdefault(s, {})
    node[leaf] = value
    return validate_config(data)


def _all_settings(model: type = ForecastConfig, prefix: str = "") -> set[str]:
    """Every setting, dotted for sections."""
    from pydantic import BaseModel

    out = set()
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out |= _all_settings(field.annotation, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


@pytest.mark.parametrize("setting", sorted(KEY_CHANGES))
def test_model_key_changes_with_every_setting_that_changes_the_model(setting):
    base = validate_config(BASE)
    changed = _with(setting, KEY_CHANGES[setting])
    assert changed.model_dump() != base.model_dump()  # the value really differs from the default
    assert changed.model_key() != base.model_key(), setting


@pytest.mark.parametrize("setting", sorted(TRAINING_RECORDED))
def test_training_settings_are_recorded_for_the_retrain_decision(setting):
    base = validate_config(BASE)
    changed = _with(setting, TRAINING_RECORDED[setting])
    assert changed.training_settings() != base.training_settings(), setting


@pytest.mark.parametrize("setting", sorted({**KEY_KEEPS, **TRAINING_RECORDED}))
def test_model_key_ignores_settings_that_do_not_change_the_model(setting):
    base = validate_config(BASE)
    changed = _with(setting, {**KEY_KEEPS, **TRAINING_RECORDED}[setting])
    assert changed.model_dump() != base.model_dump()
    assert changed.model_key() == base.model_key(), setting


def test_every_setting_is_classed_for_the_model_key():
    classed = set(KEY_CHANGES) | set(KEY_KEEPS) | set(TRAINING_RECORDED) | set(KEY_UNDECIDED)
    assert not set(KEY_CHANGES) & (set(KEY_KEEPS) | set(TRAINING_RECORDED))
    assert _all_settings() - classed == set(), "class each new setting in KEY_CHANGES, KEY_KEEPS or KEY_UNDECIDED"
    assert classed - _all_settings() == set(), "a classed setting no longer exists"


def test_model_key_names_the_group_column_and_each_group():
    plain = validate_config(BASE)
    grouped = validate_config({**BASE, "group_column": "line"})
    other_column = validate_config({**BASE, "group_column": "region"})
    assert grouped.model_key("a") != grouped.model_key("b")
    assert grouped.model_key("a") != plain.model_key() and grouped.model_key("a") != other_column.model_key("a")
    assert grouped.model_key("a") == validate_config({**BASE, "group_column": "line"}).model_key("a")


def test_deseasonalize_off_survives_yaml(tmp_path):
    """YAML reads a bare `off` as false: in a file, an environment variable or --set it still means 'off'."""
    path = tmp_path / "job.yaml"
    path.write_text("model:\n  deseasonalize: off\n")
    assert load_config(path, environ={}).model.deseasonalize == "off"
    assert load_config(sets=["model.deseasonalize=off"], environ={}).model.deseasonalize == "off"
    assert load_config(environ={"LSTM_FORECAST_MODEL__DESEASONALIZE": "off"}).model.deseasonalize == "off"


def test_a_declared_static_type_changes_the_model_key():
    base = validate_config({**BASE, "static_covariates": ["postcode"]})
    as_text = validate_config({**BASE, "static_covariates": ["postcode"], "static_types": {"postcode": "categorical"}})
    as_number = validate_config({**BASE, "static_covariates": ["postcode"], "static_types": {"postcode": "numeric"}})
    assert len({base.model_key(), as_text.model_key(), as_number.model_key()}) == 3


def test_input_reading_settings_are_validated_once():
    for bad, needle in [({"static_types": {"postcode": "categorical"}}, "not static_covariates"),
                        ({"static_covariates": ["p"], "static_types": {"p": "text"}}, "static_types"),
                        ({"time_format": "dd.mm.yyyy"}, "neither a strftime pattern"),
                        ({"time_format": "epoch_us"}, "neither a strftime pattern"),
                        ({"delimiter": ";;"}, "delimiter"),
                        ({"decimal": ",", "thousands": ","}, "thousands and decimal"),
                        ({"decimal": ";"}, "decimal")]:
        with pytest.raises(ConfigError, match=needle):
            validate_config({**BASE, **bad})
    config = load_config(sets=["time_format=%d.%m.%Y", "delimiter=;", "decimal=,", "thousands=.",
                               "missing_values=[n.v., '-']", "time_column=Order Date"])
    assert (config.time_format, config.delimiter, config.decimal, config.thousands) == ("%d.%m.%Y", ";", ",", ".")
    assert config.missing_values == ["n.v.", "-"]
    assert load_config(sets=["time_format=epoch_ms"]).time_format == "epoch_ms"
