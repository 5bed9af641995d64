"""The network: a short function that builds a stacked LSTM forecaster.

Inputs are windows (batch, window, features) of scaled values; the output is
the next scaled value of the target (feature 0). Two cheap, general tricks sit
in front of the LSTM: each window is made relative to its last value (level
normalisation), and the network predicts a residual over a base forecast, the
value one season earlier (seasonal skip) or the last value.
"""
from __future__ import annotations

import random

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="lstm_forecast")
class LevelSkip(layers.Layer):
    """Split a window into (level-normalised window, base forecast of the next target value)."""

    def __init__(self, skip_lag: int = 0, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.skip_lag = int(skip_lag)
        self.normalize = bool(normalize)

    def call(self, x):
        level = x[:, -1:, :1]  # last target value of each window, (batch, 1, 1)
        target = x[:, :, :1] - level if self.normalize else x[:, :, :1]
        shaped = ops.concatenate([target, x[:, :, 1:]], axis=-1)
        # The target at t+1 sits one season after position window - skip_lag.
        base = x[:, -self.skip_lag, :1] if self.skip_lag else level[:, 0, :]
        return shaped, base

    def compute_output_shape(self, input_shape):
        return input_shape, (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "skip_lag": self.skip_lag, "normalize": self.normalize}


def build_lstm(
    window: int,
    n_features: int = 1,
    units: tuple[int, ...] | list[int] = (64,),
    dropout: float = 0.0,
    bidirectional: bool = False,
    level_normalization: bool = True,
    skip_lag: int = 0,
    seed: int | None = None,
) -> keras.Model:
    """Stacked LSTM (all but the last return sequences), dropout, optional Bidirectional, Dense head.

    Defaults keep TensorFlow's cuDNN kernel eligible on a GPU: tanh/sigmoid, no
    recurrent dropout, no unroll, with bias.

    `seed` seeds every initializer and dropout layer explicitly. Unseeded, Keras draws their
    seeds from Python's process-wide `random`, which other threads of the process (Prefect's
    and Dask's among them) also draw from, so the initial weights would depend on timing.
    """
    if skip_lag > window:
        raise ValueError(f"skip_lag {skip_lag} is longer than the window {window}")
    rng = random.Random(seed)

    def seeded() -> dict:
        if seed is None:
            return {}
        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=rng.randint(1, 10**9)),
                "recurrent_initializer": keras.initializers.Orthogonal(seed=rng.randint(1, 10**9))}

    inputs = keras.Input(shape=(window, n_features), name="window")
    x, base = LevelSkip(skip_lag, level_normalization, name="level_skip")(inputs)
    for i, n in enumerate(units):
        sequences = i < len(units) - 1
        lstm = layers.LSTM(n, return_sequences=sequences, name=f"lstm_{i}", **seeded())
        if bidirectional:
            backward = layers.LSTM(n, return_sequences=sequences, go_backwards=True, name=f"lstm_{i}_backward",
                                   **seeded()) if seed is not None else None
            x = layers.Bidirectional(lstm, backward_layer=backward, name=f"bidirectional_{i}")(x)
        else:
            x = lstm(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout_{i}",
                               seed=None if seed is None else rng.randint(1, 10**9))(x)
    head = {} if seed is None else {"kernel_initializer": keras.initializers.GlorotUniform(seed=rng.randint(1, 10**9))}
    residual = layers.Dense(1, name="residual", **head)(x)
    outputs = layers.Add(name="forecast")([base, residual])
    return keras.Model(inputs, outputs, name="lstm_forecaster")


def cudnn_eligible(model: keras.Model) -> bool:
    """True when every LSTM layer meets the cuDNN kernel's conditions."""
    lstms = [l for l in _walk(model) if isinstance(l, layers.LSTM)]
    return bool(lstms) and all(
        l.activation.__name__ == "tanh"
        and l.recurrent_activation.__name__ == "sigmoid"
        and l.recurrent_dropout == 0
        and not l.unroll
        and l.use_bias
        for l in lstms
    )


def _walk(model):
    for layer in model.layers:
        yield layer
        inner = getattr(layer, "forward_layer", None)
        if inner is not None:
            yield inner
            yield layer.backward_layer
