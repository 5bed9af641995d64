"""A compact, numpy-first view of many series: one value array plus offsets (CSR style).

Series `i` occupies rows `offsets[i]:offsets[i+1]` of `values`; column 0 is
the target, further columns are covariates.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Panel:
    series_ids: np.ndarray  # (S,) str, sorted
    offsets: np.ndarray  # (S + 1,) int64
    values: np.ndarray  # (N, F) float64; column 0 is y
    feature_names: tuple[str, ...]
    last_ds: np.ndarray  # (S,) last timestamp per series
    freq: str

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, freq: str, covariates: list[str] | tuple[str, ...] = ()) -> "Panel":
        """`frame` must be validated: sorted by (series_id, ds), regular, finite."""
        if len(frame) == 0:
            return cls(np.array([], dtype=object), np.zeros(1, np.int64), np.zeros((0, 1 + len(covariates))),
                       ("y", *covariates), np.array([], dtype="datetime64[ns]"), freq)
        # Codes, not one Python string per row: sorted rows make each series one run of a code.
        codes, uniques = pd.factorize(frame["series_id"], sort=False)
        change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        starts = np.concatenate([[0], change])
        offsets = np.concatenate([starts, [len(codes)]]).astype(np.int64)
        values = frame[["y", *covariates]].to_numpy(dtype=np.float64)
        last_ds = frame["ds"].iloc[offsets[1:] - 1]
        ids = np.asarray(uniques, dtype=object)[codes[starts]]
        return cls(ids, offsets, values, ("y", *covariates), last_ds.to_numpy(), freq)

    @property
    def n_series(self) -> int:
        return len(self.series_ids)

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def y(self) -> np.ndarray:
        return self.values[:, 0]

    def codes(self) -> np.ndarray:
        """Series index of every row."""
        return np.repeat(np.arange(self.n_series), self.lengths)

    def drop_last(self, k: int) -> "Panel":
        """The panel without each series' last `k` points (the training part before a holdout)."""
        if k == 0:
            return self
        lengths = self.lengths - k
        if (lengths <= 0).any():
            raise ValueError(f"cannot drop {k} points: a series has only {int(self.lengths.min())}")
        keep = np.ones(len(self.values), dtype=bool)
        ends = self.offsets[1:]
        drop_idx = (ends[:, None] - np.arange(1, k + 1)[None, :]).ravel()
        keep[drop_idx] = False
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        last = _step_back(pd.DatetimeIndex(self.last_ds), self.freq, k)
        return replace(self, offsets=offsets, values=self.values[keep], last_ds=last)

    def last_values(self, k: int) -> np.ndarray:
        """(S, k, F): the last `k` rows of each series."""
        idx = self.offsets[1:, None] - np.arange(k, 0, -1)[None, :]
        return self.values[idx]

    def select(self, mask: np.ndarray) -> "Panel":
        """Keep the series where `mask` is true."""
        mask = np.asarray(mask, dtype=bool)
        lengths = self.lengths[mask]
        rows = np.repeat(mask, self.lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return replace(self, series_ids=self.series_ids[mask], offsets=offsets, values=self.values[rows],
                       last_ds=self.last_ds[mask])


def _step_back(last: pd.DatetimeIndex, freq: str, k: int) -> np.ndarray:
    offset = pd.tseries.frequencies.to_offset(freq)
    return (last - k * offset).to_numpy()
