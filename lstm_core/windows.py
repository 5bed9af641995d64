"""3-D windows (samples, timesteps, features) over a Panel, never crossing series boundaries.

A training sample is an input window of `window` rows and the next `chunk` target values (plus,
for known-ahead covariates, their values over those `chunk` steps). Windows are gathered from a
`sliding_window_view` of the value array, so building them costs one copy of what training
consumes and no Python loop. Training draws a bounded random sample of windows per series each
epoch, so an epoch's cost does not grow with series length.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lstm_core.panel import Panel


class Windows(NamedTuple):
    """Training samples cut from a panel: inputs, targets and the known-ahead covariates over the targets."""

    x: np.ndarray  # (samples, window, features) inputs
    y: np.ndarray  # (samples, chunk) targets: the next `chunk` values of feature 0
    future: np.ndarray | None  # (samples, chunk, K) known-ahead covariates over the targets, or None


def validation_span(steps: int, chunk: int) -> int:
    """Points at the end of each series that validation targets cover: whole chunks covering `steps`."""
    return chunk * -(-steps // chunk)


def min_train_length(chunk: int = 1, min_input: int = 1) -> int:
    """Real points from which the network learns a series: one chunk of targets after `min_input` real
    input points (the run's patch: `validation.min_input`). Shorter series have no training window."""
    return min_input + chunk


class WindowPlan(NamedTuple):
    """Where each series' training and validation windows lie, from its length alone.

    pad: (S,) rows of front padding (the series' first value repeated) added before windowing;
    first_target: (S,) the lowest target position usable for training, in padded positions;
    holdout: (S,) validation points at each series' end that training never targets (0: the series only
    trains; validation drops before the series does).
    """

    pad: np.ndarray
    first_target: np.ndarray
    holdout: np.ndarray

    def select(self, mask: np.ndarray) -> WindowPlan:
        """The plan of the series where `mask` (S,) is True."""
        return WindowPlan(self.pad[mask], self.first_target[mask], self.holdout[mask])


def plan_windows(lengths: np.ndarray, window: int, chunk: int, span: int, min_input: int = 1) -> WindowPlan:
    """The window plan of series of `lengths` real points for a network of input size `window` forecasting
    `chunk` steps, with `span` validation points per series and `min_input` real points in every input.

    A long series (at least `window + chunk + span` points) is windowed as it is: full windows of real
    history, its last `span` points for validation. A shorter one is padded at the front by `window -
    min_input` rows so that every position with at least `min_input` real input points gives a training
    window (short data have few windows: use all of them, as N-BEATS and ES-RNN did); it keeps its last
    `span` points for validation only when a training chunk still precedes them, else it only trains.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    min_input = max(1, min(int(min_input), int(window)))
    short = lengths < window + chunk + span
    pad = np.where(short, window - min_input, 0).astype(np.int64)
    holdout = np.where(lengths >= span + min_train_length(chunk, min_input), span, 0).astype(np.int64)
    first = np.full(len(lengths), window, dtype=np.int64)
    return WindowPlan(pad, first, holdout)


def gather(values: np.ndarray, starts: np.ndarray, window: int, chunk: int = 1,
           known: tuple[int, ...] = ()) -> Windows:
    """Inputs `values[s:s+window]`, targets `values[s+window : s+window+chunk, 0]` for each global start `s`."""
    if len(values) < window:  # no window fits anywhere (a panel of a few very short series): none to gather
        f = values.shape[1]
        return Windows(np.zeros((0, window, f), values.dtype), np.zeros((0, chunk), values.dtype),
                       np.zeros((0, chunk, len(known)), values.dtype) if known else None)
    view = sliding_window_view(values, window, axis=0)  # (N - window + 1, F, window), no copy
    x = view[starts].transpose(0, 2, 1)  # one copy; contiguous when F == 1
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    ahead = starts[:, None] + window + np.arange(chunk)[None, :]  # (samples, chunk) rows of the targets
    y = values[ahead, 0]
    future = values[ahead][:, :, list(known)] if known else None
    return Windows(x, y, future)


def target_bounds(panel: Panel, window: int, holdout: int | np.ndarray, chunk: int = 1,
                  first_target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per series, the local first-target positions usable for training: [lo, length - holdout - chunk], where
    lo is `first_target` (per series, default `window`); `holdout` is one count or one per series."""
    lo = np.full(panel.n_series, window, dtype=np.int64) if first_target is None else \
        np.maximum(np.asarray(first_target, dtype=np.int64), window)
    return lo, panel.lengths - np.asarray(holdout, dtype=np.int64) - chunk + 1


def windows_per_series(panel: Panel, window: int, holdout: int | np.ndarray, chunk: int, per_series: int,
                       min_per_epoch: int = 0, first_target: np.ndarray | None = None) -> int:
    """Windows drawn per series in an epoch: `per_series`, raised so the epoch has about `min_per_epoch`
    windows when the panel has that many distinct ones.

    Why: a fixed draw per series gives a 40-series panel a tenth of the gradient steps of a 400-series
    one per epoch, and early stopping's patience then ends its training before it has learnt the shape.
    """
    lo, hi = target_bounds(panel, window, holdout, chunk, first_target)
    available = int(np.maximum(hi - lo, 0).sum())
    if panel.n_series == 0:
        return per_series
    return max(per_series, math.ceil(min(min_per_epoch, available) / panel.n_series))


def sample_windows(
    panel: Panel, window: int, per_series: int, rng: np.random.Generator, holdout: int | np.ndarray = 0,
    values: np.ndarray | None = None, chunk: int = 1, known: tuple[int, ...] = (),
    first_target: np.ndarray | None = None,
) -> Windows:
    """Up to `per_series` random windows per series (with replacement); no target among the last `holdout` points
    (one count or one per series), none before `first_target` (per series; default `window`)."""
    lo, hi = target_bounds(panel, window, holdout, chunk, first_target)
    avail = np.maximum(hi - lo, 0)
    take = np.minimum(avail, per_series)
    draws = rng.random((panel.n_series, per_series))
    local_t = lo[:, None] + np.floor(draws * avail[:, None]).astype(np.int64)
    mask = np.arange(per_series)[None, :] < take[:, None]
    starts = (panel.offsets[:-1, None] + local_t - window)[mask]
    values = panel.values.astype(np.float32) if values is None else values
    return gather(values, starts, window, chunk, known)


def tail_windows(panel: Panel, window: int, steps: int, chunk: int = 1, dtype=np.float32,
                 known: tuple[int, ...] = (), series: np.ndarray | None = None) -> Windows:
    """Chronological validation windows: whole chunks ending at each series' end and covering its last
    `steps` points, for the series that have a full window before them (and, given `series` (S,) bool, only
    for those it marks). Ordered by series, then time."""
    n_chunks = -(-steps // chunk)
    first = panel.lengths[:, None] - chunk * np.arange(n_chunks, 0, -1)[None, :]  # first target of each chunk
    mask = first >= window
    if series is not None:
        mask &= np.asarray(series, dtype=bool)[:, None]
    starts = (panel.offsets[:-1, None] + first - window)[mask]
    return gather(panel.values.astype(dtype, copy=False), starts, window, chunk, known)


def all_windows(panel: Panel, window: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Every (input, next value) pair of every series (one-step targets; benchmarks and tests).

    A series' windows are one contiguous run of the sliding view, so each is copied with a
    single slice into the preallocated result (no index arrays).
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


def last_windows(panel: Panel, window: int, dtype=np.float32) -> np.ndarray:
    """(S, window, F): the latest window of each series, the seed of a forecast."""
    return panel.last_values(window).astype(dtype)
