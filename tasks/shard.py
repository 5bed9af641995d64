"""The two units the flow maps: a group's training and a shard's forecast, each a task whose steps are
nested task runs (so `load_series`, `validate_series`, ... `write_outputs` stay visible in the Prefect UI).

A step's own exception fails its unit with that exception, unchanged: the flow's `future.result()` raises
it (on Dask, pickled back from the worker), so nothing has to rebuild errors from state messages. Each unit
also returns the seconds its steps took, which the manifest sums per step (`timings_s`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lstm_core.config import ForecastConfig
from lstm_core.model_store import ModelRef
from lstm_core.modelling import Prepared
from lstm_core.outputs import RunWriter
from lstm_core.records import ShardSummary
from lstm_core.revisions import RevisionRows
from lstm_core.shard_plan import ShardSpec
from tasks.data import load_series, prepare_windows, validate_series
from tasks.modelling import combine, evaluate, fit_statistical, forecast, open_model, train_or_load_model
from tasks.outputs import score_realised, write_outputs
from tasks.reporting import RunPlots, render_plots
from tasks.revisions import revise_forecast


class _Steps:
    """Calls nested tasks and adds up the seconds of each (by task name)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, step, **params: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return step(**params)
        finally:
            self.seconds[step.name] = self.seconds.get(step.name, 0.0) + time.perf_counter() - t0

    def prepared(self, spec: ShardSpec, config: ForecastConfig, allow_empty: bool = False) -> Prepared:
        """load_series -> validate_series -> prepare_windows for one shard (or a group's training sample);
        each intermediate frame is released as soon as the next step has it."""
        frame = self(load_series, config=config, shard=spec)
        validated = self(validate_series, frame=frame, config=config)
        del frame
        return self(prepare_windows, validated=validated, config=config, allow_empty=allow_empty)


@dataclass
class Trained:
    """A group's model as its shards get it: by reference (they open the stored version)."""

    ref: ModelRef | None  # None: the group has no series the network can take (all served by the fallback)
    seconds: dict[str, float] = field(default_factory=dict)


@task(name="train_group", cache_policy=NO_CACHE)
def train_group(config: ForecastConfig, group: str | None = None, sample: ShardSpec | None = None) -> Trained:
    """The model of one group: load, validate and prepare its training sample, then train or load.

    Without `sample` (retrain 'never', or a pinned model) no data is read: the model key fixes the inputs.
    """
    steps = _Steps()
    if sample is None:
        choice = steps(train_or_load_model, prepared=None, config=config, group=group)
    else:
        prepared = steps.prepared(sample, config, allow_empty=True)
        if not _network_has_series(prepared, config):
            return Trained(None, steps.seconds)  # no series the network can take: the fallback serves the group
        choice = steps(train_or_load_model, prepared=prepared, config=config, group=group, calibrate=True)
    return Trained(ModelRef.of(choice), steps.seconds)


def _network_has_series(prepared: Prepared, config: ForecastConfig) -> bool:
    """The network can train: some series is long enough (a loaded or pinned model needs none of its own data,
    but a run with no such series at all serves every series by the statistical fallback)."""
    return prepared.panel.n_series > 0


@dataclass
class ShardResult:
    """What comes back of a shard: its summary (counts, metric totals, no data), the model it trained
    (a group of one shard, or mode per_series), its plots (a run of one shard) and its step timings."""

    summary: ShardSummary
    trained: ModelRef | None = None
    plots: RunPlots | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    revisions: RevisionRows | None = None  # its part of revisions/ (None: no previous run was compared)


@task(name="forecast_shard", cache_policy=NO_CACHE)
def forecast_shard(spec: ShardSpec, config: ForecastConfig, writer: RunWriter, model: Trained | None = None,
                   single: bool = False, earlier_runs: list[str] | None = None,
                   previous_run: str | None = None) -> ShardResult:
    """One shard: load_series -> validate_series -> prepare_windows -> [train_or_load_model] -> forecast ->
    fit_statistical -> combine -> evaluate -> [render_plots] -> score_realised -> revise_forecast ->
    write_outputs, each a nested task run. `forecast` is the network's (backtest and future); `combine` serves
    every series of the shard, those too short for the network included, from the network, the statistical
    models or a combination.

    `model`: the group's model, trained beforehand; None when this shard's own data trains it (a group
    of one shard, or mode per_series). `single`: the run has this one shard (it writes the overall
    metric rows, draws the plots and saves intervals calibrated here beside a model trained here).
    `previous_run`: the committed run whose forecast this one is compared with (revisions/); None: none.
    """
    steps = _Steps()
    prepared = steps.prepared(spec, config, allow_empty=not single and model is not None)
    trained = None
    choice, network = None, None
    if model is None and not _network_has_series(prepared, config):
        pass  # every series is too short for the network (or constant): the statistical fallback serves them all
    elif model is None:
        choice = steps(train_or_load_model, prepared=prepared, config=config, group=spec.group)
        trained = ModelRef.of(choice)
    elif model.ref is not None:
        choice = steps(open_model, ref=model.ref, config=config)
    if choice is not None:
        network = steps(forecast, choice=choice, prepared=prepared, config=config, save=single)
    stat = steps(fit_statistical, prepared=prepared, config=config)
    forecasts = steps(combine, forecasts=network, statistical=stat, choice=choice, prepared=prepared, config=config)
    del stat
    evaluation = steps(evaluate, forecasts=forecasts, choice=choice, prepared=prepared, config=config)
    plots = None
    if single and choice is not None:
        plots = steps(render_plots, choice=choice, evaluation=evaluation, prepared=prepared, config=config,
                      forecasts=forecasts)
    realised = steps(score_realised, writer=writer, prepared=prepared, config=config,
                     earlier_runs=list(earlier_runs or []))
    revised = steps(revise_forecast, writer=writer, forecasts=forecasts, prepared=prepared, config=config,
                    shard=spec, previous_run_id=previous_run)
    summary = steps(write_outputs, writer=writer, forecasts=forecasts, evaluation=evaluation, prepared=prepared,
                    shard=spec, overall_rows=single, realised=realised)
    return ShardResult(summary, trained, plots, steps.seconds, revised)
