"""Integer step positions of timestamps on a pandas frequency, and back; the frequency the data have.

Fixed frequencies (h, 15min...) are anchored at each series' first timestamp;
calendar ones (D, W-MON, MS, ME...) on their calendar grid.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick


def is_fixed(freq: str) -> bool:
    """True for a fixed-length step (hours, minutes, seconds), False for a calendar one (days, months...)."""
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


def dates_before(last_ds: np.ndarray | pd.Series, freq: str, lengths: np.ndarray) -> pd.DatetimeIndex:
    """(sum(lengths),) timestamps of every point of each series, series after series, each ending at its
    `last_ds` on the grid of `freq` (vectorised for fixed freqs; calendar ones once per distinct end)."""
    last = pd.DatetimeIndex(last_ds)
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.repeat(np.arange(len(lengths)), lengths)
    back = (np.repeat(np.cumsum(lengths), lengths) - 1 - np.arange(int(lengths.sum()))).astype(np.int64)
    offset = to_offset(freq)
    if isinstance(offset, Tick):
        return last[ends] - pd.to_timedelta(back * pd.Timedelta(offset).value, unit="ns")
    out = np.empty(len(back), dtype=object)
    for end in pd.unique(last):
        rows = np.flatnonzero(last[ends] == end)
        grid = pd.date_range(end=end, periods=int(back[rows].max()) + 1, freq=offset)
        out[rows] = np.asarray(grid)[len(grid) - 1 - back[rows]]
    return pd.DatetimeIndex(list(out)) if len(out) else last[:0]


# Series inferred when the frequency is not given: enough to see disagreement, cheap on any input.
INFER_SERIES = 200


def same_frequency(a: str, b: str) -> bool:
    """True when two frequency strings mean the same step ('H' and 'h', 'W' and 'W-SUN')."""
    try:
        return to_offset(a) == to_offset(b)
    except (ValueError, TypeError):
        return a == b


def series_frequency(ds: np.ndarray | pd.Series | pd.DatetimeIndex) -> str | None:
    """The frequency one series' timestamps follow (`pandas.infer_freq`), or None when they do not tell.

    Gaps make `infer_freq` give up on the whole series; then short runs of the series vote (a gap
    spoils only the runs it falls in), and last the commonest fixed step, if every step is a multiple.
    """
    idx = pd.DatetimeIndex(ds).sort_values().unique()
    if len(idx) < 3:
        return None
    freq = _infer(idx)
    if freq is not None:
        return freq
    size = max(5, min(25, len(idx) // 4))
    if len(idx) >= 2 * size:
        starts = np.unique(np.linspace(0, len(idx) - size, 8).astype(int))
        votes = Counter(f for f in (_infer(idx[a:a + size]) for a in starts) if f is not None)
        if votes:
            return votes.most_common(1)[0][0]
    steps = np.diff(idx.asi8)
    steps = steps[steps > 0]
    if not len(steps):
        return None
    common = Counter(steps.tolist()).most_common(1)[0][0]
    if (steps % common).any():
        return None
    try:
        return to_offset(pd.Timedelta(int(common), "ns")).freqstr
    except (ValueError, TypeError):
        return None


def _infer(idx: pd.DatetimeIndex) -> str | None:
    try:
        return pd.infer_freq(idx)
    except (ValueError, TypeError):
        return None


class FrequencyDisagreement(ValueError):
    """Series follow different frequencies; `examples` maps frequency -> a series that follows it."""

    def __init__(self, examples: dict[str, str]) -> None:
        self.examples = examples
        listed = ", ".join(f"{sid!r} looks {freq!r}" for freq, sid in examples.items())
        super().__init__(f"series disagree on the frequency ({listed}); set freq to the one meant")


def infer_frequency(groups: list[tuple[str, pd.Series]] | pd.DataFrame, limit: int = INFER_SERIES) -> str | None:
    """The one frequency the series follow, from up to `limit` series; None when none can tell.

    `groups` is a frame with series_id and ds columns (ds already parsed), or (series id, timestamps)
    pairs. Raises FrequencyDisagreement when two series follow different frequencies.
    """
    if isinstance(groups, pd.DataFrame):
        groups = [(str(k), g) for k, g in groups.groupby("series_id", sort=False)["ds"]]
    found: dict[str, str] = {}  # frequency -> first series that follows it
    for sid, ds in groups[:limit]:
        freq = series_frequency(ds)
        if freq is None:
            continue
        if not any(same_frequency(freq, f) for f in found):
            found[freq] = sid
    if len(found) > 1:
        raise FrequencyDisagreement(found)
    return next(iter(found), None)
