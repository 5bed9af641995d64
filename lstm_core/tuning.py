"""Hyperparameter tuning: an Optuna study over the network and training settings, judged by backtests.

A trial draws settings from the search space (`default_space`, narrowed or widened by `tuning.space`),
trains on a stable sample of at most `tuning.max_series` series and scores a rolling-origin backtest
(`lstm_core.backtest`): the objective is the pooled backtest MASE (mean over every series and window).
The final window (the last `horizon` points: a run's holdout, a benchmark's test) never enters tuning:
the study sees `panel.drop_last(horizon)` only.

- Sampler: TPE, seeded from `seed`. Pruner: median of the other trials' epoch validation losses at the same
  epoch (`PruneOnValidationLoss`, a Keras callback), after a few trials and epochs of warm-up.
- Budget: `trials` and/or `minutes` per call; a trial running when the minutes run out stops training
  there (the best weights so far are scored), so a call ends close to its budget with the best so far.
- Where: in this process, or on a Dask cluster (`client`): one trial per worker at a time, the study in
  optuna-integration's `DaskStorage` on the scheduler, so every worker reports to the same pruner.
- Results under `<output_url>/tuning/study=<name>/`: `journal.log` (the study, Optuna's journal format:
  a rerun with the same name resumes it), `trials.parquet`, `best.yaml` (the tuned and data settings, which
  `run --config` reads as a tuning result: nothing else is accepted from a file of that name), `best.json` (what `tuned: latest` applies, and where it came from), `objective.png`.
"""
from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import yaml

from lstm_core.config import ConfigError, ForecastConfig, merge_settings, names_a_setting, redact_url, validate_config
from lstm_core.panel import Panel

log = logging.getLogger("lstm_core.tuning")
# DaskStorage is marked experimental by optuna-integration; the pinned version is tested here.
warnings.filterwarnings("ignore", message=r"DaskStorage is experimental")

LAYERS = "model.layers"  # not a setting: stacked LSTM layers, each of `model.units` units
# Settings a search space may hold: the network, its training, its input size and how the target is shaped.
TUNABLE_TOP = ("window", "scaler", "target_transform", "calendar_features")
TUNABLE_SECTIONS = ("model.", "training.")
NOT_TUNABLE = ("training.max_series", "training.max_train_minutes")  # budgets of a run, not its model
STUDY_FILES = ("journal.log", "trials.parquet", "best.yaml", "best.json", "objective.png")
# Data settings a best.yaml carries besides the tuned ones, so `run --config best.yaml` forecasts as tuned.
DATA_SETTINGS = ("freq", "horizon", "season_length", "extra_season_lengths", "scaler", "target_transform", "mode",
                 "historic_covariates", "future_covariates", "static_covariates", "calendar_features", "seed")
TUNING_KEY = "lstm-fc-tune-key"  # 16 bytes: the hash key of the tuning sample (its own, not the shards')
PRUNE_STARTUP_TRIALS = 3  # trials that always finish before the median rule may prune
PRUNE_WARMUP_EPOCHS = 4  # epochs each trial trains before it may be pruned (steps are 1-based epochs)


# --- the search space ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One tuned setting: `choices` (categorical), or a `low`..`high` range (int when both are ints), `log`
    scaled or in `step`s; `value` alone is a fixed setting (applied to every trial, never sampled)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    value: Any = None

    @property
    def fixed(self) -> bool:
        return self.choices is None and self.low is None

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and \
            (self.step is None or isinstance(self.step, int))

    def suggest(self, trial) -> Any:
        if self.fixed:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def describe(self) -> Any:
        if self.fixed:
            return self.value
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def default_space(config: ForecastConfig) -> dict[str, Any]:
    """The default search space for a resolved configuration, as `tuning.space` spells it.

    Units and layers, dropout, learning rate (log scale), window (half to twice the configured input size),
    loss, batch size, deseasonalisation, chunk length (a quarter, half or all of the horizon) and ensemble size.
    """
    _require_resolved(config)
    h, w = config.horizon, int(config.window)
    windows = sorted({max(2, int(round(w * f))) for f in (0.5, 1.0, 1.5, 2.0)})
    chunks = sorted({max(1, math.ceil(h / 4)), max(1, math.ceil(h / 2)), h})
    return {
        "model.units": {"choices": [32, 64, 128]},
        LAYERS: {"low": 1, "high": 2},
        "model.dropout": {"low": 0.0, "high": 0.3},
        "training.learning_rate": {"low": 3e-4, "high": 3e-3, "log": True},
        "window": {"choices": windows},
        "training.loss": {"choices": ["mae", "huber", "mse"]},
        "training.batch_size": {"choices": [256, 512]},  # 128 costs twice the steps of 256 for no gain seen
        "model.deseasonalize": {"choices": ["auto", "off"]},
        "model.chunk": {"choices": chunks},
        "training.ensemble_size": {"choices": [1, 2]},
    }


