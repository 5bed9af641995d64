"""Calibrating conformal intervals: backtest residuals -> `ConformalIntervals` (see `lstm_core.intervals`).

Steps 1 to 3 of the method `lstm_core.intervals` describes: each residual scored on its window's
naive-error scale (`score_table`, `_scores`), per-series width factors shrunk to the pool
(`_series_factors`, leave-its-window-out), and per step the split-conformal quantiles of the pooled scores
(`_conformal_quantiles`, ranks of Vovk, Gammerman & Shafer 2005; Lei et al. 2018), borrowing neighbouring
steps when a step has too few scores (`min_scores`). `fit_conformal` fits on all windows for the published
forecast; `held_out_bounds` gives each backtest window intervals fitted only on the windows before it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lstm_core.intervals import KINDS, METHODS, PRIOR_WINDOWS, ConformalIntervals
from lstm_core.metrics import interval_columns

_TINY = np.finfo(np.float64).tiny


def _scores(kind: str, y: np.ndarray, yhat: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if kind == "log":
        # An actual <= 0 after a positive history is a large miss below, not a missing score.
        return (np.log(np.maximum(y, _TINY)) - np.log(yhat)) / scale
    return (y - yhat) / scale


def min_scores(level: float) -> int:
    """Fewest scores whose split-conformal ranks at `level` stay inside the sample (95: 39, 80: 9)."""
    half = (1.0 - float(level) / 100.0) / 2
    n = max(1, math.ceil((1 - half) / half - 1e-9))
    while math.ceil((n + 1) * (1 - half) - 1e-9) > n:  # guard the float edge
        n += 1
    return n


def _conformal_quantiles(t: np.ndarray, steps: np.ndarray, horizon: int,
                         levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """((L, 2, H) lower/upper quantiles of scores `t` per step, (H,) points per step).

    A step with fewer scores than a level needs (`min_scores`: few series, one window) borrows the
    scores of its neighbouring steps, h - r .. h + r with the smallest r that gives enough, so the
    quantile is not just the largest score seen; with too few scores in all, the extremes are used.
    """
    q = np.full((len(levels), 2, horizon), np.nan)
    counts = np.bincount(steps, minlength=horizon)[:horizon]
    order = np.lexsort((t, steps))
    t_sorted, s_sorted = t[order], steps[order]
    starts = np.r_[np.searchsorted(s_sorted, np.arange(horizon)), len(s_sorted)]
    for j, level in enumerate(levels):
        a = 1.0 - float(level) / 100.0
        need = min_scores(level)
        for h in range(horizon):
            r = 0
            while counts[max(0, h - r):h + r + 1].sum() < need and (h - r > 0 or h + r < horizon - 1):
                r += 1
            lo_h, hi_h = max(0, h - r), min(horizon, h + r + 1)
            pool = t_sorted[starts[lo_h]:starts[hi_h]]
            if r:
                pool = np.sort(pool)
            n = len(pool)
            if n == 0:
                continue
            # the epsilons keep exact ranks exact (10 x 0.1 must floor to 1, not 0)
            lo_rank = min(max(math.floor((n + 1) * a / 2 + 1e-9), 1), n)
            hi_rank = max(min(math.ceil((n + 1) * (1 - a / 2) - 1e-9), n), 1)
            q[j, 0, h] = pool[lo_rank - 1]
            q[j, 1, h] = pool[hi_rank - 1]
    return q, counts


def score_table(rows: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
    """Backtest rows (series_id, cutoff, step, y, yhat) joined to their window's scales
    (series_id, cutoff, window, interval_scale, log_scale): one row per residual."""
    need = {"series_id", "cutoff", "step", "y", "yhat"} - set(rows.columns)
    if need:
        raise ValueError(f"backtest rows lack the columns {sorted(need)}")
    table = rows[["series_id", "cutoff", "step", "y", "yhat"]].merge(
        scales[["series_id", "cutoff", "window", "interval_scale", "log_scale"]], on=["series_id", "cutoff"],
        how="left", validate="many_to_one")
    if table["interval_scale"].isna().any():
        raise ValueError("backtest rows without a scale for their (series_id, cutoff)")
    return table


def _log_windows(table: pd.DataFrame) -> np.ndarray:
    """Rows of windows scored on the log scale: a log scale (positive history) and every yhat > 0."""
    with np.errstate(invalid="ignore"):
        positive = pd.Series(table["yhat"].to_numpy(np.float64) > 0).groupby(
            [table["series_id"].to_numpy(), table["cutoff"].to_numpy()]).transform("all").to_numpy(dtype=bool)
    return positive & np.isfinite(table["log_scale"].to_numpy(np.float64))


def _kind_mask(kind: str, table: pd.DataFrame) -> np.ndarray:
    """Rows a kind calibrates on: finite residuals; for 'log', only those of `_log_windows`."""
    ok = np.isfinite(table["y"].to_numpy(np.float64)) & np.isfinite(table["yhat"].to_numpy(np.float64))
    return ok & _log_windows(table) if kind == "log" else ok


def fit_conformal(table: pd.DataFrame, *, levels: Sequence[float], horizon: int, season_length: int,
                  method: str = "conformal", prior_windows: float = PRIOR_WINDOWS) -> ConformalIntervals:
    """Fit conformal quantiles on a `score_table` (backtest residuals with their scales).

    `prior_windows` is k of the per-series blend (math.inf: the pool only). Raises ValueError for an
    unknown method, bad levels, or when there is no finite residual to calibrate on.
    """
    if method not in METHODS:
        raise ValueError(f"interval method must be one of {METHODS}, not {method!r}")
    levels = tuple(float(v) for v in levels)
    if not levels or any(not 0 < v < 100 for v in levels) or list(levels) != sorted(set(levels)):
        raise ValueError(f"levels must be unique, ascending and inside (0, 100), got {list(levels)}")
    quantiles, points, factors = {}, {}, {}
    for kind in (KINDS if method == "conformal_log" else ("linear",)):
        mask = _kind_mask(kind, table)
        if not mask.any():
            continue
        t = table[mask]
        steps = t["step"].to_numpy(np.int64) - 1
        keep = (steps >= 0) & (steps < horizon)
        t, steps = t[keep], steps[keep]
        scale = (t["log_scale"] if kind == "log" else t["interval_scale"]).to_numpy(np.float64)
        s = _scores(kind, t["y"].to_numpy(np.float64), t["yhat"].to_numpy(np.float64), scale)
        f_loo, f_all = _series_factors(t["series_id"].to_numpy(), t["window"].to_numpy(), steps, s, horizon,
                                       prior_windows)
        quantiles[kind], points[kind] = _conformal_quantiles(s / f_loo, steps, horizon, levels)
        factors[kind] = f_all
    if "linear" not in quantiles:
        raise ValueError("no finite backtest residuals to calibrate the intervals on")
    return ConformalIntervals(levels, method, horizon, season_length, quantiles, points, factors, prior_windows)


def _series_factors(series: np.ndarray, window: np.ndarray, steps: np.ndarray, s: np.ndarray, horizon: int,
                    prior: float) -> tuple[np.ndarray, dict[str, float]]:
    """Per-row leave-its-window-out factors, and each series' factor from all its windows."""
    if math.isinf(prior):
        return np.ones(len(s)), {}
    a = np.abs(s)
    step_mean = np.bincount(steps, weights=a, minlength=horizon) / np.maximum(np.bincount(steps, minlength=horizon), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(step_mean[steps] > 0, a / step_mean[steps], 1.0)
    s_code, s_ids = pd.factorize(series)
    w_code, w_ids = pd.factorize(window)
    pair, pair_of_row = np.unique(s_code.astype(np.int64) * len(w_ids) + w_code, return_inverse=True)
    pair_of_row = pair_of_row.reshape(-1)
    per_window = np.bincount(pair_of_row, weights=rel) / np.bincount(pair_of_row)  # A_iw
    series_of_pair = pair // len(w_ids)
    total = np.bincount(series_of_pair, weights=per_window, minlength=len(s_ids))  # T_i
    count = np.bincount(series_of_pair, minlength=len(s_ids))  # n_i
    full = (total + prior) / (count + prior)
    # The factor a calibration score is divided by comes from the series' other windows only.
    loo = (total[series_of_pair] - per_window + prior) / (count[series_of_pair] - 1 + prior)
    row_factor = loo[pair_of_row]
    return row_factor, {str(k): float(v) for k, v in zip(s_ids, full, strict=True)}


def held_out_bounds(table: pd.DataFrame, *, levels: Sequence[float], horizon: int, step: int, season_length: int,
                    method: str = "conformal", prior_windows: float = PRIOR_WINDOWS) -> pd.DataFrame:
    """Interval columns for the backtest rows themselves, calibrated only on what precedes each window.

    Window w's rows get intervals fitted on the windows j whose actuals all lie before w's cutoff
    ((w - j) x step >= horizon; with step H: every earlier window), so a backtest window sees nothing
    after its cutoff, intervals included, and its coverage is measured out of sample. The earliest
    window(s) have nothing before them: NaN bounds (left out of coverage and MSIS).
    Returns a frame aligned with `table` (same index) holding `yhat_lo_<L>`, `yhat_hi_<L>`.
    """
    cols = [c for lv in levels for c in interval_columns(lv)]
    out = pd.DataFrame(np.nan, index=table.index, columns=cols)
    windows = table["window"].to_numpy(np.int64)
    yhat = table["yhat"].to_numpy(np.float64)
    for w in np.unique(windows):
        before = windows <= w - math.ceil(horizon / step)
        if not before.any():
            continue
        try:
            fitted = fit_conformal(table[before], levels=levels, horizon=horizon, season_length=season_length,
                                   method=method, prior_windows=prior_windows)
        except ValueError:
            continue
        inside = windows == w
        part = table[inside]
        use_log = np.zeros(len(part), dtype=bool)
        if method == "conformal_log" and "log" in fitted.quantiles:
            use_log = _log_windows(part)  # a whole window on one scale, as `predict` does per series
        lower, upper = fitted.long_bounds(yhat[inside], part["step"].to_numpy(np.int64) - 1,
                                           part["series_id"].astype(str).to_numpy(dtype=object),
                                           part["interval_scale"].to_numpy(np.float64),
                                           part["log_scale"].to_numpy(np.float64), use_log)
        for j, level in enumerate(levels):
            lo_col, hi_col = interval_columns(level)
            out.loc[inside, lo_col] = lower[j]
            out.loc[inside, hi_col] = upper[j]
    return out
