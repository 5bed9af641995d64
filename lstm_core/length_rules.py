"""The length rules: how long a series must be, and for what (README "One minimum length").

Shortness is never a reason to skip a series (`MIN_POINTS`, `min_length`); the network learns a series from
one patch of real input and one chunk of targets (`min_input`, `min_train_length`), and hands shorter ones to
the statistical fallback with the reason (`network_reasons`). A leaf module: validation, the engine, the
backtest and tuning all read the same rules.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lstm_core.errors import ConfigError
from lstm_core.windows import min_train_length as min_train_length_of

if TYPE_CHECKING:
    from lstm_core.config import ForecastConfig

# Shortness is never a reason to skip a series: one valid observation is enough to be forecast (by the
# network, or by the fallback when the network has no window to learn it from).
MIN_POINTS = 1


def min_length(config: ForecastConfig | None = None) -> int:
    """The one minimum series length of a run: `MIN_POINTS` (1), whatever the window, chunk and horizon.

    Windows, validation and backtest cutoffs follow what each series allows (`windows.plan_windows`,
    `backtest.training_cutoff`); the network learns from series of `min_train_length(config)` points.
    """
    return MIN_POINTS


def min_input(config: ForecastConfig) -> int:
    """Real points every training input holds at least: one patch (the LSTM's first step sees real values;
    the rest of a short series' window is front padding). Measured on M3 yearly: 1 point gave OWA 0.970,
    one patch 0.931 (window 12, LSTM alone, holdout of the training part)."""
    if config.window is None:  # min(patch, None) would fail without saying why
        raise ConfigError("the network's minimum input needs the window: resolve the configuration first "
                          "(config.resolved(freq))")
    return int(min(config.patch_length, config.window))


def min_train_length(config: ForecastConfig) -> int:
    """Points from which the network learns a series (`windows.min_train_length`): one chunk of targets after
    one patch of real input; the rest of its window is front padding. Shorter series go to the fallback."""
    return min_train_length_of(config.chunk_length, min_input(config))


def network_reasons(lengths: np.ndarray, config: ForecastConfig) -> list[str | None]:
    """Per series of `lengths` points: None when the network learns and serves it, else why it is handed to
    the fallback (too few points for one training window)."""
    need = min_train_length(config)
    return [None if int(n) >= need else
            f"{int(n)} points: the network needs {need} to learn a series (an input of {min_input(config)} + "
            f"a chunk of {config.chunk_length} targets); handed to the fallback" for n in np.asarray(lengths)]


def length_rule(config: ForecastConfig, horizon: bool = False) -> str:
    """The network's minimum spelled out, for messages."""
    return f"input {min_input(config)} + chunk {config.chunk_length}"
