"""What each series is served: the network, a statistical standard, or an equal-weight combination,
chosen per series on backtest evidence only.

The M4 competition's lesson (Makridakis, Spiliotis & Assimakopoulos 2020, IJF 36(1)) is that the
winners combined: ES-RNN blended exponential smoothing with an LSTM (Smyl 2020, IJF 36(1)) and FFORMA
weighted statistical methods per series from features (Montero-Manso, Athanasopoulos, Hyndman & Talagala
2020, IJF 36(1)). With the two or three backtest windows a nightly job can afford, per-series weights are
noisy, so the rule here is the robust one the combination literature supports for thin evidence
(Clemen 1989; Smith & Wallis 2009, "the forecast combination puzzle": equal weights beat estimated ones
unless the evidence is strong; Kourentzes, Barrow & Petropoulos 2019, IJPE 209, "forecast combination
pools": combine the candidates not clearly worse than the best):

1. Candidates: `lstm` (where the network serves the series), `autoets`, `autotheta`, `dynamic_theta`,
   `seasonal_naive`,
   `naive` (`lstm_core.statistical`), each where its forecast is finite.
2. Error of a candidate on one series and window: mean over the H steps of |y - f| / s, with s the
   series' naive-error scale before the cutoff (`intervals.naive_scales`): scale-free, so it pools.
3. Per series, the error is shrunk toward the pool of similar series (same history-length band at the
   cutoff, `history_band`): e = (sum of its n window errors + k x pooled mean) / (n + k), k =
   `PRIOR_WINDOWS`. A series with no window of its own (too short) takes the pool of its band.
4. Served: the equal-weight mean of every candidate whose shrunk error is within `MARGIN` of the best
   (e <= (1 + MARGIN) x best). With no evidence at all the prior is the mean of `PRIOR` (those available);
   a series of one or two points has only the naive forecasts.

Fitted on backtest windows only, never on what they are scored on: the served forecast of backtest window
w is chosen on the windows whose actuals all precede w's cutoff (the same rule as the held-out intervals),
so the `served` rows of the metrics table are out of sample; the forecast past T is chosen on every
window. The margin and k were chosen by measurement on the M3 yearly and quarterly training parts, their
last H points held out (benchmarks/m3.py; README "Which model serves a series"): served OWA, yearly /
quarterly, margin 0.10 with k 20: 0.904 / 0.860 (AutoTheta 0.904 / 0.896, AutoETS 0.980 / 0.868); with
k 1 (a series' own two or three windows decide): 0.910 / 0.871; pure per-series selection (margin 0,
k 1): 0.925 / 0.892; one choice per band (k -> infinity): 0.901 / 0.873. A series' own few windows
are mostly noise: the band's pool carries most of the weight.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypedDict

import numpy as np
import pandas as pd

from lstm_core.intervals import ConformalIntervals, fit_conformal, held_out_bounds, min_scores, score_table
from lstm_core.metrics import interval_columns, level_label
from lstm_core.panel import Panel
from lstm_core.statistical import CANDIDATES, STATISTICAL_MODELS

PRIOR = ("lstm", *STATISTICAL_MODELS)  # served without any evidence (equal weights of those available)
MARGIN = 0.10
PRIOR_WINDOWS = 20.0


def history_band(points: np.ndarray | Sequence[int], horizon: int) -> np.ndarray:
    """History-length band of each count of points: `1-2`, `3-<2H-1>`, `<2H>-<4H-1>`, `<4H>-<8H-1>`, `<8H>+`.

    Bands are in multiples of the horizon, so they mean the same at every frequency.
    """
    n = np.asarray(points, dtype=np.int64)
    edges = [1, 3, max(4, 2 * horizon), max(5, 4 * horizon), max(6, 8 * horizon)]
    labels = [f"{lo}-{hi - 1}" for lo, hi in pairwise(edges)] + [f"{edges[-1]}+"]
    idx = np.clip(np.searchsorted(edges, n, side="right") - 1, 0, len(labels) - 1)
    return np.asarray(labels, dtype=object)[idx]


def window_errors(rows: pd.DataFrame, candidates: Sequence[str], scale: str = "interval_scale") -> pd.DataFrame:
    """Per series and window: `series_id, window, history` and each candidate's mean |y - f| / scale over the
    H steps (NaN where the candidate has no forecast at some step of that window)."""
    keys = ["series_id", "window"]
    s = rows[scale].to_numpy(np.float64)
    y = rows["y"].to_numpy(np.float64)
    parts = {c: np.abs(y - rows[c].to_numpy(np.float64)) / s for c in candidates}
    frame = pd.DataFrame({"series_id": rows["series_id"].astype(str).to_numpy(), "window": rows["window"].to_numpy(),
                          "history": rows["history"].to_numpy(), **parts})
    # a mean over steps that is NaN when any step is NaN (skipna=False)
    return frame.groupby(keys, sort=False).agg(
        {"history": "first", **{c: _mean_or_nan for c in candidates}}).reset_index()


def _mean_or_nan(values: pd.Series) -> float:
    """The mean, NaN when any value is NaN (a window with a missing step has no error)."""
    return float(values.mean(skipna=False))


def choose(fit: pd.DataFrame, targets: pd.DataFrame, candidates: Sequence[str], horizon: int, *,
           margin: float = MARGIN, prior_windows: float = PRIOR_WINDOWS) -> list[tuple[str, ...]]:
    """The candidates served to each target, from the window errors `fit` (`window_errors` rows).

    `targets`: one row per series to serve, `series_id`, `history` (points at its cutoff) and one bool
    column per candidate (its forecast is available there). Returns one tuple of candidates per target row
    (their equal-weight mean is served), in `CANDIDATES` order.
    """
    cands = list(candidates)
    avail = targets[cands].to_numpy(bool)
    n_t = len(targets)
    if len(fit):
        fit = fit.assign(band=history_band(fit["history"].to_numpy(), horizon))
        pool_all = fit[cands].mean()
        pool_band = fit.groupby("band")[cands].mean()
        sums = fit.groupby("series_id")[cands].sum(min_count=1)
        counts = fit.groupby("series_id")[cands].count()
        band = history_band(targets["history"].to_numpy(), horizon)
        pool = pool_band.reindex(band).to_numpy(np.float64)
        pool = np.where(np.isnan(pool), pool_all.to_numpy(np.float64)[None, :], pool)
        ids = targets["series_id"].astype(str)
        own = sums.reindex(ids).to_numpy(np.float64)
        n = counts.reindex(ids).fillna(0).to_numpy(np.float64)
        own = np.where(n > 0, own, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shrunk = np.where(n + prior_windows > 0, (own + prior_windows * pool) / (n + prior_windows), np.nan)
        shrunk = np.where((n == 0) & np.isnan(shrunk), pool, shrunk)  # k = 0 without own windows: the pool
        shrunk = np.where(avail & np.isfinite(shrunk), shrunk, np.inf)
    else:
        shrunk = np.full((n_t, len(cands)), np.inf)
    best = shrunk.min(axis=1) if len(cands) else np.full(n_t, np.inf)
    out: list[tuple[str, ...]] = []
    prior_idx = [cands.index(c) for c in PRIOR if c in cands]
    for i in range(n_t):
        if np.isfinite(best[i]):
            chosen = tuple(c for j, c in enumerate(cands) if shrunk[i, j] <= best[i] * (1 + margin) + 1e-12)
        else:
            chosen = tuple(cands[j] for j in prior_idx if avail[i, j])
            if not chosen:
                chosen = tuple(c for j, c in enumerate(cands) if avail[i, j] and c == "naive") or \
                    tuple(c for j, c in enumerate(cands) if avail[i, j])[:1]
        out.append(tuple(c for c in CANDIDATES if c in chosen))
    return out


def label(chosen: tuple[str, ...]) -> str:
    """The `model` value of a served row: the candidate, or the combined ones joined by '+'."""
    return "+".join(chosen) if chosen else "none"


def _mean_of(values: dict[str, np.ndarray], chosen: list[tuple[str, ...]], rows_of: list[np.ndarray],
             n_rows: int) -> np.ndarray:
    out = np.full(n_rows, np.nan)
    for sel, rows in zip(chosen, rows_of, strict=True):
        if sel:
            out[rows] = np.mean([values[c][rows] for c in sel], axis=0)
    return out


@dataclass
class ServedBacktest:
    """The union backtest rows with every candidate, the served forecast (`served`, `model`) and its
    held-out interval columns (`served_lo_<L>`, `served_hi_<L>`), plus the selections made per window."""

    rows: pd.DataFrame
    selections: dict[int, pd.DataFrame]  # window -> series_id, model (label) chosen for it


def _needs(candidates: Sequence[str], min_history: dict[str, int] | None, history: np.ndarray) -> dict[str, np.ndarray]:
    """Per candidate, where the history is long enough for it to be one (e.g. seasonal naive: a full season)."""
    need = min_history or {}
    return {c: history >= need.get(c, 1) for c in candidates}


def serve_backtest(rows: pd.DataFrame, candidates: Sequence[str], *, horizon: int, step: int,
                   margin: float = MARGIN, prior_windows: float = PRIOR_WINDOWS,
                   min_history: dict[str, int] | None = None) -> ServedBacktest:
    """Add `served` and `model` to backtest `rows` (one per series, window, step; columns `series_id, window,
    history, step, y, interval_scale` and one per candidate): window w's choice is fitted only on windows
    whose actuals precede its cutoff ((w - j) x step >= H)."""
    rows = rows.reset_index(drop=True)
    errors = window_errors(rows, candidates)
    served = np.full(len(rows), np.nan)
    labels = np.full(len(rows), None, dtype=object)
    selections: dict[int, pd.DataFrame] = {}
    win = rows["window"].to_numpy()
    sid = rows["series_id"].astype(str).to_numpy()
    values = {c: rows[c].to_numpy(np.float64) for c in candidates}
    for w in np.unique(win):
        fit = errors[errors["window"] <= w - math.ceil(horizon / step)]
        inside = np.flatnonzero(win == w)
        hist = rows["history"].to_numpy()[inside]
        long_enough = _needs(candidates, min_history, hist)
        target_rows = pd.DataFrame({"series_id": sid[inside], "history": hist,
                                    **{c: np.isfinite(values[c][inside]) & long_enough[c] for c in candidates}})
        grouped = target_rows.groupby("series_id", sort=False)
        targets = grouped.agg({"history": "first", **{c: "all" for c in candidates}}).reset_index()
        chosen = choose(fit, targets, candidates, horizon, margin=margin, prior_windows=prior_windows)
        index = grouped.indices  # series_id -> positions within `inside`
        rows_of = [inside[index[s]] for s in targets["series_id"]]
        part = _mean_of(values, chosen, rows_of, len(rows))
        served[inside] = part[inside]
        for sel, r in zip(chosen, rows_of, strict=True):
            labels[r] = label(sel)
        selections[int(w)] = pd.DataFrame({"series_id": targets["series_id"], "model": [label(c) for c in chosen]})
    return ServedBacktest(rows.assign(served=served, model=pd.Series(labels, dtype="string")), selections)


def serve_future(errors_rows: pd.DataFrame, future: dict[str, np.ndarray], series_ids: np.ndarray,
                 lengths: np.ndarray, candidates: Sequence[str], *, horizon: int, margin: float = MARGIN,
                 prior_windows: float = PRIOR_WINDOWS, min_history: dict[str, int] | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """The forecast past T: ((S, H) served values, S labels), chosen on every backtest window in `errors_rows`
    (`min_history`: candidate -> points a series needs for it to be one)."""
    errors = window_errors(errors_rows, candidates) if len(errors_rows) else pd.DataFrame()
    long_enough = _needs(candidates, min_history, np.asarray(lengths))
    targets = pd.DataFrame({"series_id": np.asarray(series_ids).astype(str), "history": lengths,
                            **{c: np.isfinite(future[c]).all(axis=1) & long_enough[c] for c in candidates}})
    chosen = choose(errors, targets, candidates, horizon, margin=margin, prior_windows=prior_windows)
    s = len(series_ids)
    out = np.full((s, horizon), np.nan)
    for i, sel in enumerate(chosen):
        if sel:
            out[i] = np.mean([future[c][i] for c in sel], axis=0)
    return out, [label(c) for c in chosen]


# --- intervals ------------------------------------------------------------------------------------------------
@dataclass
class BandedIntervals:
    """Conformal intervals of the served forecast, calibrated per history-length band where the band has
    enough backtest windows (every step at least `min_scores` of the highest level), else on all bands
    pooled: a short series borrows the spread of short series like it, scaled by its own naive error."""

    horizon: int
    by_band: dict[str, ConformalIntervals]
    pooled: ConformalIntervals | None
    levels: tuple[float, ...] = (80.0, 95.0)

    def predict(self, panel: Panel, yhat: np.ndarray) -> dict[str, np.ndarray]:
        """Interval columns (S, H) for `yhat` (S, H) of `panel`'s series (NaN where nothing is calibrated)."""
        band = history_band(panel.lengths, self.horizon)
        out: dict[str, np.ndarray] = {}
        for b in np.unique(band) if panel.n_series else []:
            fitted = self.by_band.get(b, self.pooled)
            mask = band == b
            if fitted is None:  # no backtest window anywhere (every series shorter than H): a random-walk spread
                for col, values in _random_walk_bounds(panel.select(mask), yhat[mask], self.levels).items():
                    out.setdefault(col, np.full(yhat.shape, np.nan))[mask] = values
                continue
            for col, values in fitted.predict(panel.select(mask), yhat[mask]).items():
                out.setdefault(col, np.full(yhat.shape, np.nan))[mask] = values
        return out


