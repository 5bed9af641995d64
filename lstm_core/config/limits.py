"""Bounds of the numeric settings and the form of a Dask scheduler address (a leaf of the config package).

Far above any real job, low enough that a planted or mistyped value fails validation at once (a horizon of
1e8 took seconds to validate; epochs of 1e9 or 1e6 units would never end).
"""
from __future__ import annotations

DASK_ADDRESS = r"^(tcp|tls)://[^\s/:]+:[0-9]{1,5}$"
MAX_STEPS = 100_000  # horizon, seasons, chunk, patch, backtest step, max_gap, validation steps
MAX_WINDOW = 1_000_000  # input steps per window
MAX_UNITS, MAX_LAYERS = 4_096, 16  # LSTM units per layer, stacked layers
MAX_SERIES = 100_000_000  # max_series, shard_size
MAX_MINUTES = 10_080.0  # a week: max_train_minutes, tuning.minutes