def search_space(config: ForecastConfig) -> dict[str, Dimension]:
    """`default_space` with `tuning.space` over it: a key given replaces the default's range, a new key widens
    the space, `null` drops a key (the configuration's own value is used). Raises ConfigError naming the
    entry for a key that is not a tunable setting or a range that is not one."""
    spec: dict[str, Any] = dict(default_space(config))
    for key, value in (config.tuning.space or {}).items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {name: _dimension(name, value) for name, value in spec.items()}


def _tunable(name: str) -> bool:
    """A setting a search space (and a best.json) may hold: the network, its training and its input."""
    return name == LAYERS or ((name in TUNABLE_TOP or name.startswith(TUNABLE_SECTIONS)) and name not in NOT_TUNABLE
                              and names_a_setting(name))


def _dimension(name: str, value: Any) -> Dimension:
    where = f"setting 'tuning.space.{name}'"
    if name != LAYERS:
        if not _tunable(name):
            raise ConfigError(f"{where}: not a tunable setting (model.*, training.*, {', '.join(TUNABLE_TOP)} or "
                              f"{LAYERS})")
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, Mapping):
        return Dimension(name, value=value)
    unknown = set(value) - {"choices", "low", "high", "log", "step"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (use choices, or low/high with log or step)")
    if "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if any(not isinstance(c, (str, int, float, bool)) and c is not None for c in choices):
            hint = f"; for stacked layers use {LAYERS}" if name == "model.units" else ""
            raise ConfigError(f"{where}: each choice must be a number, a string, true/false or null{hint}")
        return Dimension(name, choices=tuple(choices))
    if "low" not in value or "high" not in value:
        raise ConfigError(f"{where}: give choices, or both low and high")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        raise ConfigError(f"{where}: low and high must be numbers with low <= high")
    if value.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0")
    return Dimension(name, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step"))


def settings_of(params: Mapping[str, Any], config: ForecastConfig | None = None) -> dict[str, Any]:
    """Flat tuned values (dotted names, `model.layers` included) -> nested settings of the configuration."""
    flat = dict(params)
    layers = flat.pop(LAYERS, None)
    if layers is not None or "model.units" in flat:
        units = flat.pop("model.units", None)
        if units is None:
            units = (config.model.units[0] if config is not None else 64)
        n = int(layers) if layers is not None else (len(config.model.units) if config is not None else 1)
        flat["model.units"] = [int(units)] * max(1, n)
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *sections, leaf = dotted.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    return nested


def apply_settings(config: ForecastConfig, settings: Mapping[str, Any]) -> ForecastConfig:
    """`config` with nested `settings` over it, validated (ConfigError names a bad setting)."""
    return validate_config(merge_settings(config.model_dump(), settings))


def narrow_to_data(space: dict[str, Dimension], shortest: int) -> dict[str, Dimension]:
    """Window choices the data can use: none longer than the shortest series (`shortest` points), the rule a
    run with `tuned: latest` enforces. Raises ConfigError when no window choice is left."""
    dim = space.get("window")
    if dim is None:
        return space
    if dim.choices is not None:
        kept = tuple(c for c in dim.choices if int(c) <= shortest)
        if not kept:
            raise ConfigError(f"setting 'tuning.space.window': every choice {list(dim.choices)} is longer than the "
                              f"shortest series ({shortest} points)")
        if len(kept) < len(dim.choices):
            log.info("window choices longer than the shortest series (%d points) left out: %s", shortest,
                     [c for c in dim.choices if int(c) > shortest])
        return {**space, "window": Dimension("window", choices=kept)}
    if dim.low is not None:
        if dim.low > shortest:
            raise ConfigError(f"setting 'tuning.space.window': low {dim.low} is longer than the shortest series "
                              f"({shortest} points)")
        return {**space, "window": Dimension("window", low=dim.low, high=min(dim.high, shortest), log=dim.log,
                                             step=dim.step)}
    if int(dim.value) > shortest:
        raise ConfigError(f"setting 'tuning.space.window': {dim.value} is longer than the shortest series "
                          f"({shortest} points)")
    return space


def baseline_params(config: ForecastConfig, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The configuration's own values of the space's settings that the space can express (a choice, or within
    the range): a new study's first trial, so the study measures the settings it should beat."""
    out: dict[str, Any] = {}
    units = config.model.units
    for name, dim in space.items():
        if dim.fixed:
            continue
        if name == LAYERS:
            value: Any = len(units)
        elif name == "model.units":
            if len(set(units)) != 1:
                continue
            value = units[0]
        elif name == "model.chunk":
            value = config.chunk_length
        elif name == "model.patch":
            value = config.patch_length
        else:
            value = config
            for part in name.split("."):
                value = getattr(value, part)
        if dim.choices is not None and value in dim.choices:
            out[name] = value
        elif dim.low is not None and isinstance(value, (int, float)) and dim.low <= value <= dim.high:
            out[name] = value
    return out


# --- the data a study sees ----------------------------------------------------------------------------------
def tuning_panel(panel: Panel, config: ForecastConfig) -> Panel:
    """The series a study tunes on: at most `tuning.max_series` of them (a stable hash sample, the same in every
    process and run), without their final window (the last `horizon` points)."""
    from lstm_core.sharding import stable_hash

    limit = config.tuning.max_series
    if limit is not None and panel.n_series > limit:
        order = np.argsort(stable_hash(panel.series_ids, TUNING_KEY), kind="stable")
        mask = np.zeros(panel.n_series, dtype=bool)
        mask[order[:limit]] = True
        panel = panel.select(mask)
    return panel.drop_last(config.horizon)


# --- pruning ------------------------------------------------------------------------------------------------
def error_scale(loss: str, value: float) -> float:
    """A validation loss as one typical error in model-space units, so trials with different losses compare:
    MAE as it is, MSE as its root, Huber (delta 1) as the absolute error that gives it."""
    if not np.isfinite(value):
        return float(value)
    if loss == "mse":
        return math.sqrt(max(value, 0.0))
    if loss == "huber":
        return math.sqrt(2 * value) if value <= 0.5 else value + 0.5
    return float(value)


class PruneOnValidationLoss(keras.callbacks.Callback):
    """Reports each epoch's validation loss (as `error_scale`) to an Optuna trial and prunes it when the
    pruner says so, by raising `optuna.TrialPruned` out of training. Epochs count on across the members of
    an ensemble, so step k is the k-th epoch the trial trained."""

    def __init__(self, trial, loss: str) -> None:
        super().__init__()
        self.trial, self.loss, self.step = trial, loss, 0
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        import optuna

        value = (logs or {}).get("val_loss")
        if value is None:
            return
        self.step += 1
        self.trial.report(error_scale(self.loss, float(value)), step=self.step)
        if self.trial.should_prune():
            self.pruned_at = self.step
            raise optuna.TrialPruned(f"pruned at epoch {self.step}: validation error "
                                     f"{error_scale(self.loss, float(value)):.4f} worse than the median trial's")


# --- one trial ----------------------------------------------------------------------------------------------
@dataclass
class TrialOutcome:
    state: str  # complete | pruned | fail
    value: float | None
    seconds: float
    attrs: dict[str, Any] = field(default_factory=dict)


def min_history(config: ForecastConfig) -> int:
    """Points a series needs before a backtest cutoff to be scored, the same in every trial (so every trial is
    judged on the same series and windows, whatever its window): the configuration's own minimum."""
    from lstm_core.validation import min_train_length

    return max(1, min_train_length(config))


def evaluate_trial(trial, params: Mapping[str, Any], panel: Panel, config: ForecastConfig, *,
                   deadline: float | None = None, pruning: bool = True, history: int | None = None) -> TrialOutcome:
    """Train with `params` over `config` and score the pooled backtest MASE on `panel` (already the tuning panel).

    `trial` receives the epoch validation losses (pruning); `deadline` (time.time() seconds) stops training
    early so a call ends within its budget. Never raises for a bad trial: pruned and failed trials come back
    as such, with the reason in `attrs`.
    """
    import optuna

    from lstm_core.backtest import backtest
    from lstm_core.engine import fit

    t0 = time.monotonic()
    attrs: dict[str, Any] = {}
    try:
        cfg = apply_settings(config, settings_of(params, config))
    except ConfigError as exc:
        return TrialOutcome("fail", None, time.monotonic() - t0, {"error": str(exc)})
    pruner = PruneOnValidationLoss(trial, cfg.training.loss) if pruning else None
    budget = None if deadline is None else max(1.0, deadline - time.time())
    stopped: list[str] = []

    def fit_fn(history_panel: Panel):
        model = fit(history_panel, cfg, time_budget_s=budget, callbacks=[pruner] if pruner else ())
        stopped.extend(m.get("stopped_by", "") for m in model.training.get("members", []))
        return model.forecast

    try:
        bt = backtest(panel, horizon=cfg.horizon, season_length=cfg.season_length, windows=cfg.backtest.windows,
                      step=cfg.backtest_step, fit_fn=fit_fn, refit=False,
                      min_history=history if history is not None else min_history(config), levels=())
        pooled = bt.sums("lstm").totals(()).finalize()
        mase = pooled[pooled["metric"] == "mase"].set_index("model")["value"]
        value = float(mase.get("lstm", np.nan))
        attrs.update({"seasonal_naive_mase": float(mase.get("seasonal_naive", np.nan)),
                      "windows_scored": int(bt.frame.groupby(["series_id", "cutoff"]).ngroups),
                      "stopped_by": ",".join(sorted(set(stopped)))})
    except optuna.TrialPruned as exc:
        attrs["pruned"] = str(exc)
        return TrialOutcome("pruned", None, time.monotonic() - t0, attrs)
    except Exception as exc:  # noqa: BLE001 - a trial that breaks (bad settings, a TensorFlow error) fails alone
        attrs["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return TrialOutcome("fail", None, time.monotonic() - t0, attrs)
    if not np.isfinite(value):
        attrs["error"] = "the backtest MASE is not finite (diverged training or no series scored)"
        return TrialOutcome("fail", None, time.monotonic() - t0, attrs)
    if deadline is not None and "time_budget" in stopped:
        # The tune's deadline cut this training short: its score is of a model the run would train further,
        # so ranking it beside fully trained trials would misjudge it (the backtest must be a fair judge).
        attrs["pruned"] = (f"the tune's time budget ran out before training finished (backtest MASE {value:.4f} of "
                           "a model cut short is not comparable)")
        return TrialOutcome("pruned", None, time.monotonic() - t0, attrs)
    return TrialOutcome("complete", value, time.monotonic() - t0, attrs)


# --- persistence --------------------------------------------------------------------------------------------
def study_url(config: ForecastConfig, study: str | None = None) -> str:
    """Where a study's results live: `<output_url>/tuning/study=<name>`."""
    return config.layout().study(study or config.tuning.study)


def _fs(config: ForecastConfig):
    return config.location(config.output_url).fs


def load_trials(config: ForecastConfig, study: str | None = None) -> list:
    """The finished and stopped trials of a saved study (FrozenTrials in number order; [] when none is saved).
    A trial that was still running when its process ended is returned as failed ('interrupted')."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from lstm_core.storage import join

    name = study or config.tuning.study
    fs = _fs(config)
    path = join(study_url(config, name), "journal.log")
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return []
    with tempfile.TemporaryDirectory(prefix="lstm-tune-") as tmp:
        local = os.path.join(tmp, "journal.log")
        with open(local, "wb") as fh:
            fh.write(data)
        storage = JournalStorage(JournalFileBackend(local))
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            t = optuna.trial.create_trial(state=TrialState.FAIL, params=t.params, distributions=t.distributions,
                                          user_attrs={**t.user_attrs, "error": "interrupted: its process ended"},
                                          intermediate_values=t.intermediate_values)
        out.append(t)
    return out


def save_journal(study, config: ForecastConfig) -> str:
    """Write the study (every trial) as an Optuna journal under the study's folder; returns its URL."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from lstm_core.storage import join, put_bytes

    url = join(study_url(config, study.study_name), "journal.log")
    with tempfile.TemporaryDirectory(prefix="lstm-tune-") as tmp:
        local = os.path.join(tmp, "journal.log")
        target = JournalStorage(JournalFileBackend(local))
        copy = optuna.create_study(study_name=study.study_name, storage=target, direction="minimize")
        copy.add_trials(study.get_trials(deepcopy=False))
        with open(local, "rb") as fh:
            data = fh.read()
    put_bytes(_fs(config), url, data, root=config.output_url if _is_local(config) else None)
    return url


def _is_local(config: ForecastConfig) -> bool:
    from lstm_core.storage import is_local

    return is_local(_fs(config))


# --- results ------------------------------------------------------------------------------------------------
TRIAL_COLUMNS = ("study", "number", "state", "objective", "seconds", "started_at", "finished_at", "pruned_epoch",
                 "stopped_by", "seasonal_naive_mase", "error")


def trials_frame(trials: Sequence, study: str) -> pd.DataFrame:
    """One row per trial: `TRIAL_COLUMNS` then one column per tuned setting (its dotted name).

    objective: the pooled backtest MASE (null for pruned and failed trials); seconds: the trial's wall time;
    pruned_epoch: the epoch a pruned trial stopped at.
    """
    rows = []
    names: list[str] = []
    for t in trials:
        for k in t.params:
            if k not in names:
                names.append(k)
    for t in trials:
        state = t.state.name.lower()
        rows.append({
            "study": study, "number": int(t.number), "state": state,
            "objective": float(t.value) if state == "complete" and t.value is not None else np.nan,
            "seconds": float(t.user_attrs.get("seconds", np.nan)),
            "started_at": t.datetime_start, "finished_at": t.datetime_complete,
            "pruned_epoch": (max(t.intermediate_values) if state == "pruned" and t.intermediate_values else pd.NA),
            "stopped_by": t.user_attrs.get("stopped_by") or t.user_attrs.get("pruned") or None,
            "seasonal_naive_mase": float(t.user_attrs.get("seasonal_naive_mase", np.nan)),
            "error": t.user_attrs.get("error"),
            **{k: t.params.get(k) for k in names},
        })
    frame = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *names])
    frame["study"] = frame["study"].astype("string")
    frame["number"] = frame["number"].astype("int64")
    frame["state"] = frame["state"].astype("string")
    for c in ("objective", "seconds", "seasonal_naive_mase"):
        frame[c] = frame[c].astype("float64")
    frame["pruned_epoch"] = frame["pruned_epoch"].astype("Int64")
    for c in ("stopped_by", "error"):
        frame[c] = frame[c].astype("string")
    for c in ("started_at", "finished_at"):
        frame[c] = pd.to_datetime(frame[c]).astype("datetime64[us]")
    for c in names:  # a setting whose choices mix kinds (numbers and words) is written as text
        kinds = {type(v) for v in frame[c] if v is not None and not (isinstance(v, float) and np.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[c] = frame[c].astype("string")
    return frame


def best_settings(trial, config: ForecastConfig) -> dict[str, Any]:
    """The nested settings a best.yaml holds: the trial's tuned settings, its window and chunk as resolved,
    and the data settings it was tuned for (frequency, horizon, seasons, covariates...)."""
    tuned = settings_of(trial.params, config)
    cfg = apply_settings(config, tuned)
    out: dict[str, Any] = {k: v for k, v in cfg.model_dump(mode="json").items() if k in DATA_SETTINGS}
    out = merge_settings(out, tuned)
    out["window"] = int(cfg.window)
    out = merge_settings(out, {"model": {"chunk": int(cfg.chunk_length)}})
    if cfg.tuning.study != "default":
        out["tuning"] = {"study": cfg.tuning.study}
    return out


@dataclass
class TuneResult:
    """What a tune call did: the study (all its trials), this call's trial numbers and why it stopped."""

    study: Any
    new_trials: list[int]
    stopped_by: str  # trials | minutes | no trials left
    seconds: float
    space: dict[str, Dimension]
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def trials(self) -> pd.DataFrame:
        return trials_frame(self.study.get_trials(deepcopy=False), self.study.study_name)

    @property
    def best(self):
        """The best complete trial, or None."""
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        return min(done, key=lambda t: (t.value, t.number)) if done else None


def write_results(result: TuneResult, config: ForecastConfig) -> dict[str, str]:
    """Write trials.parquet, objective.png and, when a trial completed, best.yaml and best.json (written last,
    so a best.json always points at a best.yaml of its own trial). Returns the URLs written."""
    from lstm_core.storage import join, parquet_bytes, put_bytes, write_json

    fs, name = _fs(config), result.study.study_name
    root = config.output_url if _is_local(config) else None
    base = study_url(config, name)
    frame = result.trials
    urls = {"journal": save_journal(result.study, config)}
    put_bytes(fs, join(base, "trials.parquet"), parquet_bytes(frame), root=root)  # microsecond timestamps
    urls["trials"] = join(base, "trials.parquet")
    put_bytes(fs, join(base, "objective.png"), objective_plot(frame, name), root=root)
    urls["plot"] = join(base, "objective.png")
    best = result.best
    if best is not None:
        settings = best_settings(best, config)
        header = (f"# best settings of tuning study {name!r}: trial {best.number}, pooled backtest MASE "
                  f"{best.value:.4f}\n# written {datetime.now(timezone.utc).isoformat()}; use it as a tuning result: "
                  "lstm-forecast run --config best.yaml --input ... --output ...\n# (a file named best.yaml gives "
                  "only tuned and data settings: inputs, outputs, storage and Dask come from the run)\n")
        put_bytes(fs, join(base, "best.yaml"), (header + yaml.safe_dump(settings, sort_keys=True)).encode(), root=root)
        urls["best_yaml"] = join(base, "best.yaml")
        tuned_keys = sorted({"window", *(k if k != LAYERS else "model.units" for k in best.params)})
        write_json(fs, join(base, "best.json"), {
            "study": name, "trial": int(best.number), "objective": float(best.value), "metric": "pooled backtest MASE",
            "settings": settings, "tuned": tuned_keys, "written_at": datetime.now(timezone.utc).isoformat(),
            "trials": int(len(frame)), "series": best.user_attrs.get("series"),
        }, root=root)
        urls["best_json"] = join(base, "best.json")
    result.urls = urls
    return urls


def objective_plot(frame: pd.DataFrame, study: str) -> bytes:
    """PNG: each trial's objective by trial number (pruned and failed trials marked on the axis), and the
    best so far."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    done = frame[frame["state"] == "complete"]
    if len(done):
        ax.plot(done["number"], done["objective"], "o", color="tab:blue", label="complete")
        best = done.sort_values("number")["objective"].cummin()
        ax.step(done.sort_values("number")["number"], best, where="post", color="tab:green", label="best so far")
        floor = float(done["objective"].min())
    else:
        floor = 0.0
    for state, marker, color in (("pruned", "x", "tab:orange"), ("fail", "v", "tab:red")):
        part = frame[frame["state"] == state]
        if len(part):
            ax.plot(part["number"], np.full(len(part), floor), marker, color=color, label=state)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
    ax.set_xlabel("trial")
    ax.set_ylabel("pooled backtest MASE")
    ax.set_title(f"tuning study {study!r}: {len(frame)} trials")
    if len(frame):
        ax.legend(loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --- the study ----------------------------------------------------------------------------------------------
def make_study(config: ForecastConfig, storage=None, trials: Sequence = (), pruner=None):
    """A minimizing study named `tuning.study` with a seeded TPE sampler and the median pruner, holding
    `trials` (an earlier run's, numbers kept) in `storage` (in memory by default)."""
    import optuna

    # A resumed study draws on from where it stopped: the same seed would repeat its first trials' settings.
    sampler = optuna.samplers.TPESampler(seed=config.seed + len(trials), n_startup_trials=5)
    study = optuna.create_study(study_name=config.tuning.study, storage=storage, direction="minimize",
                                sampler=sampler, pruner=pruner if pruner is not None else make_pruner(config))
    if trials:
        study.add_trials(trials)
    return study


def make_pruner(config: ForecastConfig):
    import optuna

    if not config.tuning.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS + 1)


TrialHook = Callable[[Any], None]  # called with each finished FrozenTrial, in the driver


def tune(panel: Panel, config: ForecastConfig, *, trials: int | None = None, minutes: float | None = None,
         client=None, on_trial: TrialHook | None = None, save: bool = True, pruner=None) -> TuneResult:
    """Run (or resume) the study `tuning.study` on `panel` (every series, final window included: it is held back
    here) within a budget of `trials` and/or `minutes` (default `tuning.trials` / `tuning.minutes`).

    `client`: a `distributed.Client`: trials run on its workers, one per worker at a time. With `save`, the
    study and its results are written under `study_url(config)` after every trial. `pruner`: an Optuna pruner
    instead of `make_pruner(config)` (the median rule). `on_trial(frozen_trial)` is called as each trial ends.
    Returns a TuneResult.
    Raises ConfigError for a bad search space or a budget of neither trials nor minutes.
    """
    import optuna
    from optuna.trial import TrialState

    _require_resolved(config)
    trials = config.tuning.trials if trials is None else trials
    minutes = config.tuning.minutes if minutes is None else minutes
    if trials is None and minutes is None:
        raise ConfigError("setting 'tuning.trials': give a budget of trials and/or minutes")
    data = tuning_panel(panel, config)
    if data.n_series == 0:
        raise ConfigError("no series to tune on")
    space = narrow_to_data(search_space(config), int(panel.lengths.min()))
    history = min_history(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    previous = load_trials(config) if save else []
    if previous:
        log.info("resuming study %r: %d earlier trials", config.tuning.study, len(previous))
    storage = None
    if client is not None:
        from optuna_integration import DaskStorage

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = DaskStorage(optuna.storages.InMemoryStorage(), client=client)
    pruner = pruner if pruner is not None else make_pruner(config)
    study = make_study(config, storage, previous, pruner)
    if not previous:  # trial 0 of a new study: the configuration's own settings, the ones to beat
        study.enqueue_trial(baseline_params(config, space), user_attrs={"baseline": True})
    start = time.monotonic()
    deadline = None if minutes is None else time.time() + minutes * 60
    new: list[int] = []

    def budget_left() -> str | None:
        if trials is not None and len(new) >= trials:
            return "trials"
        if deadline is not None and time.time() >= deadline:
            return "minutes"
        return None

    def finish(trial, outcome: TrialOutcome) -> None:
        for k, v in {**outcome.attrs, "seconds": round(outcome.seconds, 3), "series": int(data.n_series)}.items():
            trial.set_user_attr(k, v)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}[outcome.state]
        frozen = study.tell(trial, outcome.value if outcome.state == "complete" else None, state=state,
                            skip_if_finished=True)
        log.info("trial %d %s%s in %.0f s: %s", frozen.number, outcome.state,
                 f" (backtest MASE {outcome.value:.4f})" if outcome.value is not None else "", outcome.seconds,
                 frozen.params)
        if save:
            write_results(TuneResult(study, new, "", time.monotonic() - start, space), config)
        if on_trial is not None:
            on_trial(frozen)

    def ask():
        trial = study.ask()
        params = {name: dim.suggest(trial) for name, dim in space.items()}
        new.append(trial.number)
        return trial, params

    if client is None:
        while budget_left() is None:
            trial, params = ask()
            finish(trial, evaluate_trial(trial, params, data, config, deadline=deadline,
                                         pruning=config.tuning.pruning, history=history))
    else:
        _tune_on_dask(client, study, ask, finish, budget_left, data, config, deadline, history, pruner)
        # the study lived on the scheduler: keep a copy here that outlives the cluster
        study = make_study(config, None, study.get_trials(deepcopy=True), pruner)
    stopped = budget_left() or "trials"
    seconds = time.monotonic() - start
    result = TuneResult(study, new, stopped, seconds, space)
    if save:
        write_results(result, config)
    return result


def _tune_on_dask(client, study, ask, finish, budget_left, data, config, deadline, history, pruner) -> None:
    """Keep one trial in flight on each worker until the budget is spent; the driver asks and tells."""
    from distributed import as_completed

    workers = sorted(client.scheduler_info().get("workers", {}))
    if not workers:
        raise ConfigError("the Dask cluster has no workers to run trials on")
    panel_ref = client.scatter(data, broadcast=True)
    running: dict[Any, tuple[Any, str]] = {}
    pool = as_completed()

    def submit(worker: str) -> None:
        trial, params = ask()
        # pinned to a free worker: at most one trial per worker, whatever its thread count
        future = client.submit(_remote_trial, study._storage, study.study_name, trial._trial_id, params, panel_ref,
                               config, deadline, history, pruner, workers=[worker], allow_other_workers=False,
                               pure=False, key=f"tuning-trial-{study.study_name}-{trial.number}-{os.getpid()}")
        running[future] = (trial, worker)
        pool.add(future)

    for w in workers:
        if budget_left() is not None:
            break
        submit(w)
    for future in pool:
        trial, worker = running.pop(future)
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - a worker that died fails its trial, not the study
            outcome = TrialOutcome("fail", None, 0.0, {"error": f"{type(exc).__name__}: {exc}"})
        finish(trial, outcome)
        if budget_left() is None:
            submit(worker)


def _remote_trial(storage, study_name: str, trial_id: int, params: dict, panel: Panel, config: ForecastConfig,
                  deadline: float | None, history: int, pruner) -> TrialOutcome:
    """A trial on a Dask worker: reports its epochs to the study on the scheduler (pruning) and returns its
    outcome, with the worker's address; the driver records it."""
    import optuna
    from distributed import get_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    trial = optuna.trial.Trial(study, trial_id)
    started = time.time()
    outcome = evaluate_trial(trial, params, panel, config, deadline=deadline, pruning=config.tuning.pruning,
                             history=history)
    outcome.attrs.update({"worker": get_worker().address, "worker_start": started, "worker_end": time.time()})
    return outcome


# --- reuse by the nightly run -------------------------------------------------------------------------------
def apply_tuned(config: ForecastConfig) -> tuple[ForecastConfig, dict[str, Any] | None]:
    """With `tuned: latest`, `config` with the newest best settings of the study `tuning.study` over it, and the
    record of what was applied (for the manifest); otherwise `config` and None.

    Only the tuned settings (and the window they were tuned with) are applied: inputs, outputs and the data
    settings stay the run's. Raises ConfigError when the study has no best settings yet.
    """
    if config.tuned == "off":
        return config, None
    from lstm_core.storage import join, read_json

    url = join(study_url(config), "best.json")
    try:
        best = read_json(_fs(config), url)
    except FileNotFoundError:
        raise ConfigError(f"setting 'tuned': 'latest', but tuning study {config.tuning.study!r} has no best settings "
                          f"under {redact_url(study_url(config))} (run lstm-forecast tune --study {config.tuning.study} first)") \
            from None
    settings = best.get("settings") or {}
    chosen: dict[str, Any] = {}
    for dotted in best.get("tuned") or []:
        if not _tunable(str(dotted)):  # best.json lives in storage: it may change the model, nothing else
            raise ConfigError(f"setting 'tuned': the best settings of study {config.tuning.study!r} name "
                              f"{dotted!r}, which is not a tunable setting; refusing {redact_url(url)}")
        node: Any = settings
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            chosen[dotted] = node
    nested = settings_of({k: v for k, v in chosen.items() if k != "model.units"})
    if "model.units" in chosen:
        nested = merge_settings(nested, {"model": {"units": chosen["model.units"]}})
    try:
        tuned = apply_settings(config, nested)
    except ConfigError as exc:
        raise ConfigError(f"tuned settings of study {config.tuning.study!r} (trial {best.get('trial')}): {exc}") \
            from None
    record = {"study": best.get("study"), "trial": best.get("trial"), "objective": best.get("objective"),
              "metric": best.get("metric"), "written_at": best.get("written_at"),
              # a URL that carried credentials is recorded without them (the manifest is read by many)
              "best_yaml": redact_url(join(study_url(config), "best.yaml")), "settings": chosen}
    return tuned, record


def check_tuned_fits(config: ForecastConfig, panel: Panel) -> None:
    """Refuse (ConfigError naming the setting) a tuned window the data cannot use: one longer than every series
    (shorter series are padded at the front, but some series must fill the window for it to have been tuned
    on these data). Nothing is clipped: the run stops before training."""
    if config.tuned == "off" or panel.n_series == 0 or config.window is None:
        return
    i = int(np.argmax(panel.lengths))
    longest = int(panel.lengths[i])
    if int(config.window) > longest:
        raise ConfigError(
            f"setting 'window': the tuned value {config.window} (tuned: latest, study {config.tuning.study!r}) is "
            f"longer than the longest series ({panel.series_ids[i]!r}, {longest} points); the data cannot use it: "
            f"retune on these data, narrow tuning.space.window, or set tuned: off")


def _require_resolved(config: ForecastConfig) -> None:
    if not config.is_resolved:
        raise ConfigError("tuning needs the frequency: resolve the configuration from the data first "
                          "(config.resolved(panel.freq))")
