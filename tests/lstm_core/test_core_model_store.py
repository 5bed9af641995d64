"""model_store.decide: train or load, with a reason a person can read."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lstm_core import artifacts, engine
from lstm_core.config import validate_config
from lstm_core.errors import ArtifactError
from lstm_core.retrain import decide, decide_for, validation_loss
from lstm_core.panel import Panel
from tests.conftest import fast_config, make_frame, prepare

H = 12


@pytest.fixture(scope="module")
def cfg():
    return fast_config(training={"epochs": 2})


@pytest.fixture(scope="module")
def train_panel(cfg):
    return prepare(make_frame(n_series=4, length=120), cfg)[0].drop_last(H)


@pytest.fixture(scope="module")
def forecaster(cfg, train_panel):
    return engine.fit(train_panel, cfg)


def run_decide(cfg, store, panel, policy="auto", **kw):
    args = dict(window=cfg.window, validation_steps=cfg.validation_steps, loss=cfg.training.loss,
                max_age=cfg.max_model_age, tolerance=cfg.degradation_tolerance)
    args.update(kw)
    return decide(policy, str(store), cfg.model_key(), panel, **args)


def save(forecaster, cfg, store, panel, **kw):
    return artifacts.save(forecaster, str(store), cfg.model_key(), config=cfg.public_dict(),
                          fingerprint=artifacts.data_fingerprint(panel), **kw)


def test_no_model_means_train(cfg, train_panel, tmp_path):
    d = run_decide(cfg, tmp_path, train_panel)
    assert d.action == "train" and "no saved model" in d.reason and cfg.model_key() in d.reason
    assert d.loaded is None and d.as_dict() == {"action": "train", "reason": d.reason}


def test_always_means_train_even_with_a_model(forecaster, cfg, train_panel, tmp_path):
    save(forecaster, cfg, tmp_path, train_panel)
    d = run_decide(cfg, tmp_path, train_panel, policy="always")
    assert d.action == "train" and "'always'" in d.reason


def test_never_without_a_model_is_an_error(cfg, train_panel, tmp_path):
    with pytest.raises(ArtifactError, match="'never' but the model store .* has no model"):
        run_decide(cfg, tmp_path, train_panel, policy="never")


def test_never_loads_the_newest_model(forecaster, cfg, train_panel, tmp_path):
    save(forecaster, cfg, tmp_path, train_panel, version="20260101T000000000000Z-aaaaaa")
    newest = save(forecaster, cfg, tmp_path, train_panel, version="20260301T000000000000Z-bbbbbb")
    d = run_decide(cfg, tmp_path, train_panel, policy="never", now=datetime(2099, 1, 1, tzinfo=timezone.utc))
    assert d.action == "load" and d.loaded.metadata["version"] == newest
    assert d.as_dict()["model_version"] == newest


def test_fresh_model_is_loaded(forecaster, cfg, train_panel, tmp_path):
    version = save(forecaster, cfg, tmp_path, train_panel)
    d = run_decide(cfg, tmp_path, train_panel)
    assert d.action == "load" and f"model {version} is current" in d.reason
    np.testing.assert_array_equal(d.loaded.forecaster.forecast(train_panel, H), forecaster.forecast(train_panel, H))


def test_validation_loss_on_training_data_matches_what_training_recorded(forecaster, cfg, train_panel):
    current = validation_loss(forecaster, train_panel, cfg.validation_steps, cfg.training.loss)
    assert current == pytest.approx(forecaster.training["best_val_loss"], rel=1e-4)


def test_too_old_model_is_retrained(forecaster, cfg, train_panel, tmp_path):
    version = save(forecaster, cfg, tmp_path, train_panel)
    later = datetime.now(timezone.utc) + cfg.max_model_age + timedelta(days=1)
    d = run_decide(cfg, tmp_path, train_panel, now=later)
    assert d.action == "train" and version in d.reason and "older than max_model_age 7.0d" in d.reason


def test_degraded_model_is_retrained(forecaster, cfg, train_panel, tmp_path):
    version = save(forecaster, cfg, tmp_path, train_panel)
    # new data with a break the model never saw: every series jumps to three times its level for the
    # points validation scores
    values = train_panel.values.copy()
    tail = np.concatenate([np.arange(e - cfg.validation_steps, e) for e in train_panel.offsets[1:]])
    values[tail] *= 3.0
    changed = Panel(train_panel.series_ids, train_panel.offsets, values, train_panel.feature_names,
                    train_panel.last_ds, train_panel.freq)
    d = run_decide(cfg, tmp_path, changed, tolerance=0.0)
    assert d.action == "train" and f"model {version} degraded" in d.reason and "mae" in d.reason


def test_broken_newest_model_means_train_not_an_older_one(forecaster, cfg, train_panel, tmp_path):
    save(forecaster, cfg, tmp_path, train_panel, version="20260101T000000000000Z-aaaaaa")
    newest = save(forecaster, cfg, tmp_path, train_panel, version="20260301T000000000000Z-bbbbbb")
    (tmp_path / cfg.model_key() / newest / "member-0.keras").write_bytes(b"garbage")
    d = run_decide(cfg, tmp_path, train_panel)
    assert d.action == "train" and "newest saved model cannot be used" in d.reason and "corrupt" in d.reason


def test_incompatible_window_means_train(forecaster, cfg, train_panel, tmp_path):
    save(forecaster, cfg, tmp_path, train_panel)
    d = run_decide(cfg, tmp_path, train_panel, window=48)
    assert d.action == "train" and "no loadable model" in d.reason and "window" in d.reason
    with pytest.raises(ArtifactError, match="no saved model can be loaded"):
        run_decide(cfg, tmp_path, train_panel, policy="never", window=48)


def test_degradation_tolerance_is_the_allowed_relative_rise(forecaster, cfg, train_panel, tmp_path):
    """At a non-zero tolerance, on both sides: retrain just past the allowed rise, load just within it."""
    version = save(forecaster, cfg, tmp_path, train_panel)
    # Newer data the model knows less well: the points validation scores moved up by a tenth.
    values = train_panel.values.copy()
    tail = np.concatenate([np.arange(e - cfg.validation_steps, e) for e in train_panel.offsets[1:]])
    values[tail] *= 1.1
    changed = Panel(train_panel.series_ids, train_panel.offsets, values, train_panel.feature_names,
                    train_panel.last_ds, train_panel.freq)
    recorded = forecaster.training["best_val_loss"]
    current = validation_loss(forecaster, changed, cfg.validation_steps, cfg.training.loss)
    rise = current / recorded - 1
    assert rise > 0.05, (current, recorded)
    below = run_decide(cfg, tmp_path, changed, tolerance=0.9 * rise)
    assert below.action == "train" and f"model {version} degraded" in below.reason
    assert f"x (1 + {0.9 * rise:g})" in below.reason
    within = run_decide(cfg, tmp_path, changed, tolerance=1.1 * rise)
    assert within.action == "load" and within.loaded.metadata["version"] == version
    assert f"within {1.1 * rise:.0%} of recorded" in within.reason


# --- by configuration: pins, training settings, what differs ------------------------------------
def test_settings_that_do_not_change_the_network_load_the_same_model(forecaster, cfg, train_panel, tmp_path):
    version = save(forecaster, cfg, tmp_path, train_panel)
    # a recursive network forecasts any horizon; with model.chunk 'auto' the chunk (the network's output
    # size) follows the horizon, so the chunk is kept here
    longer = validate_config({**cfg.model_dump(), "horizon": 48, "model": {**cfg.model.model_dump(),
                                                                           "chunk": cfg.chunk_length}})
    assert longer.model_key() == cfg.model_key()
    d = decide_for(longer, str(tmp_path), train_panel)
    assert d.action == "load" and d.loaded.metadata["version"] == version
    fc = d.loaded.forecaster.forecast(train_panel, 48)
    assert fc.shape == (train_panel.n_series, 48) and np.isfinite(fc).all()


def test_auto_retrains_when_training_settings_changed_never_loads_and_says_so(forecaster, cfg, train_panel,
                                                                             tmp_path):
    version = save(forecaster, cfg, tmp_path, train_panel)
    other = fast_config(training={"epochs": 2, "snapshots": 3})
    assert other.model_key() == cfg.model_key()
    d = decide_for(other, str(tmp_path), train_panel)
    assert d.action == "train" and "other training settings" in d.reason
    assert "training.snapshots: saved 1, requested 3" in d.reason
    never = other.model_copy(update={"retrain": "never"})
    d = decide_for(never, str(tmp_path), None)
    assert d.action == "load" and d.loaded.metadata["version"] == version
    assert "trained with other training settings: training.snapshots: saved 1, requested 3" in d.reason


def test_never_with_no_match_lists_saved_keys_and_the_settings_that_differ(forecaster, cfg, train_panel, tmp_path):
    version = save(forecaster, cfg, tmp_path, train_panel)
    wider = fast_config(training={"epochs": 2}, model={"units": [16]}, retrain="never")
    with pytest.raises(ArtifactError) as exc:
        decide_for(wider, str(tmp_path), None)
    message = str(exc.value)
    assert f"no model for this configuration (key {wider.model_key()})" in message
    assert f"key {cfg.model_key()} ({version})" in message and "model.units: saved [8], requested [16]" in message
    with pytest.raises(ArtifactError, match="saved models: none"):
        decide_for(wider, str(tmp_path / "empty"), None)


def test_a_pinned_version_is_loaded_whatever_the_key(forecaster, cfg, train_panel, tmp_path):
    old = save(forecaster, cfg, tmp_path, train_panel, version="20260101T000000000000Z-aaaaaa")
    save(forecaster, cfg, tmp_path, train_panel, version="20260301T000000000000Z-bbbbbb")
    pinned = fast_config(training={"epochs": 2}, model={"units": [16]}, model_version=old)  # another key
    d = decide_for(pinned, str(tmp_path), train_panel)
    assert d.action == "load" and d.loaded.metadata["version"] == old and f"pinned model_version {old}" in d.reason
    by_url = fast_config(training={"epochs": 2}, model_url=f"{tmp_path}/{cfg.model_key()}/{old}")
    assert decide_for(by_url, str(tmp_path / "elsewhere"), train_panel).loaded.metadata["version"] == old
    with pytest.raises(ArtifactError, match="model_version nope-1 is not in the model store"):
        decide_for(fast_config(model_version="nope-1"), str(tmp_path), train_panel)
    with pytest.raises(ArtifactError, match="takes other inputs.*window: saved 24, requested 48"):
        decide_for(fast_config(model_version=old, window=48), str(tmp_path), train_panel)
