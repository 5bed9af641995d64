"""Recursive multi-step forecasts in chunks: each predicted chunk becomes part of the next input.

Every member of an ensemble and every series go through the whole horizon in one compiled call
(a `tf.function` with the loop inside, traced once for any batch size), instead of one `predict`
per series, step or member.
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from lstm_core import interrupt
from lstm_core.model import model_geometry

# Compiled loops per ensemble (keyed by its first member), so repeated calls do not trace again.
_LOOPS: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()


def _compiled_loop(members: list[keras.Model], horizon: int, known: tuple[int, ...]):
    geo = model_geometry(members[0])
    length, n_features, chunk, n_future = geo["input_size"], geo["n_features"], geo["chunk"], geo["n_future"]
    steps = -(-horizon // chunk)
    key = (tuple(id(m) for m in members), horizon, known)
    cache = _LOOPS.setdefault(members[0], {})
    if key in cache:
        return cache[key]
    n_cov = n_features - 1
    carried = [c for c in range(1, n_features) if c not in known]
    # Column order of a new row is [target, carried covariates..., known covariates...];
    # `order` puts them back in feature order.
    order = np.argsort(np.array([0, *carried, *known]))
    signature = [tf.TensorSpec([None, length, n_features], tf.float32),
                 tf.TensorSpec([None, steps * chunk, len(known)], tf.float32)]

    @tf.function(input_signature=signature)
    def loop(window, future):
        trajectories = []
        for member in members:  # unrolled at trace time: one graph for the whole ensemble
            w = window
            out = tf.TensorArray(tf.float32, size=steps)
            for j in tf.range(steps):
                ahead = future[:, j * chunk:(j + 1) * chunk, :]  # (batch, chunk, K)
                inputs = [w, ahead[:, :, :n_future]] if n_future else w
                yhat = tf.cast(member(inputs, training=False), tf.float32)  # (batch, chunk)
                out = out.write(j, yhat)
                rows = [yhat[:, :, None]]
                if n_cov:
                    last = w[:, -1:, :]
                    rows += [tf.repeat(tf.gather(last, carried, axis=2), chunk, axis=1)] if carried else []
                    rows += [ahead] if known else []
                row = tf.gather(tf.concat(rows, axis=-1), order, axis=-1) if n_cov else rows[0]
                w = tf.concat([w, row], axis=1)[:, -length:, :]
            trajectories.append(tf.reshape(tf.transpose(out.stack(), [1, 0, 2]), [-1, steps * chunk]))
        return tf.stack(trajectories)[:, :, :horizon]

    cache[key] = loop
    return loop


def recursive_forecast(
    members: keras.Model | list[keras.Model],
    windows: np.ndarray,
    horizon: int,
    future: np.ndarray | None = None,
    known: tuple[int, ...] | None = None,
    batch_size: int = 16384,
    reduce: bool = True,
) -> np.ndarray:
    """Forecast `horizon` steps from each window (S, L, F); returns model-space targets (S, horizon).

    `members`: one model or an ensemble built by `build_lstm` with the same geometry; each follows
    its own trajectory and the result is their mean (`reduce=False`: (members, S, horizon)).
    `known`: feature columns whose future values are known ahead (default: every covariate when
    `future` is given, none otherwise); `future` (S, horizon, len(known)) holds them. Other
    covariates are carried forward from the window's last row. Raises ValueError on shapes that
    do not fit the models.
    """
    members = list(members) if isinstance(members, (list, tuple)) else [members]
    windows = np.asarray(windows, dtype=np.float32)
    s, length, f = windows.shape
    geo = model_geometry(members[0])
    expected = (geo["input_size"], geo["n_features"])
    if (length, f) != expected:
        raise ValueError(f"windows of shape {(length, f)} do not fit the model's {expected}")
    if known is None:
        known = tuple(range(1, f)) if future is not None else ()
    known = tuple(int(c) for c in known)
    if geo["n_future"] and geo["n_future"] != len(known):
        raise ValueError(f"the model takes {geo['n_future']} known-ahead covariates, {len(known)} given")
    chunk = geo["chunk"]
    steps = -(-horizon // chunk)
    if known:
        if future is None:
            raise ValueError("future covariates are needed for the known-ahead columns")
        future = np.asarray(future, dtype=np.float32)
        if future.shape != (s, horizon, len(known)):
            raise ValueError(f"future covariates must have shape {(s, horizon, len(known))}, got {future.shape}")
        if steps * chunk > horizon:  # the last chunk reaches past the horizon: repeat the last known values
            future = np.concatenate([future, np.repeat(future[:, -1:], steps * chunk - horizon, axis=1)], axis=1)
    else:
        future = np.zeros((s, steps * chunk, 0), dtype=np.float32)
    loop = _compiled_loop(members, horizon, known)
    parts = []
    for i in range(0, s, batch_size):
        interrupt.check()  # a stop request (Ctrl-C, SIGTERM) ends the forecast between batches
        parts.append(loop(tf.constant(windows[i:i + batch_size]), tf.constant(future[i:i + batch_size])).numpy())
    out = np.concatenate(parts, axis=1) if parts else np.zeros((len(members), 0, horizon), np.float32)
    return out.mean(axis=0) if reduce else out


def stepwise_forecast(model: keras.Model, windows: np.ndarray, horizon: int, future: np.ndarray | None = None,
                      known: tuple[int, ...] | None = None) -> np.ndarray:
    """Reference implementation with one batched `predict` per chunk (tests and benchmarks)."""
    geo = model_geometry(model)
    chunk, n_future = geo["chunk"], geo["n_future"]
    window = np.asarray(windows, dtype=np.float32).copy()
    f = window.shape[2]
    known = tuple(range(1, f)) if known is None and future is not None else tuple(known or ())
    steps = -(-horizon // chunk)
    known_ahead: np.ndarray | None = None  # (S, steps x chunk, K) when there are known-ahead columns
    if known:
        known_ahead = np.asarray(future, dtype=np.float32)
        pad = steps * chunk - horizon
        if pad:
            known_ahead = np.concatenate([known_ahead, np.repeat(known_ahead[:, -1:], pad, axis=1)], axis=1)
    out = []
    for j in range(steps):
        ahead = None if known_ahead is None else known_ahead[:, j * chunk:(j + 1) * chunk]
        yhat = model.predict([window, ahead] if n_future else window, verbose=0).astype(np.float32)
        out.append(yhat)
        rows = np.repeat(window[:, -1:, :], chunk, axis=1)
        rows[:, :, 0] = yhat
        if ahead is not None:
            for i, c in enumerate(known):
                rows[:, :, c] = ahead[:, :, i]
        window = np.concatenate([window, rows], axis=1)[:, -window.shape[1]:]
    return np.concatenate(out, axis=1)[:, :horizon]
