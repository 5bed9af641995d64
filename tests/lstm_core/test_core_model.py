"""build_lstm: shapes, chunks, patches, known-future inputs, stacking, Bidirectional, level, cuDNN."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from lstm_core.model import build_lstm, cudnn_eligible, model_geometry

W = 24


def lstm_layers(model):
    return [l for l in model.layers if isinstance(l, layers.LSTM)]


def test_output_shape_for_covariate_windows():
    keras.utils.set_random_seed(0)
    m = build_lstm(W, n_features=3, units=[8])
    assert m.input_shape == (None, W, 3)
    assert m.output_shape == (None, 1)
    x = np.random.default_rng(0).normal(size=(5, W, 3)).astype("float32")
    out = m.predict(x, verbose=0)
    assert out.shape == (5, 1) and np.isfinite(out).all()


def test_a_chunk_of_outputs_and_known_future_inputs():
    m = build_lstm(W, n_features=3, units=[8], chunk=6, patch=4, n_future=2, seed=0)
    assert m.input_shape == [(None, W, 3), (None, 6, 2)] and m.output_shape == (None, 6)
    assert model_geometry(m) == {"input_size": W, "n_features": 3, "chunk": 6, "n_future": 2}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, W, 3)).astype("float32")
    fut = rng.normal(size=(5, 6, 2)).astype("float32")
    a = m.predict([x, fut], verbose=0)
    assert a.shape == (5, 6) and np.isfinite(a).all()
    assert np.abs(a - m.predict([x, fut + 1.0], verbose=0)).max() > 1e-4, "the future inputs are not used"


def test_the_lstm_reads_one_patch_per_step():
    m = build_lstm(W, n_features=2, units=[8], chunk=3, patch=6)
    lstm = lstm_layers(m)[0]
    assert tuple(lstm.input.shape) == (None, W // 6, 6 * 2)
    with pytest.raises(ValueError, match="input_size 24 is not a multiple of the patch length 5"):
        build_lstm(W, patch=5)


def test_stacked_layers_return_sequences_except_the_last():
    m = build_lstm(W, units=[16, 8, 4], dropout=0.1)
    lstms = lstm_layers(m)
    assert [l.units for l in lstms] == [16, 8, 4]
    assert [l.return_sequences for l in lstms] == [True, True, False]
    assert [l.rate for l in m.layers if isinstance(l, layers.Dropout)] == [0.1, 0.1, 0.1]
    assert not any(isinstance(l, layers.Dropout) for l in build_lstm(W, units=[8]).layers)
    assert m.output_shape == (None, 1)


def test_bidirectional_wraps_every_lstm():
    m = build_lstm(W, units=[8, 4], bidirectional=True)
    bi = [l for l in m.layers if isinstance(l, layers.Bidirectional)]
    assert len(bi) == 2 and not lstm_layers(m)
    assert bi[0].forward_layer.return_sequences and not bi[1].forward_layer.return_sequences
    assert bi[1].output.shape[-1] == 8  # forward + backward halves concatenated
    assert cudnn_eligible(m)
    assert m.predict(np.zeros((2, W, 1), "float32"), verbose=0).shape == (2, 1)


def test_defaults_are_cudnn_eligible():
    m = build_lstm(W, units=[8, 8])
    assert cudnn_eligible(m)
    for l in lstm_layers(m):
        assert l.activation.__name__ == "tanh" and l.recurrent_activation.__name__ == "sigmoid"
        assert l.recurrent_dropout == 0 and not l.unroll and l.use_bias


@pytest.mark.parametrize("kwargs", [{"recurrent_dropout": 0.2}, {"unroll": True}, {"activation": "relu"},
                                    {"use_bias": False}])
def test_non_cudnn_settings_are_detected(kwargs):
    inputs = keras.Input((W, 1))
    x = layers.LSTM(8, return_sequences=True)(inputs)
    x = layers.LSTM(4, **kwargs)(x)
    assert not cudnn_eligible(keras.Model(inputs, layers.Dense(1)(x)))


def test_model_without_lstm_is_not_cudnn_eligible():
    inputs = keras.Input((W, 1))
    assert not cudnn_eligible(keras.Model(inputs, layers.Dense(1)(layers.Flatten()(inputs))))


@pytest.mark.parametrize("patch", [1, 4, 24])
def test_zero_residual_forecasts_the_level(patch):
    """With the Dense head zeroed, every output step is the level: the mean of the window's last patch."""
    m = build_lstm(W, n_features=2, units=[4], chunk=5, patch=patch)
    head = m.get_layer("residual")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    x = np.random.default_rng(1).normal(size=(7, W, 2)).astype("float32")
    expected = np.repeat(x[:, -patch:, 0].mean(axis=1, keepdims=True), 5, axis=1)
    np.testing.assert_allclose(m.predict(x, verbose=0), expected, rtol=0, atol=1e-6)


def test_level_normalization_makes_the_residual_shift_invariant():
    """Level normalisation: adding a constant to a window shifts the forecast by that constant."""
    keras.utils.set_random_seed(3)
    m = build_lstm(W, units=[8], chunk=3, patch=4, level_normalization=True)
    x = np.random.default_rng(2).normal(size=(4, W, 1)).astype("float32")
    np.testing.assert_allclose(m.predict(x + 5.0, verbose=0), m.predict(x, verbose=0) + 5.0, atol=1e-4)
    plain = build_lstm(W, units=[8], chunk=3, patch=4, level_normalization=False)
    assert not np.allclose(plain.predict(x + 5.0, verbose=0), plain.predict(x, verbose=0) + 5.0, atol=1e-3)
