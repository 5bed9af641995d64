"""Recursive multi-step forecasts: each prediction becomes the next input.

All series go through the whole horizon in one compiled call (a `tf.function`
with the loop inside), instead of one `predict` per series per step.
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

# Compiled loops per model, so repeated calls do not trace again.
_LOOPS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def _compiled_loop(model: keras.Model, window_len: int, horizon: int, n_cov: int):
    cache = _LOOPS.setdefault(model, {})
    key = (window_len, horizon, n_cov)
    if key not in cache:
        _, length, features = model.input_shape
        # One trace for every batch size: a graph traced for a static batch shape may pick other
        # kernels than the shape-generic one, so results would depend on which batch sizes came first.
        signature = [tf.TensorSpec([None, length, features], tf.float32),
                     tf.TensorSpec([None, horizon, n_cov], tf.float32)]

        @tf.function(input_signature=signature)
        def loop(window, future):
            out = tf.TensorArray(tf.float32, size=horizon)
            for h in tf.range(horizon):
                yhat = tf.cast(model(window, training=False), tf.float32)  # (batch, 1)
                out = out.write(h, yhat[:, 0])
                row = yhat[:, None, :]
                if n_cov:
                    row = tf.concat([row, future[:, h][:, None, :]], axis=-1)
                window = tf.concat([window[:, 1:, :], row], axis=1)
            return tf.transpose(out.stack())

        cache[key] = loop
    return cache[key]


def recursive_forecast(
    model: keras.Model,
    windows: np.ndarray,
    horizon: int,
    future_covariates: np.ndarray | None = None,
    batch_size: int = 16384,
) -> np.ndarray:
    """Forecast `horizon` steps for each window (S, L, F); returns scaled targets (S, horizon).

    `future_covariates` (S, horizon, F-1) supplies known future covariates; without it
    the last observed covariate values are carried forward.
    """
    windows = np.asarray(windows, dtype=np.float32)
    s, _, f = windows.shape
    n_cov = f - 1
    if n_cov:
        if future_covariates is None:
            future_covariates = np.repeat(windows[:, -1:, 1:], horizon, axis=1)
        future = np.asarray(future_covariates, dtype=np.float32)
        if future.shape != (s, horizon, n_cov):
            raise ValueError(f"future covariates must have shape {(s, horizon, n_cov)}, got {future.shape}")
    else:
        future = np.zeros((s, horizon, 0), dtype=np.float32)
    loop = _compiled_loop(model, windows.shape[1], horizon, n_cov)
    parts = [loop(tf.constant(windows[i:i + batch_size]), tf.constant(future[i:i + batch_size])).numpy()
             for i in range(0, s, batch_size)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, horizon), np.float32)


def ensemble_forecast(models: list[keras.Model], windows: np.ndarray, horizon: int,
                      future_covariates: np.ndarray | None = None) -> np.ndarray:
    """Mean of each member's own recursive trajectory."""
    return np.mean([recursive_forecast(m, windows, horizon, future_covariates) for m in models], axis=0)


def stepwise_forecast(model: keras.Model, windows: np.ndarray, horizon: int,
                      future_covariates: np.ndarray | None = None) -> np.ndarray:
    """Reference implementation: one batched `predict` per step (used by tests and benchmarks)."""
    window = np.asarray(windows, dtype=np.float32).copy()
    out = np.zeros((window.shape[0], horizon), np.float32)
    for h in range(horizon):
        yhat = model.predict(window, verbose=0)[:, 0]
        out[:, h] = yhat
        row = yhat[:, None, None]
        if window.shape[2] > 1:
            cov = window[:, -1:, 1:] if future_covariates is None else future_covariates[:, h:h + 1, :]
            row = np.concatenate([row, cov], axis=-1)
        window = np.concatenate([window[:, 1:, :], row], axis=1)
    return out
