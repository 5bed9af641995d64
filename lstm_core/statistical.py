"""The statistical standards beside the network: statsforecast's AutoETS, AutoTheta and DynamicOptimizedTheta,
seasonal naive and naive.

They are fitted per series, on every backtest window the network is scored on (the same cutoffs,
`backtest.cutoff_drops`) and on the whole history for the forecast past T, so `lstm_core.combination`
can compare and combine them with the network on equal terms, as the M4 winners did (ES-RNN, a hybrid
of exponential smoothing and an LSTM: Smyl 2020, IJF 36(1); FFORMA, weights over statistical methods per
series: Montero-Manso, Athanasopoulos, Hyndman & Talagala 2020, IJF 36(1)).

ETS and Theta come from statsforecast (Garza et al., Nixtla); nothing here re-implements them. The dynamic
optimised Theta (`dynamic_theta`: Fiorucci, Pellegrini, Louzada, Petropoulos & Koehler 2016, IJF 32(4)) sits
beside AutoTheta because on short annual data it was the stronger of the two (M3 yearly training parts, last
6 points held out, served OWA 0.906 without it, 0.892 with it; quarterly unchanged, 0.852), for about 1 s
per thousand short series. Each model
is fitted on one series at a time (`forecast(y, h)`, the memory-light path); a model that cannot be fitted
to a series (statsforecast refuses "tiny datasets": AutoETS below about 6 points, AutoTheta below 4)
gives NaN for that series, and the naive forecasts (last value; last season) exist for any series of one
point or more, so every series always has a candidate.

Cost: a fit sees at most `history_limit(season, horizon)` of the latest points (ETS and Theta weight
recent data; a seasonal AutoETS on 700 hourly points costs ~0.5 s, on 144 ~0.12 s).
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lstm_core.frequency import dates_after
from lstm_core.intervals import naive_scales
from lstm_core.metrics import mase_scale, seasonal_naive
from lstm_core.panel import Panel

_log = logging.getLogger("lstm_core.statistical")

STATISTICAL_MODELS = ("autoets", "autotheta", "dynamic_theta")  # fitted by statsforecast
NAIVE_MODELS = ("seasonal_naive", "naive")  # closed form, defined for any series of one point or more
ALL_MODELS = (*STATISTICAL_MODELS, *NAIVE_MODELS)
CANDIDATES = ("lstm", *ALL_MODELS)  # every label a series may be served, in canonical order


def history_limit(season_length: int, horizon: int) -> int:
    """Latest points a statistical fit sees: max(3 seasons, 3 horizons, 100).

    Long enough for seasonal ETS/Theta (three seasons) and for every yearly, quarterly or monthly series
    of the usual lengths; it bounds the cost on long hourly or weekly series.
    """
    return max(3 * int(season_length), 3 * int(horizon), 100)


def _model(name: str, season_length: int):
    from statsforecast.models import AutoETS, AutoTheta, DynamicOptimizedTheta

    if name == "autoets":
        return AutoETS(season_length=season_length)
    if name == "autotheta":
        return AutoTheta(season_length=season_length)
    if name == "dynamic_theta":
        return DynamicOptimizedTheta(season_length=season_length)
    raise ValueError(f"unknown statistical model {name!r}; expected one of {STATISTICAL_MODELS}")


def forecast_series(y: np.ndarray, horizon: int, season_length: int,
                    models: Sequence[str] = STATISTICAL_MODELS) -> dict[str, np.ndarray]:
    """Forecasts of one series (1-D `y`, oldest first) by each model: name -> (H,) array.

    NaN where statsforecast cannot fit the model to this series (too short, degenerate) or its forecast
    is not finite. `seasonal_naive` and `naive` are always finite for a finite `y` of one point or more.
    """
    y = np.asarray(y, dtype=np.float64)[-history_limit(season_length, horizon):]
    out: dict[str, np.ndarray] = {}
    for name in models:
        fc = np.full(horizon, np.nan)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fc = np.asarray(_model(name, season_length).forecast(y=y, h=horizon)["mean"], dtype=np.float64)
        except Exception:  # noqa: BLE001 - statsforecast refuses tiny or degenerate series in many ways
            pass
        out[name] = fc if fc.shape == (horizon,) and np.isfinite(fc).all() else np.full(horizon, np.nan)
    m = max(1, min(int(season_length), len(y)))
    out["seasonal_naive"] = np.resize(y[-m:], horizon) if len(y) else np.full(horizon, np.nan)
    out["naive"] = np.full(horizon, y[-1] if len(y) else np.nan)
    return out


def forecast_panel(panel: Panel, horizon: int, season_length: int,
                   models: Sequence[str] = STATISTICAL_MODELS, fit: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every series of `panel` by each model of `models` plus the two naive ones: name -> (S, H).
    `fit` (S,) bool: the series the statistical models are fitted to (the others get the naive ones only)."""
    out = {name: np.full((panel.n_series, horizon), np.nan) for name in (*models, *NAIVE_MODELS)}
    y = panel.y
    for i in range(panel.n_series):
        series = y[panel.offsets[i]:panel.offsets[i + 1]]
        chosen = models if fit is None or fit[i] else ()
        for name, fc in forecast_series(series, horizon, season_length, chosen).items():
            out[name][i] = fc
    if panel.n_series:
        out["seasonal_naive"] = seasonal_naive(panel, horizon, season_length).astype(np.float64)
    return out


