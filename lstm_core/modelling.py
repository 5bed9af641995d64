"""The one modelling path: prepare -> get_or_train -> forecast -> score, used by the tasks, tests and notebooks.

    data = prepare_data(validate_for(frame, config), config)     # panels, training cutoff, fingerprint
    spec = config.model_spec()                                    # what changes the network; spec.key
    store = ModelStore.of(config)                                 # <output_url>/models
    model, decision = get_or_train(store, spec, data)             # load a current model, or train and save
    forecasts = forecast(model, data, config, store=store)        # backtest windows + the future, with intervals
    scored = score(forecasts, model, data, config)                # metrics table and mergeable totals

Nothing here imports Prefect: the tasks in `tasks/` are thin wrappers that add retries and a run logger.
Every function takes an optional `log` (a `logging.Logger` or adapter) so a task's lines land in its run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lstm_core.backtest import (
    KEYS,
    Backtest,
    WindowHook,
    backtest_from_config,
    backtest_metrics,
    cutoff_drops,
    metrics_table,
)
from lstm_core.combination import (
    coverage_sums,
    serve_backtest,
    serve_future,
    served_intervals,
)
from lstm_core.config import ForecastConfig, ModelSpec
from lstm_core.engine import Evaluation, fit, predictions_frame
from lstm_core.intervals import (
    PRIOR_WINDOWS,
    with_intervals,
)
from lstm_core.length_rules import min_train_length
from lstm_core.metrics import ErrorSums, MetricTotals, interval_columns
from lstm_core.model_store import (
    ModelChoice,
    ModelStore,
    intervals_fit,
)
from lstm_core.prepared import Prepared, network_serves, prepare_data
from lstm_core.progress import Progress
from lstm_core.promotion import TrainingProgress, loaded_choice, train_full, warm_start
from lstm_core.records import Decision
from lstm_core.statistical import (
    CANDIDATES,
    STATISTICAL_MODELS,
    StatisticalBacktest,
    long_history,
    statistical_backtest,
)

# The path's face: `prepare_data` and `Prepared` live in `lstm_core.prepared` (read by promotion too).
__all__ = ["Forecasts", "Prepared", "Scored", "ServedBacktest", "candidates_of", "combine", "forecast", "get_or_train",
           "network_serves", "prepare_data", "run_backtest", "score", "statistical"]

_log = logging.getLogger("lstm_core.modelling")


# --- get or train ------------------------------------------------------------------------------------
def get_or_train(store: ModelStore, spec: ModelSpec, data: Prepared | None, *, calibrate: bool = False,
                 log=None) -> tuple[ModelChoice, Decision]:
    """The model of `spec`: the champion (or a pinned version) when the retrain policy keeps it, the champion
    fine-tuned and gated (`warm`), or one trained in full; what is trained is saved (README "Retrain or load").

    `data` is the training data (a bounded sample of the group's series under sharding). Under retrain
    'never' or a pinned model it may be None: the model key fixes the inputs. A model trained here learns
    from the data before the earliest backtest cutoff (`data.train_panel`), a warm start too (from the
    champion's weights); champion and challenger are scored on the same newest backtest windows of
    `data.panel` (`retrain.gate_score`) and the challenger replaces the champion only when its score is at most
    the champion's x (1 + `promotion_tolerance`). `calibrate`: also backtest a model trained here on `data` and
    save the conformal intervals beside its version. A loaded model brings the intervals saved beside it.

    Returns (the choice, its decision). Raises ArtifactError when retrain is 'never' (or a model is pinned)
    and nothing fits; ValueError when no series is long enough to train.
    """
    log = log or _log
    config = spec.config
    label = f"group {spec.group!r}: " if config.group_column is not None else ""
    if config.mode == "per_series":
        decision = Decision(action="train", reason="mode 'per_series' trains one model per series on every run")
    else:
        newest = data.panel.drop_upto(config.horizon) if data is not None and data.panel.n_series else \
            (data.train_panel if data is not None else None)
        decision = store.decide(spec, newest, fingerprint=data.fingerprint if data is not None else None,
                                gate_panel=data.panel if data is not None and data.panel.n_series else None)
    log.info("%smodel decision: %s (%s)", label, decision.action, decision.reason)
    if decision.action == "load":
        return loaded_choice(store, spec, decision, log, label), decision
    if data is None:  # only retrain 'never' or a pinned model come without data, and those load or raise
        raise ValueError(f"{label}model decision {decision.action!r} needs training data; none was given")
    trainer = TrainingProgress(config.training.warm_epochs if decision.action == "warm" else config.training.epochs,
                               log)
    if decision.action == "warm":
        choice, decision = warm_start(store, spec, data, decision, trainer, log, label)
    else:
        choice, decision = train_full(store, spec, data, decision, trainer, log, label)
    if calibrate and config.levels and choice.model_key is not None and \
            (decision.action == "train" or decision.promoted):  # a version made in this run
        bt = run_backtest(choice, data, config)
        if bt.intervals is not None:
            choice.intervals = bt.intervals
            store.save_intervals(bt.intervals, spec.key, choice.version, log=log)
            log.info("%scalibrated intervals on the training sample's backtest (%d rows)", label, len(bt.frame))
    return choice, decision


# --- forecast -------------------------------------------------------------------------------------------
def run_backtest(choice: ModelChoice, data: Prepared, config: ForecastConfig,
                 on_window: WindowHook | None = None) -> Backtest:
    """The rolling-origin backtest of `data`'s series with the model that scores it: `choice.forecaster`
    (trained once before the earliest cutoff), or a model refit on each window's history
    (`backtest.refit`). A series joins a window when it has the history a holdout needs before its cutoff.
    `on_window(done, windows)` reports progress."""
    if config.backtest.refit:
        def fit_fn(history):
            return fit(history, config).forecast
        return backtest_from_config(data.panel, config, fit_fn=fit_fn, min_history=min_train_length(config),
                                    on_window=on_window)
    return backtest_from_config(data.panel, config, choice.forecaster.forecast,
                                min_history=min_train_length(config), first_window=choice.first_window,
                                on_window=on_window)


@dataclass
class Forecasts:
    """What `forecast` returns: the backtest of every window and the future predictions."""
    backtest: Backtest  # every window's forecasts (the last one is the holdout), with held-out intervals
    future: pd.DataFrame  # predictions past T, long format, with the interval columns of `config.levels`
    intervals_source: str = "none"  # "model" (saved beside it), "run" (this shard's backtest) or "none"
    backtest_seconds: float = 0.0  # forecasting (and refitting) the backtest windows
    series_by_model: dict[str, int] = field(default_factory=dict)  # served: series per `model` value
    coverage: pd.DataFrame | None = None  # served: held-out interval hits per history band (`coverage_sums`)
    statistical_seconds: float = 0.0  # fitting the statistical models and choosing what serves each series


def forecast(choice: ModelChoice, data: Prepared, config: ForecastConfig, *, store: ModelStore | None = None,
             log=None) -> Forecasts:
    """The backtest windows and the published forecast past T (H steps per series), with its intervals.

    The intervals are those saved beside the model when they fit the run (levels, method, horizon),
    else calibrated on this backtest; given a `store`, they are saved beside a model trained in this
    run that has none yet (a run of one shard). Predictions are in the input's units.
    """
    log = log or _log
    h = config.horizon
    panel = data.panel
    t0 = time.perf_counter()
    with Progress() as line:  # on a terminal: the backtest windows, then the forecast past T
        bt = run_backtest(choice, data, config, on_window=lambda done, n: line.update("backtest windows", done, n))
    seconds = time.perf_counter() - t0
    intervals, source = None, "none"
    if config.levels:
        if intervals_fit(choice.intervals, config):
            intervals, source = choice.intervals, "model"
        elif bt.intervals is not None:
            intervals, source = bt.intervals, "run"
            made_here = choice.decision.action == "train" or bool(choice.decision.promoted)
            if store is not None and choice.model_key is not None and made_here:
                store.save_intervals(intervals, choice.model_key, choice.version, log=log)
    if panel.n_series == 0:  # a shard whose series were all skipped
        future = np.zeros((0, h))
    else:
        # One covariate path for the windows and the future: known-ahead values from the panel (the true
        # ones over each window, the given future rows past the end), historic covariates carried forward.
        with Progress() as line:
            line.update(f"forecast of {panel.n_series} series past their end", 0, 1)
            future = choice.final.forecast(panel, h)  # (S, H)
    freq = config.resolved_values("forecast").freq
    frame = predictions_frame(panel, future, freq).assign(model_version=choice.version)
    if config.levels:
        bounds = intervals.predict(panel, future) if intervals is not None and panel.n_series else \
            {c: np.full(future.shape, np.nan) for lv in config.levels for c in interval_columns(lv)}
        frame = with_intervals(frame, bounds)
    log.info("forecast %d series x %d steps; backtest: %d windows, %d rows in %.1f s; intervals: %s",
             panel.n_series, h, config.backtest.windows, len(bt.frame), seconds, source)
    return Forecasts(bt, frame, source, seconds)


# --- the statistical standards and the served forecast --------------------------------------------------
def statistical(data: Prepared, config: ForecastConfig, log=None) -> StatisticalBacktest:
    """AutoETS, AutoTheta, seasonal naive and naive on the network's backtest cutoffs and past T
    (`lstm_core.statistical.statistical_backtest`): the naive ones on every series, the standards on the
    series the network cannot serve and those shorter than `statistical.long_history` (8 horizons)."""
    drops = cutoff_drops(config.backtest.windows, config.backtest_step, config.horizon)
    full = data.all_series
    fit = ~network_serves(full, config) | (full.lengths < long_history(config.horizon))
    return statistical_backtest(full, horizon=config.horizon, season_length=config.season_lengths[0],
                                drops=drops, models=STATISTICAL_MODELS, fit=fit, log=log or _log)




def candidates_of(config: ForecastConfig, network: bool = True) -> list[str]:
    """The candidates a series may be served: the network (when it runs), the statistical models and the
    naive ones (seasonal naive only where the season is above 1: at season 1 it is naive itself)."""
    return [*(("lstm",) if network else ()), *STATISTICAL_MODELS,
            *(("seasonal_naive",) if config.season_lengths[0] > 1 else ()), "naive"]


def combine(forecasts: Forecasts | None, stat: StatisticalBacktest, choice: ModelChoice | None, data: Prepared,
            config: ForecastConfig, log=None) -> Forecasts:
    """The served forecast: per series the network, a statistical model or an equal-weight combination,
    chosen on backtest windows only (`lstm_core.combination`), with conformal intervals calibrated on the
    served forecast's own held-out backtest residuals, pooled per history-length band.

    `forecasts`: the network's (None when it serves no series). Returns Forecasts whose `future` has a
    `model` column (what served each row) and whose `backtest` holds every candidate side by side.
    """
    log = log or _log
    t0 = time.perf_counter()
    h, step = config.horizon, config.backtest_step
    freq, season, _ = config.resolved_values("combine")
    full = data.all_series
    levels = tuple(float(v) for v in config.levels)
    lstm_cols = ["yhat", *(c for lv in levels for c in interval_columns(lv))]
    net = forecasts if forecasts is not None and data.panel.n_series > 0 else None  # None: the network serves none
    rows = stat.frame.merge(stat.scales[["series_id", "cutoff", "interval_scale"]], on=["series_id", "cutoff"],
                            how="left", validate="many_to_one")
    if net is not None:
        lstm = net.backtest.frame[["series_id", "cutoff", "step", *lstm_cols]]
        rows = rows.merge(lstm.astype({"cutoff": rows["cutoff"].dtype}), on=["series_id", "cutoff", "step"],
                          how="left", validate="one_to_one")
    else:
        for c in lstm_cols:
            rows[c] = np.nan
    rows["lstm"] = rows["yhat"]
    cands = candidates_of(config, net is not None)
    need = {"seasonal_naive": season}  # shorter than a season, it is no seasonal naive
    served = serve_backtest(rows, cands, horizon=h, step=step, min_history=need)
    rows = served.rows
    banded = None
    if levels:
        banded, bounds = served_intervals(rows, stat.scales, levels=levels, horizon=h, step=step,
                                          season_length=season, method=config.interval_method,
                                          prior_windows=PRIOR_WINDOWS)
        rows = pd.concat([rows, bounds], axis=1)
    # the forecast past T
    future = dict(stat.future)
    lstm_future = np.full((full.n_series, h), np.nan)
    pos = np.zeros(0, dtype=np.intp)
    if net is not None:
        pos = pd.Index(full.series_ids.astype(str)).get_indexer(data.panel.series_ids.astype(str))
        lstm_future[pos] = net.future["yhat"].to_numpy(np.float64).reshape(data.panel.n_series, h)
    future["lstm"] = lstm_future
    values, labels = serve_future(rows, future, full.series_ids, full.lengths, cands, horizon=h, min_history=need)
    version = choice.version if choice is not None else None  # null: the network served no series
    frame = predictions_frame(full, values, freq).assign(
        model_version=version, model=pd.Series(np.repeat(np.asarray(labels, dtype=object), h), dtype="string"))
    for name in CANDIDATES:  # every candidate's own forecast beside the served one (NaN: not available)
        frame[f"yhat_{name}"] = future[name].reshape(-1).astype(np.float64)
    source = "none"
    if levels:
        predicted = banded.predict(full, values) if banded is not None else {}
        future_bounds = {c: predicted.get(c, np.full(values.shape, np.nan))
                         for lv in levels for c in interval_columns(lv)}
        source = "run"
        if net is not None and net.intervals_source != "none":
            # A series the network serves alone publishes the network's own conformal intervals: those saved
            # beside a loaded model version (read and checked with it: checksum, signature, shape), else this
            # run's. Every other series (statistical or combined) has the served forecast's banded intervals.
            alone = np.flatnonzero(np.asarray(labels, dtype=object) == "lstm")
            if len(alone):
                for c in future_bounds:
                    own = np.full((full.n_series, h), np.nan)
                    own[pos] = net.future[c].to_numpy(np.float64).reshape(data.panel.n_series, h)
                    future_bounds[c] = future_bounds[c].copy()
                    future_bounds[c][alone] = own[alone]
            source = net.intervals_source  # `model` or `run`: where the network's intervals came from
        frame = with_intervals(frame, future_bounds)
    keep = ["series_id", "cutoff", "ds", "step", "y", "yhat", "seasonal_naive", *lstm_cols[1:],
            *STATISTICAL_MODELS, "naive", "served", "model",
            *(c.replace("yhat_", "served_") for lv in levels for c in interval_columns(lv)), "history"]
    out = rows[[c for c in keep if c in rows.columns]].sort_values(["series_id", "cutoff", "step"], kind="stable")
    lstm_bt = forecasts.backtest if forecasts is not None else None
    backtest = ServedBacktest(out.reset_index(drop=True), stat.scales, lstm_bt.skipped if lstm_bt is not None else
                              pd.DataFrame(columns=["series_id", "window", "history", "reason"]), h,
                              season, config.backtest.windows, step, levels,
                              lstm_bt.intervals if lstm_bt is not None else None)
    coverage = coverage_sums(rows, levels, h) if levels else pd.DataFrame()
    by_model = pd.Series(labels, dtype=object).value_counts().sort_index()
    seconds = time.perf_counter() - t0
    log.info("served %d series: %s (statistical models %.1f s, combination %.1f s)", full.n_series,
             ", ".join(f"{k} {v}" for k, v in by_model.items()), stat.seconds, seconds)
    return Forecasts(backtest, frame, source,
                     forecasts.backtest_seconds if forecasts is not None else 0.0,
                     series_by_model={str(k): int(v) for k, v in by_model.items()},
                     coverage=coverage, statistical_seconds=round(stat.seconds + seconds, 3))


class ServedBacktest(Backtest):
    """The backtest of every candidate side by side: `yhat` (the network, with its interval columns),
    `seasonal_naive`, `autoets`, `autotheta`, `dynamic_theta`, `naive`, and `served`
    (with `served_lo_<L>`/`served_hi_<L>`).
    Each is scored on the rows where it has a forecast; coverage and MSIS for the network and the served."""

    def sums(self, model_name: str = "lstm") -> ErrorSums:
        """Mergeable error totals of `model_name` over every window, scaled by each series' MASE scale."""
        rows = self.frame.merge(self.scales[["series_id", "cutoff", "window", "mase_scale"]],
                                on=["series_id", "cutoff"], how="left")
        bounds = [c for lv in self.levels for c in interval_columns(lv)]
        no_bounds = rows.assign(**{c: np.nan for c in bounds})
        with_served = rows.assign(**{c: rows[c.replace("yhat_", "served_")] for c in bounds}) \
            if self.levels else rows
        parts = [(rows, model_name, "yhat"), (no_bounds, "seasonal_naive", "seasonal_naive"),
                 *((no_bounds, m, m) for m in (*STATISTICAL_MODELS, "naive") if m in rows.columns),
                 (with_served, "served", "served")]
        sums = []
        for frame, name, column in parts:
            part = frame[np.isfinite(frame[column].to_numpy(np.float64))]
            if len(part):
                sums.append(ErrorSums.from_rows(part, forecasts={name: column}, scale="mase_scale", keys=KEYS,
                                                interval_model=name, levels=self.levels))
        if not sums:
            return ErrorSums.from_rows(rows, forecasts={model_name: "yhat"}, scale="mase_scale", keys=KEYS,
                                       interval_model=model_name, levels=self.levels)
        return sums[0].merge(*sums[1:]) if len(sums) > 1 else sums[0]


# --- score ----------------------------------------------------------------------------------------------
@dataclass
class Scored:
    """A shard's scores: the metrics table (per series and window, per series, per window, pooled)
    and what the flow pools over shards."""

    holdout: Evaluation  # the last window (today's holdout) of every series, for the plots
    metrics: pd.DataFrame  # `metrics_table` layout: series_id, metric, value, model, cutoff, backtest_window,
    # model_version
    pooled: MetricTotals  # over every series and window, by model and metric
    per_window: MetricTotals  # by window, model and metric
    window_cutoffs: dict[int, Any] = field(default_factory=dict)  # window -> its latest cutoff

    @property
    def series_ids(self) -> np.ndarray:
        """Ids of the series scored, in the holdout's order."""
        return self.holdout.series_ids


def score(forecasts: Forecasts, choice: ModelChoice | None, data: Prepared, config: ForecastConfig,
          log=None) -> Scored:
    """Score every backtest window of every model (the network, seasonal naive and, on a served backtest,
    the statistical models and the served forecast), with interval coverage and MSIS."""
    log = log or _log
    bt = forecasts.backtest
    version = choice.version if choice is not None else "lstm"  # None: the network served no series
    sums = bt.sums(version)
    # the same as bt.metrics(), without summing the rows twice; labelled as the metrics table has them (the
    # LSTM as `lstm` beside its version; with no network model, `lstm` rows have no version)
    metrics = metrics_table(backtest_metrics(sums), {choice.version} if choice is not None else set())
    holdout = _holdout_of(bt, data, version, config)
    newest = bt.scales.groupby("window")["cutoff"].max()
    latest = {int(w): c for w, c in zip(newest.index.tolist(), newest.tolist(), strict=True)}
    scored = Scored(holdout, metrics, sums.totals(()), sums.totals(("window",)), latest)
    pooled = scored.pooled.finalize()
    for name in (version, "seasonal_naive", *STATISTICAL_MODELS, "naive", "served"):
        if not (pooled["model"] == name).any():
            continue
        rows = pooled[pooled["model"] == name]
        values = dict(zip(rows["metric"], rows["value"], strict=True))
        log.info("backtest %s (%d windows): MAE %.4f sMAPE %.3f MASE %.4f%s",
                 "lstm" if name == version else name, bt.windows, values.get("mae", np.nan),
                 values.get("smape", np.nan), values.get("mase", np.nan),
                 "".join(f" coverage_{k[9:]} {v:.3f}" for k, v in values.items() if k.startswith("coverage_")))
    return scored


def _holdout_of(bt: Backtest, data: Prepared, version: str, config: ForecastConfig) -> Evaluation:
    """The last window (every series has it: it is the holdout validation guarantees) as (S, H) arrays."""
    h = config.horizon
    ids = data.panel.series_ids
    window = bt.windows - 1
    rows = bt.frame.merge(bt.scales.loc[bt.scales["window"] == window, ["series_id", "cutoff"]],
                          on=["series_id", "cutoff"], how="inner")
    actual = np.full((len(ids), h), np.nan)  # (S, H)
    fc = {version: np.full((len(ids), h), np.nan), "seasonal_naive": np.full((len(ids), h), np.nan)}
    pos = pd.Index(ids.astype(str)).get_indexer(rows["series_id"].astype(str))
    step = rows["step"].to_numpy(np.int64) - 1
    ok = pos >= 0
    actual[pos[ok], step[ok]] = rows["y"].to_numpy(np.float64)[ok]
    fc[version][pos[ok], step[ok]] = rows["yhat"].to_numpy(np.float64)[ok]
    fc["seasonal_naive"][pos[ok], step[ok]] = rows["seasonal_naive"].to_numpy(np.float64)[ok]
    return Evaluation(ids, actual, fc, pd.DataFrame())
