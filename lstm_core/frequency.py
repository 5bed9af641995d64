"""Integer step positions of timestamps on a pandas frequency, and back.

Fixed frequencies (h, D, 15min...) are anchored at each series' first timestamp;
calendar ones (W-MON, MS, ME...) on their calendar grid.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick


def is_fixed(freq: str) -> bool:
    return isinstance(to_offset(freq), Tick)


def step_positions(ds: pd.Series, first: pd.Series, freq: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (position, on_grid) per timestamp; `first` is each row's series start."""
    offset = to_offset(freq)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset).value
        delta = (ds.to_numpy("datetime64[ns]").astype(np.int64) - first.to_numpy("datetime64[ns]").astype(np.int64))
        return delta // step, delta % step == 0
    idx = pd.DatetimeIndex(ds)
    grid = pd.date_range(idx.min(), idx.max(), freq=offset)
    if len(grid) == 0:
        return np.zeros(len(idx), dtype=np.int64), np.zeros(len(idx), dtype=bool)
    pos = grid.searchsorted(idx)
    on = np.zeros(len(idx), dtype=bool)
    inside = pos < len(grid)
    on[inside] = grid[pos[inside]] == idx[inside]
    return pos.astype(np.int64), on


def future_dates(last: pd.Timestamp, freq: str, steps: int) -> pd.DatetimeIndex:
    """The `steps` timestamps that follow `last` at `freq`."""
    return pd.date_range(last, periods=steps + 1, freq=freq)[1:]


def dates_after(last_ds: np.ndarray | pd.Series, freq: str, steps: int) -> np.ndarray:
    """(S, steps) timestamps continuing each series' last timestamp (vectorised for fixed freqs)."""
    last = pd.DatetimeIndex(last_ds)
    offset = to_offset(freq)
    if isinstance(offset, Tick):
        step = pd.Timedelta(offset)
        out = np.stack([last + step * (k + 1) for k in range(steps)], axis=1)
        return out
    cols = []
    current = last
    for _ in range(steps):
        current = current + offset
        cols.append(current)
    return np.stack(cols, axis=1)