def served_intervals(rows: pd.DataFrame, scales: pd.DataFrame, *, levels: Sequence[float], horizon: int,
                     step: int, season_length: int, method: str, prior_windows: float
                     ) -> tuple[BandedIntervals, pd.DataFrame]:
    """Fit the served forecast's intervals on its backtest residuals, and its held-out bounds per row.

    Returns (the intervals for the forecast past T, a frame aligned with `rows` holding `served_lo_<L>`,
    `served_hi_<L>` calibrated only on windows before each row's: what coverage is measured on).
    """
    ok = np.isfinite(rows["served"].to_numpy(np.float64)) & np.isfinite(rows["y"].to_numpy(np.float64))
    base = rows.loc[ok, ["series_id", "cutoff", "step", "y", "served", "history"]].rename(columns={"served": "yhat"})
    table = score_table(base, scales)
    table["band"] = history_band(base["history"].to_numpy(), horizon)
    kw = _ConformalSettings(levels=levels, horizon=horizon, season_length=season_length, method=method,
                            prior_windows=prior_windows)
    need = min_scores(max(levels))
    pooled = None
    bounds = pd.DataFrame(np.nan, index=table.index, columns=[c for lv in levels for c in interval_columns(lv)])
    if len(table):
        try:
            pooled = fit_conformal(table, **kw)
            bounds = held_out_bounds(table, step=step, **kw)
        except ValueError:
            pooled = None
    by_band: dict[str, ConformalIntervals] = {}
    windows_per_band = table[["band", "series_id", "window"]].drop_duplicates().groupby("band").size() \
        if len(table) else pd.Series(dtype="int64")
    for b, n in windows_per_band.items():
        if n < need:
            continue
        part = table[table["band"] == b]
        try:
            by_band[str(b)] = fit_conformal(part, **kw)
        except ValueError:
            continue
        band_bounds = held_out_bounds(part, step=step, **kw)
        # a band's early windows may have too few of its own scores: they keep the pooled bounds
        filled = band_bounds.notna().all(axis=1)
        bounds.loc[band_bounds.index[filled]] = band_bounds[filled].to_numpy()
    out = pd.DataFrame(np.nan, index=rows.index,
                       columns=[c.replace("yhat_", "served_") for lv in levels for c in interval_columns(lv)])
    out.loc[rows.index[ok], :] = bounds.to_numpy()
    return BandedIntervals(horizon, by_band, pooled, tuple(float(v) for v in levels)), out


