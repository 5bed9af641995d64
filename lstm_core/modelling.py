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

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lstm_core import artifacts
from lstm_core.artifacts import data_fingerprint
from lstm_core.backtest import (Backtest, WindowHook, backtest_from_config, backtest_metrics, metrics_table,
                               training_cutoff)
from lstm_core.config import ForecastConfig, ModelSpec
from lstm_core.engine import Evaluation, Forecaster, fit, panel_of, predictions_frame
from lstm_core.errors import ArtifactError
from lstm_core.intervals import INTERVALS_FILE, ConformalIntervals, with_intervals
from lstm_core.metrics import MetricTotals, interval_columns
from lstm_core.model_store import Decision, decide_for, split_model_url
from lstm_core.panel import Panel
from lstm_core.progress import Progress
from lstm_core.retries import call_with_retries
from lstm_core.storage import Location
from lstm_core.tuning import check_tuned_fits
from lstm_core.validation import SkippedSeries, ValidationResult, min_input, min_train_length, network_reasons
from lstm_core.windows import plan_windows, target_bounds, validation_span, windows_per_series

_log = logging.getLogger("lstm_core.modelling")


# --- data -------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Validated series packed for the model, and what validation found (the frame itself is released)."""

    panel: Panel  # full history of every valid series: (S, T, F) values with per-series lengths
    # what the model trains on: the history before the earliest backtest cutoff (window
    # `first_window`) of the series long enough for it; with one window, every series up to T - H
    train_panel: Panel
    fingerprint: str  # of `panel`'s values, dates and ids: a saved model records the data it learned from
    train_windows: int  # training windows available in `train_panel`
    validation_windows: int
    skipped: list[SkippedSeries] = field(default_factory=list)
    filled_points: int = 0
    rows_read: int = 0
    first_window: int = 0
    # series the network cannot learn (too few points for one training window), with the reason: the
    # fallback serves them; they stay in `panel` (shortness is never a reason to skip a series)
    fallback: list[SkippedSeries] = field(default_factory=list)

    @property
    def series_read(self) -> int:
        return int(self.panel.n_series) + len(self.skipped)

    def skipped_frame(self) -> pd.DataFrame:
        return ValidationResult(pd.DataFrame(), self.skipped).skipped_frame()


