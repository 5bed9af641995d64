"""Accuracy measures per series and overall, for the model and a seasonal-naive reference.

The first functions work on (S, H) arrays at once. Overall figures are the mean of
per-series figures (each series weighs the same, as in the M4 competition).
`ErrorSums` / `MetricTotals` compute the same figures, plus interval coverage and MSIS,
from long rows as sums that merge across shards, backtest windows and runs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lstm_core.panel import Panel

METRICS = ("mae", "rmse", "smape", "mase")


def seasonal_naive(panel: Panel, horizon: int, season_length: int) -> np.ndarray:
    """(S, H): the last observed season repeated (season 1: the last value)."""
    m = max(1, season_length)
    m_eff = np.minimum(m, panel.lengths)
    h = np.arange(horizon)[None, :]
    # position from the end: m - (h mod m) steps back
    back = m_eff[:, None] - (h % m_eff[:, None])
    idx = panel.offsets[1:, None] - back
    return panel.y[idx]


def mase_scale(panel: Panel, season_length: int) -> np.ndarray:
    """(S,): mean absolute in-sample seasonal difference (MASE denominator)."""
    m = max(1, season_length)
    y, codes = panel.y, panel.codes()
    diff = np.abs(y[m:] - y[:-m])
    same = codes[m:] == codes[:-m]
    total = np.bincount(codes[m:][same], weights=diff[same], minlength=panel.n_series)
    count = np.bincount(codes[m:][same], minlength=panel.n_series)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def per_series(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Point accuracy of each series: {'mae', 'rmse', 'smape', 'mase'} -> (S,) arrays, in the units of y
    (sMAPE in percent, 0..200; MASE unitless).

    `actual`, `forecast`: (S, H); `scale`: (S,) MASE denominators (`mase_scale`). MASE is Hyndman & Koehler
    (2006, IJF 22(4)); sMAPE as in the M4 competition (Makridakis, Spiliotis & Assimakopoulos 2020), 0 where
    actual and forecast are both 0. A series whose scale is 0 or NaN gets a NaN MASE.
    """
    err = actual - forecast
    denom = np.abs(actual) + np.abs(forecast)
    with np.errstate(invalid="ignore", divide="ignore"):
        smape = np.mean(np.where(denom > 0, 200.0 * np.abs(err) / denom, 0.0), axis=1)
        mase = np.mean(np.abs(err), axis=1) / scale
    return {
        "mae": np.mean(np.abs(err), axis=1),
        "rmse": np.sqrt(np.mean(err**2, axis=1)),
        "smape": smape,
        "mase": np.where(np.isfinite(mase), mase, np.nan),
    }


def metrics_frame(series_ids: np.ndarray, actual: np.ndarray, forecasts: dict[str, np.ndarray],
                  scale: np.ndarray) -> pd.DataFrame:
    """Long frame: series_id (null for overall), metric, value, model — one row per combination."""
    frames = []
    for model_name, fc in forecasts.items():
        values = per_series(actual, fc, scale)
        for metric in METRICS:
            v = values[metric]
            frames.append(pd.DataFrame({"series_id": pd.Series(series_ids, dtype="string"), "metric": metric,
                                        "value": v.astype("float64"), "model": model_name}))
            overall = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            frames.append(pd.DataFrame({"series_id": pd.Series([pd.NA], dtype="string"), "metric": [metric],
                                        "value": [overall], "model": [model_name]}))
    out = pd.concat(frames, ignore_index=True)
    out["metric"] = out["metric"].astype("string")
    out["model"] = out["model"].astype("string")
    return out


# --- mergeable aggregations ---------------------------------------------------------------------------
# In the spirit of gluonts' `ev`: each forecast row adds to small per-key sums (errors, hits, interval
# scores); sums of disjoint shards or windows merge by addition, and only the last step turns them into
# metrics. A key is typically (series_id, cutoff): one series in one backtest window or earlier run.

POINT_SUMS = ("n", "n_bad", "abs_err", "sq_err", "smape")


