"""recursive_forecast (one compiled loop for a whole ensemble) against stepwise_forecast (one predict per chunk)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from lstm_core.config import TrainingConfig
from lstm_core.forecasting import _LOOPS, recursive_forecast, stepwise_forecast
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


def trained(chunk: int, patch: int, seed: int = 0, known: tuple[int, ...] = (), panel: Panel | None = None
            ) -> keras.Model:
    keras.utils.set_random_seed(seed)
    panel = panel if panel is not None else SeriesScaler.fit(p := Panel.from_frame(make_frame(7, 90), "h")).transform(p)
    model = build_lstm(W, panel.n_features, [8], chunk=chunk, patch=patch, n_future=len(known), seed=seed)
    train(model, panel, window=W, config=TrainingConfig(epochs=2, windows_per_series=16, batch_size=32),
          validation_steps=H, seed=seed, chunk=chunk, known=known)
    return model


@pytest.fixture(scope="module")
def univariate():
    p = Panel.from_frame(make_frame(n_series=7, length=90), "h")
    scaled = SeriesScaler.fit(p).transform(p)
    return trained(1, 1), last_windows(scaled, W)


@pytest.fixture(scope="module")
def chunked():
    p = Panel.from_frame(make_frame(n_series=7, length=90), "h")
    scaled = SeriesScaler.fit(p).transform(p)
    return trained(5, 6), last_windows(scaled, W)


@pytest.fixture(scope="module")
def with_covariates():
    scaled = covariate_panel()
    return trained(4, 4, seed=1, known=(1, 2), panel=scaled), last_windows(scaled, W)


def test_one_step_recursion_equals_the_stepwise_reference(univariate):
    """Chunk 1 is the classic one-step recursion: the compiled loop equals one predict per step."""
    model, windows = univariate
    fast = recursive_forecast(model, windows, H)
    ref = stepwise_forecast(model, windows, H)
    assert fast.shape == (7, H) and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5)
    assert np.ptp(fast, axis=1).min() > 1e-3  # a real trajectory, not a constant


def test_chunked_recursion_equals_the_stepwise_reference_and_cuts_the_horizon(chunked):
    model, windows = chunked
    fast = recursive_forecast(model, windows, H)  # 12 steps in chunks of 5: 3 calls, the last cut to 2
    assert fast.shape == (7, H)
    np.testing.assert_allclose(fast, stepwise_forecast(model, windows, H), rtol=0, atol=1e-5)


def test_each_chunk_is_fed_back(chunked):
    model, windows = chunked
    fast = recursive_forecast(model, windows, 10)
    first = model.predict(windows, verbose=0)
    np.testing.assert_allclose(fast[:, :5], first, atol=1e-5)
    second_input = np.concatenate([windows[:, 5:], first[:, :, None]], axis=1)
    np.testing.assert_allclose(fast[:, 5:], model.predict(second_input, verbose=0), atol=1e-5)


def test_batches_give_the_same_result(chunked):
    model, windows = chunked
    np.testing.assert_allclose(recursive_forecast(model, windows, H, batch_size=3),
                               recursive_forecast(model, windows, H), rtol=0, atol=1e-6)


def test_known_future_covariates_are_inputs_and_the_window_carries_them(with_covariates):
    model, windows = with_covariates
    s = windows.shape[0]
    t = np.arange(90, 90 + H)
    future = np.stack([np.broadcast_to(np.sin(2 * np.pi * t / 24), (s, H)),
                       np.broadcast_to((t % 7 == 0).astype(float), (s, H))], axis=-1).astype("float32")
    fast = recursive_forecast(model, windows, H, future, known=(1, 2))
    np.testing.assert_allclose(fast, stepwise_forecast(model, windows, H, future, known=(1, 2)), rtol=0, atol=1e-5)
    other = future.copy()
    other[:, :, 1] += 3.0
    assert np.abs(recursive_forecast(model, windows, H, other, known=(1, 2)) - fast).max() > 1e-4, \
        "future covariates made no difference"


def test_carried_covariates_repeat_the_last_row():
    """A covariate not known ahead (historic) is carried forward from the window's last row."""
    scaled = covariate_panel()
    model = trained(4, 4, seed=2, known=(2,), panel=scaled)  # only column 2 (promo) is known ahead
    windows = last_windows(scaled, W)
    future = np.ones((windows.shape[0], H, 1), np.float32)
    fast = recursive_forecast(model, windows, H, future, known=(2,))
    np.testing.assert_allclose(fast, stepwise_forecast(model, windows, H, future, known=(2,)), rtol=0, atol=1e-5)


def test_wrong_future_covariate_shape_is_refused(with_covariates):
    model, windows = with_covariates
    with pytest.raises(ValueError, match="future covariates must have shape"):
        recursive_forecast(model, windows, H, np.zeros((windows.shape[0], H - 1, 2)), known=(1, 2))
    with pytest.raises(ValueError, match="takes 2 known-ahead covariates, 1 given"):
        recursive_forecast(model, windows, H, np.zeros((windows.shape[0], H, 1)), known=(1,))


def test_an_ensemble_runs_in_one_compiled_call_and_averages_member_trajectories(chunked):
    model, windows = chunked
    other = build_lstm(W, 1, [8], chunk=5, patch=6, seed=5)
    both = recursive_forecast([model, other], windows, H, reduce=False)
    assert both.shape == (2, 7, H)
    np.testing.assert_allclose(both[0], recursive_forecast(model, windows, H), atol=1e-6)
    np.testing.assert_allclose(both[1], recursive_forecast(other, windows, H), atol=1e-6)
    np.testing.assert_allclose(recursive_forecast([model, other], windows, H), both.mean(axis=0), atol=1e-6)
    loops = _LOOPS[model]
    before = {k: v.experimental_get_tracing_count() for k, v in loops.items()}
    recursive_forecast([model, other], windows[:3], H)  # another batch size: no new trace
    assert {k: v.experimental_get_tracing_count() for k, v in loops.items()} == before


def test_empty_input_gives_empty_output(univariate):
    model, _ = univariate
    assert recursive_forecast(model, np.zeros((0, W, 1)), H).shape == (0, H)
