"""The network: a short function that builds a stacked LSTM forecaster of the next chunk of values.

Input: a window `(batch, input_size, features)` of model-space values (feature 0 is the target),
and, when the data have known-ahead covariates, their values over the chunk being forecast
`(batch, chunk, n_future)`. Output: the next `chunk` target values `(batch, chunk)`.

Three cheap, general devices sit around the LSTM:
- level normalisation: the window's target is made relative to its level (the mean of its last
  `patch` values) and the level is added back to the output, so one global model serves series at
  any level and the network only learns shapes;
- patches: the LSTM reads the window `patch` steps at a time (each LSTM step sees a vector of
  `patch x features` values), so a week of hourly data is 7 LSTM steps of one day, not 168 steps:
  far fewer sequential steps to train and run, and a long view for free (as ES-RNN fed its LSTM
  windows of values rather than single values; Smyl 2020);
- chunks: each call forecasts `chunk` steps at once; the recursion feeds the chunk back as input
  until the horizon is covered (chunk 1 is the classic one-step recursion).
"""
from __future__ import annotations

import random

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="lstm_forecast")
class LevelNorm(layers.Layer):
    """Split a window into (window with its target made relative to the level, level (batch, 1))."""

    def __init__(self, span: int = 1, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.span = int(span)
        self.normalize = bool(normalize)

    def call(self, x):
        """Keras forward pass: (batch, window, F) -> (window with y minus the level of its last `span` steps, level)."""
        level = ops.mean(x[:, -self.span:, :1], axis=1)  # (batch, 1)
        if not self.normalize:
            return x, ops.zeros_like(level)
        target = x[:, :, :1] - level[:, None, :]
        return ops.concatenate([target, x[:, :, 1:]], axis=-1), level

    def compute_output_shape(self, input_shape):
        """Keras shape inference: the input's shape and (batch, 1)."""
        return input_shape, (input_shape[0], 1)

    def get_config(self):
        """Keras serialization: the base config with `span` and `normalize`."""
        return {**super().get_config(), "span": self.span, "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="lstm_forecast")
class AddLevel(layers.Layer):
    """(residual (batch, chunk), level (batch, 1)) -> residual + level."""

    def call(self, inputs):
        """Keras forward pass: residual (batch, chunk) plus level (batch, 1), broadcast."""
        residual, level = inputs
        return residual + level

    def compute_output_shape(self, input_shapes):
        """Keras shape inference: the residual's shape."""
        return input_shapes[0]


def build_lstm(
    input_size: int,
    n_features: int = 1,
    units: tuple[int, ...] | list[int] = (64,),
    *,
    chunk: int = 1,
    patch: int = 1,
    n_future: int = 0,
    dropout: float = 0.0,
    bidirectional: bool = False,
    level_normalization: bool = True,
    seed: int | None = None,
) -> keras.Model:
    """Stacked LSTM (Hochreiter & Schmidhuber 1997, Neural Computation 9(8)) over patches of the window (all layers
    but the last return sequences), Dense head.

    Inputs `window` (batch, input_size, n_features) and, if `n_future`, `future` (batch, chunk,
    n_future); output (batch, chunk). Defaults keep TensorFlow's cuDNN kernel eligible on a GPU
    (tanh/sigmoid, no recurrent dropout, no unroll, with bias).

    `seed` seeds every initializer and dropout layer explicitly: unseeded, Keras draws their seeds
    from Python's process-wide `random`, which other threads (Prefect's, Dask's) also draw from.

    Raises ValueError when `input_size` is not a multiple of `patch` or sizes are not positive.
    """
    if min(input_size, n_features, chunk, patch) < 1 or not units:
        raise ValueError("input_size, n_features, chunk, patch and units must be positive")
    if input_size % patch:
        raise ValueError(f"input_size {input_size} is not a multiple of the patch length {patch}")
    rng = random.Random(seed)

    def seeded(recurrent: bool = True) -> dict:
        if seed is None:
            return {}
        out = {"kernel_initializer": keras.initializers.GlorotUniform(seed=rng.randint(1, 10**9))}
        if recurrent:
            out["recurrent_initializer"] = keras.initializers.Orthogonal(seed=rng.randint(1, 10**9))
        return out

    window = keras.Input(shape=(input_size, n_features), name="window")
    inputs = [window]
    x, level = LevelNorm(patch, level_normalization, name="level")(window)
    if patch > 1:  # (batch, input_size, F) -> (batch, input_size / patch, patch * F): one LSTM step per patch
        x = layers.Reshape((input_size // patch, patch * n_features), name="patches")(x)
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
            x = layers.Dropout(dropout, name=f"dropout_{i}", seed=None if seed is None else rng.randint(1, 10**9))(x)
    if n_future:
        future = keras.Input(shape=(chunk, n_future), name="future")
        inputs.append(future)
        x = layers.Concatenate(name="with_future")([x, layers.Flatten(name="future_flat")(future)])
    residual = layers.Dense(chunk, name="residual", **seeded(recurrent=False))(x)
    outputs = AddLevel(name="forecast")([residual, level])
    return keras.Model(inputs, outputs, name="lstm_forecaster")


def model_geometry(model: keras.Model) -> dict[str, int]:
    """input_size, n_features, chunk and n_future of a model built by `build_lstm`."""
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    _, input_size, n_features = shapes[0]
    return {"input_size": int(input_size), "n_features": int(n_features), "chunk": int(model.output_shape[-1]),
            "n_future": int(shapes[1][-1]) if len(shapes) > 1 else 0}


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of one forward pass for one sample: the LSTM and Dense matrix products
    (4 gates x units x (inputs + units) per LSTM step), the bulk of the work. A training step costs
    about three times this (forward, and backward through inputs and weights)."""
    total = 0
    for layer in _walk(model):
        if isinstance(layer, layers.LSTM):
            steps, inputs = layer.input.shape[1], layer.input.shape[2]
            total += 2 * steps * 4 * layer.units * (inputs + layer.units)
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def cudnn_eligible(model: keras.Model) -> bool:
    """True when every LSTM layer meets the cuDNN kernel's conditions."""
    lstms = [layer for layer in _walk(model) if isinstance(layer, layers.LSTM)]
    return bool(lstms) and all(
        lstm.activation.__name__ == "tanh"
        and lstm.recurrent_activation.__name__ == "sigmoid"
        and lstm.recurrent_dropout == 0
        and not lstm.unroll
        and lstm.use_bias
        for lstm in lstms
    )


def _walk(model):
    for layer in model.layers:
        yield layer
        inner = getattr(layer, "forward_layer", None)
        if inner is not None:
            yield inner
            yield layer.backward_layer