def level_label(level: float) -> str:
    """The text of a level in column and metric names: 80 -> '80', 97.5 -> '97.5'."""
    return f"{float(level):g}"


def interval_columns(level: float) -> tuple[str, str]:
    """(lower, upper) column names of a level's interval: ('yhat_lo_80', 'yhat_hi_80')."""
    label = level_label(level)
    return f"yhat_lo_{label}", f"yhat_hi_{label}"


def interval_score(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float) -> np.ndarray:
    """Winkler/Gneiting interval score of each point (M4's MSIS numerator), in the units of y.

    (hi - lo) + 2/a (lo - y) 1{y < lo} + 2/a (y - hi) 1{y > hi}, with a = 1 - level/100 (Winkler 1972, JASA
    67(337); Gneiting & Raftery 2007, JASA 102(477)). MSIS divides its mean by the MASE scale (M4: Makridakis,
    Spiliotis & Assimakopoulos 2020, IJF 36(1)).
    """
    a = 1.0 - float(level) / 100.0
    y, lo, hi = (np.asarray(v, dtype=np.float64) for v in (y, lo, hi))
    return (hi - lo) + 2.0 / a * (lo - y) * (y < lo) + 2.0 / a * (y - hi) * (y > hi)


def _level_sums(level: float) -> tuple[str, str, str]:
    label = level_label(level)
    return f"n_{label}", f"hits_{label}", f"is_{label}"


