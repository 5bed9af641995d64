"""Per-series scaling fitted on each series' training part only, with an exact inverse.

Fitting on the whole series would leak the future into training (the seed
tutorial's MinMaxScaler did); callers pass the training panel to `fit`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from lstm_core.panel import Panel

KINDS = ("standard", "minmax", "naive")


class ScalerState(TypedDict):
    """`SeriesScaler` as JSON (the model version's `scaler.json`)."""

    kind: str  # one of KINDS
    series_ids: list[str]  # (S,)
    loc: list[list[float]]  # (S, F)
    scale: list[list[float]]  # (S, F)


@dataclass(frozen=True)
class SeriesScaler:
    """z = (y - loc) / scale for each series; historic and future covariates are scaled the same way, per
    column; calendar and static columns are left as they are (loc 0, scale 1)."""

    kind: str
    series_ids: np.ndarray  # (S,)
    loc: np.ndarray  # (S, F)
    scale: np.ndarray  # (S, F)

    @classmethod
    def fit(cls, panel: Panel, kind: str = "standard") -> SeriesScaler:
        """Per-series, per-column loc and scale of `panel` for `kind` ('standard': mean/std, 'minmax': min/range,
        'naive': mean/mean absolute one-step difference); a zero or non-finite scale becomes 1. ValueError for an
        unknown kind.
        """
        if kind not in KINDS:
            raise ValueError(f"scaler must be one of {KINDS}, not {kind!r}")
        codes, v, n = panel.codes(), panel.values, panel.lengths[:, None]
        s, f = panel.n_series, panel.n_features
        sums = _group_sum(codes, v, s)
        mean = sums / n
        if kind == "standard":
            loc = mean
            scale = np.sqrt(_group_sum(codes, (v - mean[codes]) ** 2, s) / n)
        elif kind == "minmax":
            lo = np.full((s, f), np.inf)
            hi = np.full((s, f), -np.inf)
            np.minimum.at(lo, codes, v)
            np.maximum.at(hi, codes, v)
            loc, scale = lo, hi - lo
        else:  # naive: errors measured in units of the one-step naive forecast's error (MASE-like loss)
            diff = np.abs(np.diff(v, axis=0))
            same = codes[1:] == codes[:-1]
            loc = mean
            scale = _group_sum(codes[1:][same], diff[same], s) / np.maximum(n - 1, 1)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        # Calendar and static columns are already on a common scale (sine/cosine, one-hot, standardised
        # over the series): per-series scaling would turn a constant static value into zero.
        fixed = np.array([r in ("calendar", "static") for r in panel.roles], dtype=bool)
        if fixed.any():
            loc, scale = loc.copy(), scale.copy()
            loc[:, fixed], scale[:, fixed] = 0.0, 1.0
        return cls(kind, panel.series_ids.copy(), loc, scale)

    def _rows(self, panel: Panel) -> np.ndarray:
        if panel.n_series == len(self.series_ids) and np.array_equal(panel.series_ids, self.series_ids):
            return np.arange(len(self.series_ids))
        pos = np.searchsorted(self.series_ids, panel.series_ids)
        pos = np.clip(pos, 0, max(len(self.series_ids) - 1, 0))
        if len(self.series_ids) == 0 or not np.array_equal(self.series_ids[pos], panel.series_ids):
            missing = [s for s in panel.series_ids if s not in set(self.series_ids)]
            raise KeyError(f"scaler was not fitted on series {missing[:5]}")
        return pos

    def transform(self, panel: Panel) -> Panel:
        """`panel` with every column scaled as (value - loc) / scale of its series; KeyError for a series not fitted."""
        from dataclasses import replace

        rows = self._rows(panel)[panel.codes()]
        return replace(panel, values=(panel.values - self.loc[rows]) / self.scale[rows])

    def inverse_y(self, z: np.ndarray, series_ids: np.ndarray) -> np.ndarray:
        """Unscale target values `z` of shape (S, ...) belonging to `series_ids`."""
        rows = self._rows_for(series_ids)
        shape = (-1,) + (1,) * (z.ndim - 1)
        return z * self.scale[rows, 0].reshape(shape) + self.loc[rows, 0].reshape(shape)

    def _rows_for(self, series_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.series_ids, series_ids)
        pos = np.clip(pos, 0, max(len(self.series_ids) - 1, 0))
        if not np.array_equal(self.series_ids[pos], series_ids):
            raise KeyError("scaler was not fitted on some of these series")
        return pos

    def to_dict(self) -> ScalerState:
        """JSON-ready state (plain lists), read back by `from_dict`."""
        return ScalerState(kind=self.kind, series_ids=[str(s) for s in self.series_ids],
                           loc=self.loc.tolist(), scale=self.scale.tolist())

    @classmethod
    def from_dict(cls, d: ScalerState) -> SeriesScaler:
        """The scaler `to_dict` wrote (loc and scale reshaped to (S, F)); KeyError when a field is missing."""
        return cls(d["kind"], np.array(d["series_ids"], dtype=object),
                   np.asarray(d["loc"], dtype=np.float64).reshape(len(d["series_ids"]), -1),
                   np.asarray(d["scale"], dtype=np.float64).reshape(len(d["series_ids"]), -1))


def _group_sum(codes: np.ndarray, v: np.ndarray, s: int) -> np.ndarray:
    out = np.zeros((s, v.shape[1]))
    for j in range(v.shape[1]):
        out[:, j] = np.bincount(codes, weights=v[:, j], minlength=s)
    return out


@dataclass(frozen=True)
class TargetTransform:
    """log(y) for the series whose history is all positive (kind 'auto' or 'log'), identity otherwise.

    Errors on a log scale are relative errors: one global model then treats series of very
    different levels alike, and a multiplicative trend becomes additive.
    """

    kind: str
    log_mask: np.ndarray  # (S,) True where the series is modelled as log(y)

    @classmethod
    def fit(cls, panel: Panel, kind: str = "auto") -> TargetTransform:
        """Which series to model as log(y): 'auto' those whose history is all positive, 'log' all (DataValidationError
        naming a series with a value <= 0), 'none' none; ValueError for another kind.
        """
        if kind not in ("auto", "log", "none"):
            raise ValueError(f"target_transform must be auto, log or none, not {kind!r}")
        if kind == "none" or panel.n_series == 0:
            return cls(kind, np.zeros(panel.n_series, dtype=bool))
        positive = np.minimum.reduceat(panel.y, panel.offsets[:-1]) > 0
        if kind == "log" and not positive.all():
            from lstm_core.errors import DataValidationError

            bad = [str(s) for s in panel.series_ids[~positive][:3]]
            # bad input for this setting (exit code 2), not a failure of the run
            raise DataValidationError(f"target_transform 'log' needs positive values; series {bad} have values <= 0",
                                      column="y", series_id=bad[0])
        return cls(kind, positive)

    def apply(self, panel: Panel) -> Panel:
        """`panel` with y replaced by log(y) for the series modelled on a log scale (other columns unchanged)."""
        if not self.log_mask.any():
            return panel
        from dataclasses import replace

        rows = np.repeat(self.log_mask, panel.lengths)
        values = panel.values.copy()
        values[rows, 0] = np.log(values[rows, 0])
        return replace(panel, values=values)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Back to original units for (S, ...) arrays in model space."""
        out = np.array(y, dtype=np.float64, copy=True)
        with np.errstate(over="ignore"):
            out[self.log_mask] = np.exp(np.minimum(out[self.log_mask], 700.0))
        return out
