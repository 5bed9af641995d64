"""3-D windows (samples, timesteps, features) over a Panel, never crossing series boundaries.

Windows are gathered from a `sliding_window_view` of the value array, so
building them costs one copy of what training consumes and no Python loop.
Training draws a bounded random sample of windows per series each epoch, so an
epoch's cost does not grow with series length.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lstm_core.panel import Panel


def gather(values: np.ndarray, starts: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs `values[s:s+window]` and target `values[s+window, 0]` for each global start row `s`."""
    view = sliding_window_view(values, window, axis=0)  # (N - window + 1, F, window), no copy
    x = view[starts].transpose(0, 2, 1)  # one copy; contiguous when F == 1
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return x, values[starts + window, 0]


def target_bounds(panel: Panel, window: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series, local target positions usable for training: [window, length - holdout)."""
    lo = np.full(panel.n_series, window, dtype=np.int64)
    return lo, panel.lengths - holdout


def all_windows(panel: Panel, window: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Every (input, next value) pair of every series.

    A series' windows are one contiguous run of the sliding view, so each is
    copied with a single slice into the preallocated result (no index arrays).
    """
    values = panel.values.astype(dtype, copy=False)
    counts = np.maximum(panel.lengths - window, 0)
    pos = np.concatenate([[0], np.cumsum(counts)])
    view = sliding_window_view(values, window, axis=0).transpose(0, 2, 1)  # (N - window + 1, window, F)
    x = np.empty((int(pos[-1]), window, values.shape[1]), dtype)
    y = np.empty(int(pos[-1]), dtype)
    for i in np.flatnonzero(counts):
        o, a, b = panel.offsets[i], pos[i], pos[i + 1]
        x[a:b] = view[o:o + counts[i]]
        y[a:b] = values[o + window:o + window + counts[i], 0]
    return x, y


def sample_windows(
    panel: Panel, window: int, per_series: int, rng: np.random.Generator, holdout: int = 0,
    values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_series` random windows per series (with replacement), targets before the last `holdout` points."""
    lo, hi = target_bounds(panel, window, holdout)
    avail = np.maximum(hi - lo, 0)
    take = np.minimum(avail, per_series)
    draws = rng.random((panel.n_series, per_series))
    local_t = lo[:, None] + np.floor(draws * avail[:, None]).astype(np.int64)
    mask = np.arange(per_series)[None, :] < take[:, None]
    starts = (panel.offsets[:-1, None] + local_t - window)[mask]
    values = panel.values.astype(np.float32) if values is None else values
    return gather(values, starts, window)


def tail_windows(panel: Panel, window: int, steps: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Chronological validation windows: the last `steps` targets of each series that have a full window."""
    n = panel.lengths
    local_t = n[:, None] - np.arange(steps, 0, -1)[None, :]
    mask = local_t >= window
    starts = (panel.offsets[:-1, None] + local_t - window)[mask]
    return gather(panel.values.astype(dtype, copy=False), starts, window)


def last_windows(panel: Panel, window: int, dtype=np.float32) -> np.ndarray:
    """(S, window, F): the latest window of each series, the seed of a forecast."""
    return panel.last_values(window).astype(dtype)
