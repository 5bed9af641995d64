"""train(): early stopping with best weights, checkpoint, wall-clock budget, seeding, device report."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from lstm_core import engine
from lstm_core.config import TrainingConfig
from lstm_core.model import build_lstm
from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler
from lstm_core.training import WindowBatches, device_info, train
from lstm_core.windows import tail_windows, target_bounds
from tests.conftest import fast_config, make_frame, prepare

W, H = 24, 12


@pytest.fixture(scope="module")
def scaled() -> Panel:
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=4, length=120), cfg)
    return SeriesScaler.fit(panel).transform(panel)


def fresh_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_lstm(W, 1, [8])


def val_loss_of(model, panel: Panel, loss: str) -> float:
    x, y, _ = tail_windows(panel, W, H)
    err = model.predict(x, verbose=0).astype(np.float64) - y
    return float(np.mean(err**2) if loss == "mse" else np.mean(np.abs(err)))


def test_early_stopping_returns_the_best_epoch_weights(scaled, tmp_path):
    # A large learning rate makes validation loss jump about, so the last epoch is not the best.
    cfg = TrainingConfig(epochs=12, patience=3, learning_rate=0.05, loss="mse", windows_per_series=16, batch_size=32)
    model = fresh_model()
    r = train(model, scaled, window=W, config=cfg, validation_steps=H, seed=0, checkpoint_dir=tmp_path)
    val = r.history["val_loss"]
    assert r.epochs_run == len(val) and r.best_epoch == int(np.argmin(val)) + 1
    assert r.best_val_loss == pytest.approx(min(val))
    assert val[-1] > r.best_val_loss, "test needs a run whose last epoch is not its best"
    assert val_loss_of(model, scaled, "mse") == pytest.approx(r.best_val_loss, rel=1e-4)
    if r.stopped_by == "early_stopping":
        assert r.epochs_run == r.best_epoch + cfg.patience
    # the checkpoint holds those same best weights
    ckpt = tmp_path / "best.weights.h5"
    assert ckpt.is_file() and ckpt.stat().st_size > 0
    other = fresh_model(seed=1)
    other.load_weights(str(ckpt))
    x = tail_windows(scaled, W, H).x
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def test_patience_stops_a_run_that_stops_improving(scaled):
    cfg = TrainingConfig(epochs=40, patience=1, learning_rate=0.05, loss="mae", windows_per_series=8, batch_size=32)
    r = train(fresh_model(), scaled, window=W, config=cfg, validation_steps=H, seed=0)
    assert r.stopped_by == "early_stopping" and r.epochs_run < 40
    assert r.epochs_run == r.best_epoch + 1


def test_time_budget_stops_training_and_keeps_best_weights(scaled):
    cfg = TrainingConfig(epochs=500, patience=500, windows_per_series=64, batch_size=8)
    model = fresh_model()
    r = train(model, scaled, window=W, config=cfg, validation_steps=H, seed=0, time_budget_s=0.5)
    assert r.stopped_by == "time_budget"
    assert 1 <= r.epochs_run < 500
    assert r.seconds < 60
    assert val_loss_of(model, scaled, "mae") == pytest.approx(r.best_val_loss, rel=1e-4)


def test_max_train_minutes_is_the_default_budget(scaled):
    cfg = TrainingConfig(epochs=500, patience=500, windows_per_series=64, batch_size=8, max_train_minutes=0.01)
    r = train(fresh_model(), scaled, window=W, config=cfg, validation_steps=H, seed=0)
    assert r.stopped_by == "time_budget" and r.epochs_run < 500


def test_same_seed_same_forecasts_and_another_seed_differs():
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=4, length=120), cfg)
    train_part = panel.drop_last(H)
    a = engine.fit(train_part, cfg).forecast(panel, H)
    b = engine.fit(train_part, cfg).forecast(panel, H)
    # On CPU the runs are bit-identical; allow float noise only.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    c = engine.fit(train_part, cfg.model_copy(update={"seed": cfg.seed + 1})).forecast(panel, H)
    assert np.abs(a - c).max() > 1e-4


def test_device_and_cudnn_are_reported(scaled):
    cfg = TrainingConfig(epochs=1, windows_per_series=4, min_windows_per_epoch=0)
    r = train(fresh_model(), scaled, window=W, config=cfg, validation_steps=H, seed=0)
    info = device_info()
    assert r.device == info["device"]
    assert r.device == "CPU" if not info["gpus"] else r.device.startswith("GPU (")
    assert r.cudnn is True
    assert r.samples_per_epoch == 4 * scaled.n_series
    assert set(r.summary()) >= {"device", "cudnn", "best_epoch", "best_val_loss", "stopped_by", "history"}


def test_a_small_panel_gets_an_epoch_of_every_window_it_has(scaled):
    cfg = TrainingConfig(epochs=1, windows_per_series=4, min_windows_per_epoch=100_000)
    r = train(fresh_model(), scaled, window=W, config=cfg, validation_steps=H, seed=0)
    lo, hi = target_bounds(scaled, W, H, 1)
    assert r.samples_per_epoch == int((hi - lo).sum()) > 4 * scaled.n_series


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_configured_loss_is_the_one_reported(scaled, loss):
    cfg = TrainingConfig(epochs=1, windows_per_series=4, loss=loss)
    model = fresh_model()
    r = train(model, scaled, window=W, config=cfg, validation_steps=H, seed=0)
    x, y, _ = tail_windows(scaled, W, H)
    err = model.predict(x, verbose=0).astype(np.float64) - y
    a = np.abs(err)
    expected = np.mean(a) if loss == "mae" else np.mean(np.where(a <= 1, 0.5 * err**2, a - 0.5))
    assert r.best_val_loss == pytest.approx(expected, rel=1e-4)


def test_series_too_short_for_validation_are_refused():
    # validation would skip these series (min_length 49); packed directly, training refuses them itself
    panel = Panel.from_frame(make_frame(n_series=2, length=40), "h")
    with pytest.raises(ValueError, match="no training windows"):
        train(fresh_model(), panel, window=W, config=TrainingConfig(epochs=1), validation_steps=16, seed=0)
    with pytest.raises(ValueError, match="no validation windows"):
        train(fresh_model(), panel.drop_last(16), window=W, config=TrainingConfig(epochs=1), validation_steps=1, seed=0)


def test_each_epoch_draws_a_fresh_bounded_sample(scaled):
    batches = WindowBatches(scaled, W, per_series=10, holdout=H, batch_size=16, seed=0)
    assert len(batches.y) == 10 * scaled.n_series and len(batches) == 3
    first = batches.x.copy()
    x0, y0 = batches[0]
    assert x0.shape == (16, W, 1) and y0.shape == (16, 1)
    assert np.array_equal(batches.x, first)  # the first pass uses the first sample
    batches[0]  # a new pass over the batches draws a new sample
    assert batches.x.shape == first.shape and not np.array_equal(batches.x, first)
    again = WindowBatches(scaled, W, per_series=10, holdout=H, batch_size=16, seed=0)
    np.testing.assert_array_equal(again.x, first)  # seeded


def test_chunked_training_validates_on_whole_chunks_before_the_series_end(scaled):
    """chunk 5, 12 validation steps: 3 chunks (15 points) per series; the loss reported is on those."""
    keras.utils.set_random_seed(0)
    model = build_lstm(W, 1, [8], chunk=5, patch=4)
    cfg = TrainingConfig(epochs=2, windows_per_series=8, batch_size=16, min_windows_per_epoch=0)
    r = train(model, scaled, window=W, config=cfg, validation_steps=H, seed=0, chunk=5)
    val = tail_windows(scaled, W, H, chunk=5)
    assert val.y.shape == (3 * scaled.n_series, 5)
    err = model.predict(val.x, verbose=0).astype(np.float64) - val.y
    assert r.best_val_loss == pytest.approx(float(np.mean(np.abs(err))), rel=1e-4)
    assert r.samples_per_epoch == 8 * scaled.n_series