def prepare_data(validated: ValidationResult, config: ForecastConfig, log=None) -> Prepared:
    """Pack validated series into the panels a run needs (`config` resolved to the data's frequency).

    The training panel ends before the earliest backtest cutoff, so no backtest window (and never the
    holdout) is seen in training. Raises ConfigError when tuned settings (`tuned: latest`) ask for a
    window the data cannot fill. An empty `validated` gives empty panels: the caller decides whether
    that is an error (see `no_valid_series`).
    """
    log = log or _log
    panel = panel_of(validated, config)
    check_tuned_fits(config, panel)  # tuned: latest: a tuned window the data cannot use is refused, not clipped
    first_window, train_panel = training_cutoff(panel, config)
    chunk = config.chunk_length
    span = validation_span(config.validation_steps, chunk)
    plan = plan_windows(train_panel.lengths, config.window, chunk, span, min_input(config))
    padded = train_panel.pad_rows(plan.pad)
    lo, hi = target_bounds(padded, config.window, plan.holdout, chunk, plan.first_target)
    train_windows = int((hi - lo).clip(min=0).sum())
    val_windows = int(np.where(plan.holdout > 0, span // chunk, 0).sum())
    fallback = [SkippedSeries(str(sid), "y", reason) for sid, reason in
                zip(panel.series_ids, network_reasons(panel.lengths, config)) if reason is not None]
    if fallback:
        log.info("%d series are too short for the network to learn (fewer than %d points): handed to the "
                 "fallback", len(fallback), min_train_length(config))
    log.info("%d series, %d features; %d training windows available (%d sampled per series per epoch), "
             "%d validation windows; training cutoff: backtest window %d of %d (%d series)", panel.n_series,
             panel.n_features, train_windows,
             windows_per_series(padded, config.window, plan.holdout, chunk, config.training.windows_per_series,
                                config.training.min_windows_per_epoch, plan.first_target), val_windows, first_window,
             config.backtest.windows, train_panel.n_series)
    return Prepared(panel, train_panel, data_fingerprint(panel), train_windows, val_windows,
                    list(validated.skipped), validated.filled_points, validated.rows_read, first_window, fallback)


# --- the model store ----------------------------------------------------------------------------------
# Under `refit`, the model that scored the backtest (trained before the earliest cutoff) is kept inside the
# version of the final one, at `<version>/backtest/<version>/`: below a version, so never a candidate to load.
BACKTEST_MODEL = "backtest"


@dataclass(frozen=True)
class ModelStore:
    """Where models are kept: `<url>/<model key>/<version>/` (weights, metadata, saved intervals; under
    `refit`, the model that scored the backtest in `backtest/<version>/`).

    Opened once per run (`ModelStore.of(config)`); it owns its `Location` (URL and filesystem), so
    callers pass the store, not URLs and options.
    """

    location: Location

    @classmethod
    def of(cls, config: ForecastConfig) -> "ModelStore":
        return cls(config.location(config.layout().models()))

    @property
    def url(self) -> str:
        return self.location.url

    def decide(self, spec: ModelSpec, newest: Panel | None) -> Decision:
        """Load or train, and why (`lstm_core.model_store.decide_for`): `newest` is the data a saved
        model is checked against (None under retrain 'never' or a pinned model)."""
        return decide_for(spec.config, self.location, newest, spec.group)

    def save(self, forecaster: Forecaster, spec: ModelSpec, fingerprint: str, version: str,
             backtest: Forecaster | None = None) -> None:
        """Write a version (retried in place on storage hiccups: the training is never repeated).
        `backtest`: under refit, the model that scores the backtest, written first (inside the version,
        which is complete only once its own metadata is written last)."""
        config = spec.config
        extra = {"group": spec.group} if config.group_column is not None else None
        if backtest is not None:
            call_with_retries(artifacts.save, backtest, self.location.child(spec.key, version), BACKTEST_MODEL,
                              config=config.public_dict(), fingerprint=fingerprint, version=version, extra=extra,
                              what="saving the backtest model")
        call_with_retries(artifacts.save, forecaster, self.location, spec.key, config=config.public_dict(),
                          fingerprint=fingerprint, version=version, extra=extra, what="saving the model")

    def save_intervals(self, intervals: ConformalIntervals, key: str, version: str, log=None) -> None:
        """Save `intervals.json` beside a version, its sha256 recorded in the version's (signed) metadata,
        so a loaded version serves only checked intervals. A version whose metadata cannot be extended
        (signed, and no key now) keeps none: later runs calibrate their own (a warning says why)."""
        data = json.dumps(intervals.to_dict(), indent=2, sort_keys=True, allow_nan=False).encode()
        try:
            call_with_retries(artifacts.add_file, self.location, key, version, INTERVALS_FILE, data,
                              what="saving the intervals")
        except ArtifactError as exc:
            (log or _log).warning("the intervals are not saved beside the model: %s", exc)

    def holding(self, config: ForecastConfig) -> Location:
        """The store `config`'s versions live in: this one, or the one a `model_url` pins."""
        return self.location.with_url(split_model_url(config.model_url)[0]) if config.model_url else self.location

    def backtest_model(self, key: str, version: str, config: ForecastConfig) -> Forecaster | None:
        """The model kept inside a refit version, trained before its earliest cutoff: what scores backtests
        with that version (None when the version was not refit). Raises ArtifactError when it cannot be used."""
        inside = self.holding(config).child(key, version)
        if not inside.fs.exists(inside.child(BACKTEST_MODEL, version, "metadata.json").path):
            return None
        return artifacts.load(inside, BACKTEST_MODEL, version, max_bytes=config.max_model_bytes).forecaster

    def open(self, ref: ModelRef, config: ForecastConfig, log=None) -> "ModelChoice":
        """The stored version `ref` names, with the intervals saved beside it: what its shards forecast with.

        Opened through the same checks as any saved model (allowlist, sizes, checksums, signature); raises
        ArtifactError when it cannot be used. The shards of a run open the same version: it is opened once
        per process (`_OPENED`), so its compiled forecast loop is traced once, not once per shard.
        """
        log = log or _log
        holding = self.holding(config)
        cached = (holding.url, ref.model_key, ref.version, ref.refit, config.max_model_bytes)
        if cached not in _OPENED:
            loaded = artifacts.load(holding, ref.model_key, ref.version, max_bytes=config.max_model_bytes)
            scorer = self.backtest_model(ref.model_key, ref.version, config) if ref.refit else loaded.forecaster
            if scorer is None:
                raise ArtifactError(f"model {loaded.url} was refit but keeps no {BACKTEST_MODEL}/ model inside it")
            _OPENED[cached] = (loaded, scorer)
            while len(_OPENED) > _OPENED_MAX:
                _OPENED.popitem(last=False)
        _OPENED.move_to_end(cached)
        loaded, scorer = _OPENED[cached]
        decision = Decision(ref.decision["action"], ref.decision["reason"], loaded)
        return ModelChoice(scorer, loaded.forecaster, decision, ref.version, ref.group,
                           first_window=ref.first_window, intervals=_saved_intervals(self, loaded, config, log),
                           model_key=ref.model_key)


# Versions opened in this process, newest last: (store URL, key, version, refit, size cap) -> (loaded, scorer).
_OPENED: "OrderedDict[tuple, tuple[Any, Forecaster]]" = OrderedDict()
_OPENED_MAX = 4


# --- get or train ------------------------------------------------------------------------------------
@dataclass
class ModelChoice:
    """The model a run forecasts with, where it came from, and the intervals that go with it."""

    forecaster: Forecaster  # scores the backtest (trained on the data before its earliest cutoff)
    final: Forecaster  # forecasts past T (the same model unless refit)
    decision: Decision
    version: str
    group: str | None = None
    first_window: int = 0  # backtest windows before it precede the end of the training data: skipped
    intervals: ConformalIntervals | None = None  # saved beside the model version (None: calibrate in the run)
    model_key: str | None = None  # where the version is stored (None: not stored, mode per_series)


@dataclass(frozen=True)
class ModelRef:
    """A model by reference: what crosses from a group's training to its shards and to the manifest.

    Small and picklable (no Keras objects): the shards open the stored version themselves.
    """

    model_key: str | None  # None: not stored (mode per_series)
    version: str
    group: str | None
    first_window: int
    decision: dict[str, Any]  # `Decision.as_dict()`: action, reason (and the loaded version)
    training: dict[str, Any]  # the training summary the version was saved with
    refit: bool = False  # the version keeps the model that scores the backtest apart (`BACKTEST_MODEL`)

    @classmethod
    def of(cls, choice: "ModelChoice") -> "ModelRef":
        return cls(choice.model_key, choice.version, choice.group, int(choice.first_window),
                   choice.decision.as_dict(), dict(choice.forecaster.training or {}),
                   refit=choice.forecaster is not choice.final)


def intervals_fit(intervals: ConformalIntervals | None, config: ForecastConfig) -> bool:
    """Saved intervals fit this run: same levels and method, calibrated for at least the horizon."""
    return (intervals is not None and tuple(intervals.levels) == tuple(float(v) for v in config.levels)
            and intervals.method == config.interval_method and intervals.horizon >= config.horizon)


def _saved_intervals(store: ModelStore, loaded, config: ForecastConfig, log) -> ConformalIntervals | None:
    """The conformal quantiles saved beside a loaded model version, when they fit this run."""
    if not config.levels:
        return None
    version = split_model_url(loaded.url)[2]
    saved = loaded.intervals  # read and checked with the version (checksum, signature, shape)
    if saved is None:
        log.info("model %s has no saved intervals: they are calibrated on this run's backtest", version)
    elif not intervals_fit(saved, config):
        log.info("model %s's saved intervals (levels %s, %s, %d steps) do not fit this run: recalibrated",
                 version, list(saved.levels), saved.method, saved.horizon)
        return None
    return saved


class _TrainingProgress:
    """Feeds the engine's epoch, batch and series hooks to the log and a terminal progress line."""

    def __init__(self, epochs: int, log) -> None:
        self.epochs, self.series, self.log = epochs, "", log
        self.line = Progress()

    def on_epoch(self, epoch: int, logs: dict) -> None:
        self.log.info("epoch %d/%d loss=%.4f val_loss=%.4f", epoch, self.epochs, logs.get("loss", float("nan")),
                      logs.get("val_loss", float("nan")))

    def on_series(self, done: int, total: int, series_id: str) -> None:
        self.series = f"series {done + 1}/{total} {series_id} "

    def on_batch(self, epoch: int, done: int, per_epoch: int) -> None:
        self.line.update(f"{self.series}epoch {epoch}/{self.epochs}", done, per_epoch, "batches")

    def fit(self, panel: Panel, config: ForecastConfig) -> Forecaster:
        with self.line:
            return fit(panel, config, on_epoch=self.on_epoch, on_batch=self.on_batch, on_series=self.on_series)


def get_or_train(store: ModelStore, spec: ModelSpec, data: Prepared | None, *, calibrate: bool = False,
                 log=None) -> tuple[ModelChoice, Decision]:
    """The model of `spec`: a saved version when the retrain policy keeps it, else one trained and saved.

    `data` is the training data (a bounded sample of the group's series under sharding). Under retrain
    'never' or a pinned model it may be None: the model key fixes the inputs. A model trained here learns
    from the data before the earliest backtest cutoff (`data.train_panel`); the retrain check scores a saved
    model on the newest data before the holdout. `calibrate`: also backtest the trained model on `data` and
    save the conformal intervals beside its version. A loaded model brings the intervals saved beside it.

    Returns (the choice, its decision). Raises ArtifactError when retrain is 'never' (or a model is pinned)
    and nothing fits; ValueError when no series is long enough to train.
    """
    log = log or _log
    config = spec.config
    label = f"group {spec.group!r}: " if config.group_column is not None else ""
    if config.mode == "per_series":
        decision = Decision("train", "mode 'per_series' trains one model per series on every run")
    else:
        newest = data.panel.drop_upto(config.horizon) if data is not None and data.panel.n_series else \
            (data.train_panel if data is not None else None)
        decision = store.decide(spec, newest)
    log.info("%smodel decision: %s (%s)", label, decision.action, decision.reason)
    if decision.action == "load":
        loaded = decision.loaded
        version, key = loaded.metadata["version"], loaded.metadata.get("model_key") or spec.key
        # A refit version has seen every backtest window: they are scored by the model kept inside it.
        scorer = store.backtest_model(key, version, config) if config.mode != "per_series" else None
        if scorer is not None:
            log.info("%smodel %s was refit on all data: its backtest is scored by the model kept inside it, "
                     "trained before its earliest cutoff", label, version)
        choice = ModelChoice(scorer or loaded.forecaster, loaded.forecaster, decision, version, spec.group,
                             intervals=_saved_intervals(store, loaded, config, log), model_key=key)
        return choice, decision

    trainer = _TrainingProgress(config.training.epochs, log)
    forecaster = trainer.fit(data.train_panel, config)
    log.info("trained on %s (cuDNN eligible: %s) in %.1f s, best validation loss %.4f",
             forecaster.training["device"], forecaster.training.get("cudnn"), forecaster.training["seconds"],
             forecaster.training["best_val_loss"])
    final = forecaster
    if config.refit:
        log.info("refitting on all data before the final forecast")
        final = trainer.fit(data.panel, config)
    if config.mode == "per_series":
        choice = ModelChoice(forecaster, final, decision, f"per-series-{data.fingerprint[:12]}", spec.group,
                             first_window=data.first_window)
        return choice, decision
    version = artifacts.new_version()  # fixed across retries: a retry rewrites the same objects
    store.save(final, spec, data.fingerprint, version, backtest=forecaster if final is not forecaster else None)
    log.info("%ssaved model %s/%s/%s", label, "models", spec.key, version)
    choice = ModelChoice(forecaster, final, decision, version, spec.group, first_window=data.first_window,
                         model_key=spec.key)
    if calibrate and config.levels:
        bt = run_backtest(choice, data, config)
        if bt.intervals is not None:
            choice.intervals = bt.intervals
            store.save_intervals(bt.intervals, spec.key, version, log=log)
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
    backtest: Backtest  # every window's forecasts (the last one is the holdout), with held-out intervals
    future: pd.DataFrame  # predictions past T, long format, with the interval columns of `config.levels`
    intervals_source: str = "none"  # "model" (saved beside it), "run" (this shard's backtest) or "none"
    backtest_seconds: float = 0.0  # forecasting (and refitting) the backtest windows


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
            if store is not None and choice.model_key is not None and choice.decision.action == "train":
                store.save_intervals(intervals, choice.model_key, choice.version, log=log)
    if panel.n_series == 0:  # a shard whose series were all skipped
        future = np.zeros((0, h))
    else:
        # One covariate path for the windows and the future: known-ahead values from the panel (the true
        # ones over each window, the given future rows past the end), historic covariates carried forward.
        with Progress() as line:
            line.update(f"forecast of {panel.n_series} series past their end", 0, 1)
            future = choice.final.forecast(panel, h)  # (S, H)
    frame = predictions_frame(panel, future, config.freq).assign(model_version=choice.version)
    if config.levels:
        bounds = intervals.predict(panel, future) if intervals is not None and panel.n_series else \
            {c: np.full(future.shape, np.nan) for lv in config.levels for c in interval_columns(lv)}
        frame = with_intervals(frame, bounds)
    log.info("forecast %d series x %d steps; backtest: %d windows, %d rows in %.1f s; intervals: %s",
             panel.n_series, h, config.backtest.windows, len(bt.frame), seconds, source)
    return Forecasts(bt, frame, source, seconds)


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
        return self.holdout.series_ids


def score(forecasts: Forecasts, choice: ModelChoice, data: Prepared, config: ForecastConfig, log=None) -> Scored:
    """Score every backtest window of the model and of seasonal naive, with interval coverage and MSIS."""
    log = log or _log
    bt = forecasts.backtest
    sums = bt.sums(choice.version)
    # the same as bt.metrics(), without summing the rows twice; labelled as the metrics table has them
    metrics = metrics_table(backtest_metrics(sums), {choice.version})
    holdout = _holdout_of(bt, data, choice, config)
    latest = {int(w): c for w, c in bt.scales.groupby("window")["cutoff"].max().items()}
    scored = Scored(holdout, metrics, sums.totals(()), sums.totals(("window",)), latest)
    pooled = scored.pooled.finalize()
    for name in (choice.version, "seasonal_naive"):
        values = dict(zip(pooled.loc[pooled["model"] == name, "metric"], pooled.loc[pooled["model"] == name, "value"]))
        log.info("backtest %s (%d windows): MAE %.4f sMAPE %.3f MASE %.4f%s",
                 "lstm" if name == choice.version else name, bt.windows, values.get("mae", np.nan),
                 values.get("smape", np.nan), values.get("mase", np.nan),
                 "".join(f" coverage_{k[9:]} {v:.3f}" for k, v in values.items() if k.startswith("coverage_")))
    return scored


def _holdout_of(bt: Backtest, data: Prepared, choice: ModelChoice, config: ForecastConfig) -> Evaluation:
    """The last window (every series has it: it is the holdout validation guarantees) as (S, H) arrays."""
    h = config.horizon
    ids = data.panel.series_ids
    window = bt.windows - 1
    rows = bt.frame.merge(bt.scales.loc[bt.scales["window"] == window, ["series_id", "cutoff"]],
                          on=["series_id", "cutoff"], how="inner")
    actual = np.full((len(ids), h), np.nan)  # (S, H)
    fc = {choice.version: np.full((len(ids), h), np.nan), "seasonal_naive": np.full((len(ids), h), np.nan)}
    pos = pd.Index(ids.astype(str)).get_indexer(rows["series_id"].astype(str))
    step = rows["step"].to_numpy(np.int64) - 1
    ok = pos >= 0
    actual[pos[ok], step[ok]] = rows["y"].to_numpy(np.float64)[ok]
    fc[choice.version][pos[ok], step[ok]] = rows["yhat"].to_numpy(np.float64)[ok]
    fc["seasonal_naive"][pos[ok], step[ok]] = rows["seasonal_naive"].to_numpy(np.float64)[ok]
    return Evaluation(ids, actual, fc, pd.DataFrame())
