"""Accuracy measures per series and overall, for the model and a seasonal-naive reference.

All functions work on (S, H) arrays at once. Overall figures are the mean of
per-series figures (each series weighs the same, as in the M4 competition).
"""
from __future__ import annotations

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