@dataclass
class StatisticalBacktest:
    """The statistical models on the network's backtest windows, and their forecast past T.

    frame: one row per series, window and step: `series_id, cutoff, ds, step, y, history` (points before
      the cutoff) and one column per model (`ALL_MODELS`), NaN where a model could not be fitted;
    scales: per series and window: `series_id, cutoff, window, mase_scale, interval_scale, log_scale`;
    future: model -> (S, H) forecasts past each series' end, in `panel` order;
    seconds: the cost of fitting them all.
    """

    frame: pd.DataFrame
    scales: pd.DataFrame
    future: dict[str, np.ndarray]
    series_ids: np.ndarray
    seconds: float = 0.0
    models: tuple[str, ...] = field(default=ALL_MODELS)


def long_history(horizon: int) -> int:
    """Points from which a series counts as long: 8 horizons (the history band `<8H>+`). The network serves
    long series well (M4 hourly and weekly) and seasonal ETS on long histories is the cost of this step
    (M4 hourly: 640 s for 414 series against 137 s of training), so the statistical models are fitted to
    the series shorter than that, and to every series the network cannot serve."""
    return 8 * int(horizon)


def statistical_backtest(panel: Panel, *, horizon: int, season_length: int, drops: np.ndarray,
                         models: Sequence[str] = STATISTICAL_MODELS, fit: np.ndarray | None = None,
                         log=None) -> StatisticalBacktest:
    """Fit the statistical models at each backtest cutoff (`drops[w]` points before each series' end,
    `backtest.cutoff_drops`) and on the whole history (the forecast past T). `fit` (S,) bool: the series
    they are fitted to (default all); the naive forecasts cover every series.

    A series joins a window when it keeps at least one point before that cutoff; the window's actuals are
    the H points after it. Raises nothing for short series: models that cannot fit give NaN.
    """
    log = log or _log
    t0 = time.perf_counter()
    frames, scales = [], []
    for w, drop in enumerate(int(d) for d in drops):
        mask = panel.lengths - drop >= 1
        if not mask.any():
            continue
        sub = panel.select(mask)
        history = sub.drop_last(drop)
        actual = sub.drop_last(drop - horizon).last_values(horizon)[:, :, 0]  # (S, H)
        fc = forecast_panel(history, horizon, season_length, models, None if fit is None else fit[mask])
        dtype = pd.Series(history.last_ds).dtype
        ds = dates_after(history.last_ds, history.freq, horizon)
        s = history.n_series
        frame = pd.DataFrame({
            "series_id": pd.Series(np.repeat(history.series_ids, horizon), dtype="string"),
            "cutoff": pd.Series(np.repeat(history.last_ds, horizon)).astype(dtype),
            "ds": pd.Series(ds.reshape(-1)).astype(dtype),
            "step": np.tile(np.arange(1, horizon + 1, dtype=np.int64), s),
            "y": actual.reshape(-1).astype(np.float64),
            "window": np.full(s * horizon, w, dtype=np.int64),
            "history": np.repeat(history.lengths, horizon).astype(np.int64),
        })
        for name in (*models, *NAIVE_MODELS):
            frame[name] = fc[name].reshape(-1)
        frames.append(frame)
        seasonal = mase_scale(history, season_length)
        linear, log_scale = naive_scales(history, season_length, seasonal=seasonal)
        scales.append(pd.DataFrame({
            "series_id": pd.Series(history.series_ids, dtype="string"), "cutoff": history.last_ds,
            "window": np.full(s, w, dtype=np.int64), "mase_scale": seasonal, "interval_scale": linear,
            "log_scale": log_scale}))
    future = forecast_panel(panel, horizon, season_length, models, fit) if panel.n_series else \
        {name: np.zeros((0, horizon)) for name in (*models, *NAIVE_MODELS)}
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series([], dtype=t) for c, t in (("series_id", "string"), ("cutoff", "datetime64[ns]"),
                                                ("ds", "datetime64[ns]"), ("step", "int64"), ("y", "float64"),
                                                ("window", "int64"), ("history", "int64"),
                                                *((m, "float64") for m in (*models, *NAIVE_MODELS)))})
    scale_frame = pd.concat(scales, ignore_index=True) if scales else pd.DataFrame(
        {"series_id": pd.Series([], dtype="string"), "cutoff": pd.Series([], dtype=frame["cutoff"].dtype),
         "window": pd.Series([], dtype="int64"), "mase_scale": [], "interval_scale": [], "log_scale": []})
    seconds = time.perf_counter() - t0
    log.info("statistical models %s: fitted to %d of %d series (the others are long: network and naive "
             "candidates), %d backtest windows, in %.1f s", list(models),
             panel.n_series if fit is None else int(np.sum(fit)), panel.n_series, len(frames), seconds)
    return StatisticalBacktest(frame, scale_frame, future, np.asarray(panel.series_ids), seconds,
                               (*models, *NAIVE_MODELS))
