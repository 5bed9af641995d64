"""recursive_forecast (one compiled loop) against stepwise_forecast (one predict per step)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from lstm_core.config import TrainingConfig
from lstm_core.forecasting import ensemble_forecast, recursive_forecast, stepwise_forecast
from lstm_core.model import build_lstm
from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler
from lstm_core.training import train
from lstm_core.windows import last_windows
from tests.conftest import make_frame

W, H = 24, 12


def covariate_panel(n_series: int = 5) -> Panel:
    f = make_frame(n_series=n_series, length=90)
    t = f.groupby("series_id").cumcount().to_numpy()
    f["hour_sin"] = np.sin(2 * np.pi * t / 24)
    f["promo"] = (t % 7 == 0).astype(float)
    p = Panel.from_frame(f, "h", ("hour_sin", "promo"))
    return SeriesScaler.fit(p).transform(p)


@pytest.fixture(scope="module")
def univariate():
    keras.utils.set_random_seed(0)
    model = build_lstm(W, 1, [8], skip_lag=24)
    p = Panel.from_frame(make_frame(n_series=7, length=90), "h")
    scaled = SeriesScaler.fit(p).transform(p)
    train(model, scaled, window=W, config=TrainingConfig(epochs=2, windows_per_series=16, batch_size=32),
          validation_steps=H, seed=0)
    return model, last_windows(scaled, W)


@pytest.fixture(scope="module")
def with_covariates():
    keras.utils.set_random_seed(1)
    model = build_lstm(W, 3, [8], skip_lag=0)
    scaled = covariate_panel()
    train(model, scaled, window=W, config=TrainingConfig(epochs=2, windows_per_series=16, batch_size=32),
          validation_steps=H, seed=0)
    return model, last_windows(scaled, W)


def test_recursive_equals_stepwise_reference(univariate):
    model, windows = univariate
    fast = recursive_forecast(model, windows, H)
    ref = stepwise_forecast(model, windows, H)
    assert fast.shape == (7, H) and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5)
    assert np.ptp(fast, axis=1).min() > 1e-3  # a real trajectory, not a constant


def test_each_prediction_is_fed_back(univariate):
    model, windows = univariate
    fast = recursive_forecast(model, windows, 3)
    step2_input = np.concatenate([windows[:, 1:], fast[:, :1, None]], axis=1)
    np.testing.assert_allclose(fast[:, 1], model.predict(step2_input, verbose=0)[:, 0], atol=1e-5)


def test_batches_give_the_same_result(univariate):
    model, windows = univariate
    np.testing.assert_allclose(recursive_forecast(model, windows, H, batch_size=3),
                               recursive_forecast(model, windows, H), rtol=0, atol=1e-6)


def test_covariates_known_in_future_are_used(with_covariates):
    model, windows = with_covariates
    s = windows.shape[0]
    t = np.arange(90, 90 + H)
    future = np.stack([np.broadcast_to(np.sin(2 * np.pi * t / 24), (s, H)),
                       np.broadcast_to((t % 7 == 0).astype(float), (s, H))], axis=-1).astype("float32")
    fast = recursive_forecast(model, windows, H, future)
    np.testing.assert_allclose(fast, stepwise_forecast(model, windows, H, future), rtol=0, atol=1e-5)
    carried = recursive_forecast(model, windows, H)  # no future given: last values carried forward
    np.testing.assert_allclose(carried, stepwise_forecast(model, windows, H), rtol=0, atol=1e-5)
    assert np.abs(fast - carried).max() > 1e-4, "future covariates made no difference"


def test_wrong_future_covariate_shape_is_refused(with_covariates):
    model, windows = with_covariates
    with pytest.raises(ValueError, match="future covariates must have shape"):
        recursive_forecast(model, windows, H, np.zeros((windows.shape[0], H - 1, 2)))


def test_ensemble_is_the_mean_of_member_trajectories(univariate):
    model, windows = univariate
    keras.utils.set_random_seed(5)
    other = build_lstm(W, 1, [8], skip_lag=24)
    got = ensemble_forecast([model, other], windows, H)
    expected = (recursive_forecast(model, windows, H) + recursive_forecast(other, windows, H)) / 2
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_empty_input_gives_empty_output(univariate):
    model, _ = univariate
    assert recursive_forecast(model, np.zeros((0, W, 1)), H).shape == (0, H)