class _ConformalSettings(TypedDict):
    """The keyword arguments `fit_conformal` and `held_out_bounds` share."""

    levels: Sequence[float]
    horizon: int
    season_length: int
    method: str
    prior_windows: float


def _random_walk_bounds(panel: Panel, yhat: np.ndarray, levels: Sequence[float]) -> dict[str, np.ndarray]:
    """Bounds when nothing could be calibrated (no series has a backtest window): yhat +- z x s x sqrt(h), s the
    naive-error scale of each history (`intervals.naive_scales`, at least mean |y|): a random walk's spread,
    never a bound equal to the forecast."""
    from statistics import NormalDist

    from lstm_core.intervals import naive_scales

    scale, _ = naive_scales(panel, 1, log=False)
    steps = np.sqrt(np.arange(1, yhat.shape[1] + 1))[None, :]
    out = {}
    for lv in levels:
        z = NormalDist().inv_cdf(0.5 + float(lv) / 200.0)
        lo_col, hi_col = interval_columns(lv)
        out[lo_col], out[hi_col] = yhat - z * scale[:, None] * steps, yhat + z * scale[:, None] * steps
    return out


def coverage_sums(rows: pd.DataFrame, levels: Sequence[float], horizon: int) -> pd.DataFrame:
    """Per history band (points at the cutoff): `band, series_windows, points` and per level `hits_<L>`,
    `n_<L>`, from the served held-out bounds (rows without bounds are left out). Sums: they add over shards."""
    band = history_band(rows["history"].to_numpy(), horizon)
    y = rows["y"].to_numpy(np.float64)
    data = {"band": band, "key": rows["series_id"].astype(str) + "|" + rows["window"].astype(str)}
    for lv in levels:
        lo_col, hi_col = (c.replace("yhat_", "served_") for c in interval_columns(lv))
        lo, hi = rows[lo_col].to_numpy(np.float64), rows[hi_col].to_numpy(np.float64)
        has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
        data[f"n_{level_label(lv)}"] = has.astype(np.int64)
        data[f"hits_{level_label(lv)}"] = (has & (y >= lo) & (y <= hi)).astype(np.int64)
    frame = pd.DataFrame(data)
    if not len(frame):
        return pd.DataFrame(columns=["band", "series_windows", "points"])
    agg = frame.groupby("band").agg(series_windows=("key", "nunique"), points=("key", "size"),
                                    **{c: (c, "sum") for c in data if c.startswith(("n_", "hits_"))})
    return agg.reset_index()
