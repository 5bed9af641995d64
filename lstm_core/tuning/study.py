"""The study: an Optuna loop that asks for a trial's settings, scores them (`lstm_core.tuning.trial`) and
records the outcome, in this process or one trial per Dask worker, within a budget of trials and/or minutes.

- Sampler: TPE, seeded from `seed`. Pruner: median of the other trials' epoch validation losses at the same
  epoch (`PruneOnValidationLoss`, a Keras callback), after a few trials and epochs of warm-up.
- Budget: `trials` and/or `minutes` per call; a trial running when the minutes run out stops training
  there (the best weights so far are scored), so a call ends close to its budget with the best so far.
- Where: in this process, or on a Dask cluster (`client`): one trial per worker at a time, the study in
  optuna-integration's `DaskStorage` on the scheduler, so every worker reports to the same pruner.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lstm_core.config import ConfigError, ForecastConfig
from lstm_core.panel import Panel
from lstm_core.tuning.journal import load_trials
from lstm_core.tuning.records import Scalar
from lstm_core.tuning.results import TuneResult, write_results
from lstm_core.tuning.space import (
    baseline_params,
    narrow_to_data,
    require_resolved,
    search_space,
)
from lstm_core.tuning.trial import (
    TrialOutcome,
    evaluate_trial,
    min_history,
    tuning_panel,
)

if TYPE_CHECKING:
    import optuna
    from distributed import Client
    from optuna.pruners import BasePruner
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, Trial

log = logging.getLogger("lstm_core.tuning")
# DaskStorage is marked experimental by optuna-integration; the pinned version is tested here.
warnings.filterwarnings("ignore", message=r"DaskStorage is experimental")

PRUNE_STARTUP_TRIALS = 3  # trials that always finish before the median rule may prune
PRUNE_WARMUP_EPOCHS = 4  # epochs each trial trains before it may be pruned (steps are 1-based epochs)

TrialHook = Callable[["FrozenTrial"], None]  # called with each finished FrozenTrial, in the driver


def make_study(config: ForecastConfig, storage: BaseStorage | None = None, trials: Sequence[FrozenTrial] = (),
               pruner: BasePruner | None = None) -> optuna.Study:
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


def make_pruner(config: ForecastConfig) -> BasePruner:
    """The median rule after `PRUNE_STARTUP_TRIALS` trials and `PRUNE_WARMUP_EPOCHS` epochs; none when
    `tuning.pruning` is off."""
    import optuna

    if not config.tuning.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS + 1)


def tune(panel: Panel, config: ForecastConfig, *, trials: int | None = None, minutes: float | None = None,
         client: Client | None = None, on_trial: TrialHook | None = None, save: bool = True,
         pruner: BasePruner | None = None) -> TuneResult:
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

    require_resolved(config)
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

    def finish(trial: Trial, outcome: TrialOutcome) -> None:
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

    def ask() -> tuple[Trial, dict[str, Scalar]]:
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


def _tune_on_dask(client: Client, study: optuna.Study, ask: Callable[[], tuple[Trial, dict[str, Scalar]]],
                  finish: Callable[[Trial, TrialOutcome], None], budget_left: Callable[[], str | None], data: Panel,
                  config: ForecastConfig, deadline: float | None, history: int, pruner: BasePruner) -> None:
    """Keep one trial in flight on each worker until the budget is spent; the driver asks and tells."""
    from distributed import as_completed

    workers = sorted(client.scheduler_info().get("workers", {}))
    if not workers:
        raise ConfigError("the Dask cluster has no workers to run trials on")
    panel_ref = client.scatter(data, broadcast=True)
    running: dict[Any, tuple[Trial, str]] = {}
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


def _remote_trial(storage: BaseStorage, study_name: str, trial_id: int, params: dict[str, Scalar], panel: Panel,
                  config: ForecastConfig, deadline: float | None, history: int, pruner: BasePruner) -> TrialOutcome:
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