def _group(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, first row of each group), groups in the sorted order of `columns` (nulls last).

    Integer codes and bincount instead of a pandas groupby over string keys: several times faster
    on the millions of rows of a large backtest."""
    key = np.zeros(len(frame), dtype=np.int64)
    for col in columns:
        codes, uniques = pd.factorize(frame[col], sort=True, use_na_sentinel=True)
        codes = np.where(codes < 0, len(uniques), codes)  # nulls form their own group, last
        key = key * (len(uniques) + 1) + codes
        key = pd.factorize(key, sort=True)[0].astype(np.int64)  # stay compact: no overflow with many keys
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return inverse.reshape(-1), first


@dataclass(frozen=True)
class ErrorSums:
    """Additive error statistics per key and model; merge shards and windows, then finalise.

    `frame` columns: the key columns, `model`, `scale` (the key's MASE denominator, constant per key),
    `n` (points), `n_bad` (points whose forecast or actual is not finite: the key's metrics are then
    NaN, as a NaN forecast makes `per_series` NaN), `abs_err`, `sq_err`, `smape` (sums of
    |e|, e^2 and 200|e|/(|y|+|f|)), and per interval level L: `n_L` (points with both bounds),
    `hits_L` (points inside [lo, hi]) and `is_L` (sum of interval scores).
    """

    frame: pd.DataFrame
    keys: tuple[str, ...]
    levels: tuple[float, ...] = ()

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, *, forecasts: Mapping[str, str], y: str = "y", scale: str = "scale",
                  keys: Sequence[str] = ("series_id", "cutoff"), interval_model: str | None = None,
                  levels: Sequence[float] = ()) -> ErrorSums:
        """Sum the errors of long rows (one row per forecast point).

        `forecasts` maps a model name to the column of `rows` holding its point forecast, e.g.
        {"lstm": "yhat", "seasonal_naive": "seasonal_naive"}; `scale` names the column holding each key's
        MASE denominator; the interval columns `yhat_lo_<L>`/`yhat_hi_<L>` of each level in `levels`
        belong to the model `interval_model` (rows where a bound is null are left out of its coverage).
        """
        keys = tuple(keys)
        levels = tuple(float(v) for v in levels)
        if levels and interval_model not in forecasts:
            raise ValueError(f"interval_model {interval_model!r} is not one of the forecasts {list(forecasts)}")
        missing = [c for c in (*keys, y, scale, *forecasts.values()) if c not in rows.columns]
        if levels:
            missing += [c for lv in levels for c in interval_columns(lv) if c not in rows.columns]
        if missing:
            raise ValueError(f"rows lack the columns {missing}")
        actual = rows[y].to_numpy(dtype=np.float64)
        inverse, first = _group(rows, keys)
        n_groups = len(first)
        key_rows = rows[list(keys)].iloc[first].reset_index(drop=True)
        scale_of = rows[scale].to_numpy(dtype=np.float64)[first]

        def total(values: np.ndarray) -> np.ndarray:
            return np.bincount(inverse, weights=values, minlength=n_groups)

        parts = []
        for model, column in forecasts.items():
            f = rows[column].to_numpy(dtype=np.float64)
            err = actual - f
            bad = ~np.isfinite(err)
            denom = np.abs(actual) + np.abs(f)
            with np.errstate(invalid="ignore", divide="ignore"):
                smape = np.where(denom > 0, 200.0 * np.abs(err) / denom, 0.0)
            part = key_rows.copy()
            part["model"] = model
            part["scale"] = scale_of
            part["n"] = np.bincount(inverse, minlength=n_groups).astype(np.int64)
            part["n_bad"] = np.bincount(inverse[bad], minlength=n_groups).astype(np.int64)
            part["abs_err"] = total(np.where(bad, 0.0, np.abs(err)))
            part["sq_err"] = total(np.where(bad, 0.0, err**2))
            part["smape"] = total(np.where(bad, 0.0, smape))
            for level in levels:
                n_col, hits_col, is_col = _level_sums(level)
                if model != interval_model:
                    part[n_col], part[hits_col], part[is_col] = 0, 0, 0.0
                    continue
                lo_col, hi_col = interval_columns(level)
                lo, hi = rows[lo_col].to_numpy(dtype=np.float64), rows[hi_col].to_numpy(dtype=np.float64)
                has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(actual)
                score = np.where(has, interval_score(actual, np.where(has, lo, 0), np.where(has, hi, 0), level), 0.0)
                part[n_col] = np.bincount(inverse[has], minlength=n_groups).astype(np.int64)
                part[hits_col] = np.bincount(inverse[has & (actual >= lo) & (actual <= hi)],
                                             minlength=n_groups).astype(np.int64)
                part[is_col] = total(score)
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keys, "model", "scale"])
        return cls(frame, keys, levels)._collapse() if len(forecasts) > 1 else cls(frame, keys, levels)

    def _sum_columns(self) -> list[str]:
        return [*POINT_SUMS, *(c for lv in self.levels for c in _level_sums(lv))]

    def _collapse(self) -> ErrorSums:
        """One row per key and model (sorted), the sums of duplicates added up."""
        group = [*self.keys, "model"]
        inverse, first = _group(self.frame, group)
        out = self.frame[[*group, "scale"]].iloc[first].reset_index(drop=True)
        for col in self._sum_columns():
            values = self.frame[col].to_numpy()
            summed = np.bincount(inverse, weights=values.astype(np.float64), minlength=len(first))
            out[col] = summed.astype(np.int64) if values.dtype.kind in "iu" else summed
        return ErrorSums(out, self.keys, self.levels)

    def merge(self, *others: ErrorSums) -> ErrorSums:
        """The sums of this and `others` together (same keys and levels; a key present in both adds up)."""
        for o in others:
            if o.keys != self.keys or o.levels != self.levels:
                raise ValueError(f"cannot merge sums keyed {o.keys} / levels {o.levels} "
                                 f"into {self.keys} / {self.levels}")
        frames = [f for f in (self.frame, *(o.frame for o in others)) if len(f)]
        if not frames:
            return self
        return ErrorSums(pd.concat(frames, ignore_index=True), self.keys, self.levels)._collapse()

    def metric_names(self) -> list[str]:
        """The point metrics, then `coverage_<level>` and `msis_<level>` for each interval level."""
        names = list(METRICS)
        for level in self.levels:
            names += [f"coverage_{level_label(level)}", f"msis_{level_label(level)}"]
        return names

    def per_key(self) -> pd.DataFrame:
        """Wide frame: the key columns, `model`, `points` and one column per metric of each key.

        Coverage and MSIS are NaN where the key has no interval; MASE and MSIS where the scale is
        not positive; every metric where a forecast point was not finite.
        """
        f = self.frame
        n = f["n"].to_numpy(dtype=np.float64)
        bad = f["n_bad"].to_numpy() > 0
        scale = f["scale"].to_numpy(dtype=np.float64)
        good_scale = np.isfinite(scale) & (scale > 0)
        out = f[[*self.keys, "model"]].copy()
        out["points"] = f["n"].astype("int64")
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = f["abs_err"].to_numpy() / n
            values = {"mae": mae, "rmse": np.sqrt(f["sq_err"].to_numpy() / n), "smape": f["smape"].to_numpy() / n,
                      "mase": np.where(good_scale, mae / np.where(good_scale, scale, 1.0), np.nan)}
            for level in self.levels:
                n_col, hits_col, is_col = _level_sums(level)
                n_l = f[n_col].to_numpy(dtype=np.float64)
                has = n_l > 0
                label = level_label(level)
                values[f"coverage_{label}"] = np.where(has, f[hits_col].to_numpy() / np.where(has, n_l, 1), np.nan)
                msis = f[is_col].to_numpy() / np.where(has, n_l, 1) / np.where(good_scale, scale, 1.0)
                values[f"msis_{label}"] = np.where(has & good_scale, msis, np.nan)
        for name, v in values.items():
            out[name] = np.where(bad, np.nan, v).astype(np.float64)
        return out

    def totals(self, by: Sequence[str] = ()) -> MetricTotals:
        """Pooled totals over the keys, grouped by the columns `by` (a subset of the keys) and model.

        Each metric's pooled value is a ratio of sums, so totals merge across shards by addition:
        coverage pools points (hits / points, as M4's ACD); every other metric is the mean of the
        per-key values that are not NaN (each series, or series x window, weighs the same, as M4).
        """
        by = list(by)
        if not set(by) <= set(self.keys):
            raise ValueError(f"group columns {by} are not among the keys {self.keys}")
        wide = self.per_key()
        rows = []
        coverage = {f"coverage_{level_label(lv)}": _level_sums(lv) for lv in self.levels}
        for name in self.metric_names():
            if name in coverage:
                n_col, hits_col, _ = coverage[name]
                ok = self.frame["n_bad"].to_numpy() == 0
                part = self.frame.loc[:, [*by, "model"]].assign(
                    total=np.where(ok, self.frame[hits_col], 0).astype(np.float64),
                    count=np.where(ok, self.frame[n_col], 0).astype(np.int64))
                part = part[part["count"] > 0]
            else:
                v = wide[name].to_numpy(dtype=np.float64)
                ok = ~np.isnan(v)
                part = wide.loc[ok, [*by, "model"]].assign(total=v[ok], count=1)
            rows.append(part.assign(metric=name))
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[*by, "model", "metric"])
        return MetricTotals(frame, tuple(by))._collapse()


@dataclass(frozen=True)
class MetricTotals:
    """Sums behind pooled metrics: columns `by...`, model, metric, total, count; value = total / count."""

    frame: pd.DataFrame
    by: tuple[str, ...]

    def _collapse(self) -> MetricTotals:
        group = [*self.by, "model", "metric"]
        out = self.frame.groupby(group, sort=True, dropna=False, observed=True)[["total", "count"]].sum().reset_index()
        return MetricTotals(out, self.by)

    def merge(self, *others: MetricTotals) -> MetricTotals:
        """These totals and `others` summed per group; ValueError when they are grouped by different keys."""
        for o in others:
            if o.by != self.by:
                raise ValueError(f"cannot merge totals grouped by {o.by} into totals grouped by {self.by}")
        return MetricTotals(pd.concat([self.frame, *(o.frame for o in others)], ignore_index=True), self.by)._collapse()

    def finalize(self) -> pd.DataFrame:
        """Columns `by...`, model, metric, value (NaN where no key had a value)."""
        out = self.frame[[*self.by, "model", "metric"]].copy()
        count = self.frame["count"].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["value"] = np.where(count > 0, self.frame["total"].to_numpy(dtype=np.float64) / count, np.nan)
        return out.reset_index(drop=True)

