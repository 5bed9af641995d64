"""The nightly batch forecasting flow. Its body is the graph, submitted to the flow's own task runner:

    plan_shards -> [split_shards]
    train_group.submit(...) per model group: load_series -> validate_series -> prepare_windows
        -> train_or_load_model, on a bounded sample of the group's series
    forecast_shard.map(shards, model=<its group's future>): load_series -> validate_series -> prepare_windows
        -> [train_or_load_model] -> forecast (backtest windows and the future, with intervals) -> evaluate
        -> [render_plots] -> score_realised -> write_outputs
    commit_run (overall metrics, plots, then the manifest: lstm_core.manifest.assemble_manifest) -> publish_artifacts

The steps of a group or a shard are nested task runs of its `train_group` / `forecast_shard` task, so
each is visible in the Prefect UI and a step's own exception is what the flow raises. A dataset of one
shard (up to `shard_size` series) trains inside its shard, exactly as an unsharded run. The task runner
(flows/runners.py::RunTaskRunner) is a thread of one in process, or Dask (`workers` / `dask_address`).
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import pandas as pd
from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from pydantic import JsonValue

from flows.handoff import handed_config
from flows.parameters import Overridable, RunSettings, deployment_settings, overrides_list, settings_dict
from flows.runners import RunTaskRunner, run_task_runner
from lstm_core import interrupt
from lstm_core.artifacts import package_versions
from lstm_core.as_of import as_of_run_id
from lstm_core.config import ForecastConfig, load_config, redact_url
from lstm_core.errors import LeaseLostError, LstmForecastError, NoValidSeriesError
from lstm_core.layout import TABLES
from lstm_core.lease import RunLease
from lstm_core.manifest import SKIPPED_IN_SUMMARY, RunShape, assemble_manifest
from lstm_core.nightly import NightPlan, night_outputs, plan_night
from lstm_core.outputs import OUTPUT_SCHEMA_VERSION, OutputStore, RunWriter, new_run_id, slot_run_id
from lstm_core.progress import Progress
from lstm_core.records import (
    Counts,
    Frequency,
    Manifest,
    ManifestDraft,
    Outputs,
    ShardSummary,
    SkippedEntry,
    Tuned,
)
from lstm_core.revisions import RevisionRows
from lstm_core.secrets import install_log_scrubber, scrub, scrubbing, secret_values
from lstm_core.sharding import ShardPlan
from lstm_core.storage import is_storage_failure
from lstm_core.tuning import apply_tuned
from tasks.data import no_valid_series
from tasks.outputs import commit_run
from tasks.reporting import publish_artifacts, publish_failure
from tasks.shard import forecast_shard, train_group
from tasks.sharding import plan_shards, split_shards


# Parameters are checked in the body (settings_dict), so a bad setting fails the run as a ConfigError naming it,
# exactly as a bad setting in the file does; their types still make the parameter schema (the UI's form).
@flow(name="batch-forecast", log_prints=True, validate_parameters=False, on_failure=[publish_failure],
      task_runner=RunTaskRunner())  # type: ignore[arg-type]  # a TaskRunner whose futures are the real runner's
def batch_forecast(config_path: str | None = None,
                   settings: RunSettings | None = None,  # type: ignore[valid-type]  # a model built at import
                   allow_overrides: list[Overridable] | None = None) -> dict[str, JsonValue]:
    """Forecast every series at `input_url` and commit predictions and metrics to `output_url`.

    In a deployment run, `settings` are merged over the deployment's own `settings`, so a manual
    run passes only what changes; settings that decide where data goes or where code runs are the
    deployment's unless it lists them in `allow_overrides`. A run the scheduler created gets the run
    id of its slot (`sched-<UTC start>-<config hash>`) unless `run_id` is set. Called by the CLI, the
    flow runs with the configuration the CLI built and checked (flows/handoff.py), whose public settings
    are the parameters.

    Args:
        config_path: YAML configuration file, re-read at every run of a deployment. Secrets belong here or
            in the environment, never in parameters (the Prefect server stores them). Fixed by the deployment.
        settings: settings of this run, over the config file's (and the deployment's); empty fields keep theirs.
        allow_overrides: the protected settings (URLs, dask_address, storage_options, config_path) a run of
            this deployment may change. Set by the deployment; a run cannot change it.
    """
    # Credentials are scrubbed from every log line and from the run's failure, from the first line on.
    with scrubbing() as scrubber:
        given = settings_dict(settings)  # stops here on a bad parameter, before any work
        overrides_list(allow_overrides)
        handed = handed_config(config_path, given)
        if handed is not None:  # called by the CLI in its process: the configuration it built and checked
            scrubber.values.update(secret_values(handed.storage_options, handed.urls()))
            return run_pipeline(handed)
        # stops here on a refused override, before any work
        merged = deployment_settings("batch-forecast", config_path, given, allow_overrides)
        config = load_config(config_path, overrides=merged)  # stops here on a bad setting
        scrubber.values.update(secret_values(config.storage_options, config.urls()))
        return run_pipeline(config)


def _flow_run():
    ctx = FlowRunContext.get()
    return ctx.flow_run if ctx is not None else None


def scheduled_slot() -> datetime | None:
    """The scheduled start of this flow run when the scheduler created it; None for manual runs.

    Prefect keeps `expected_start_time` when a run is retried or rescheduled, so it names the slot.
    """
    run = _flow_run()
    if run is None or not run.auto_scheduled or run.expected_start_time is None:
        return None
    return run.expected_start_time


def resolve_run_id(config: ForecastConfig, slot: datetime | None = None) -> tuple[str, str]:
    """(run id, where it came from): the configured one, the scheduled slot's, the as_of instant's, or a fresh one."""
    if config.run_id:
        return config.run_id, "configured"
    if slot is not None:
        return slot_run_id(slot, config.config_hash()), "schedule"
    if config.as_of is not None:  # a replay of the same instant with the same settings replaces its own outputs
        return as_of_run_id(config.as_of, config.public_dict()), "as_of"
    return new_run_id(), "new"


def run_pipeline(config: ForecastConfig) -> dict[str, JsonValue]:
    """The run inside the flow: load, plan, train or load, forecast each shard, commit; returns the manifest as JSON."""
    logger = get_run_logger()
    secrets = secret_values(config.storage_options, config.urls())
    install_log_scrubber(secrets)  # console and Prefect API logs never carry a credential: before any reading
    config, tuned = apply_tuned(config)  # tuned: latest -> the study's newest best settings (ConfigError if none)
    if tuned is not None:
        logger.info("tuned settings of study %r, trial %s (backtest MASE %.4f): %s", tuned.study, tuned.trial,
                    tuned.objective, tuned.settings)
    slot = scheduled_slot()
    run_id, run_id_source = resolve_run_id(config, slot)
    store = OutputStore.open(config)  # the output URL, opened once: every path of the run comes from it
    writer = store.writer(run_id)
    logger.info("run %s (%s): %s -> %s", run_id, f"scheduled slot {slot.isoformat()}" if slot else run_id_source,
                redact_url(config.input_url), redact_url(config.output_url))
    # Catch-up (lstm_core.catchup): a scheduled slot a whole interval late stops here, before its lease, writing
    # nothing; the newer slot's run forecasts the newest data and lists it as skipped.
    previous = writer.read_manifest()
    night = plan_night(store.location, run_id, as_of=config.as_of, slot=slot, interval=config.schedule_interval,
                       rerun=bool(previous and previous.get("status") == "succeeded"))
    if night.superseded:
        logger.warning("run %s superseded: %s; nothing written", run_id, night.superseded_reason())
        return night.superseded_result(run_id)
    # One process per run id: refused here, before any work, if another live process holds it.
    try:
        lease = RunLease.acquire(writer.fs, writer.root, run_id, config.lease_ttl.total_seconds())
    except Exception as exc:
        safe = _scrubbed(exc, secrets)
        if safe is exc:
            raise
        raise safe from None
    if lease.took_over:
        logger.warning("run %s: %s", run_id, lease.took_over)
    writer.lease = lease
    try:
        return _run_leased(config, store, writer, logger, secrets, run_id_source, slot, tuned, night)
    finally:
        lease.release()


def _run_leased(config: ForecastConfig, store: OutputStore, writer: RunWriter, logger, secrets: set[str],
                run_id_source: str, slot: datetime | None, tuned: Tuned | None = None,
                night: NightPlan | None = None) -> dict[str, JsonValue]:
    run_id = writer.run_id
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    run = _Run(config, store, writer, logger, ManifestDraft(
        run_id=run_id,
        run_id_source=run_id_source,
        scheduled_start=slot,
        input_url=redact_url(config.input_url),
        output_url=redact_url(config.output_url),
        config=config.public_dict(),
        started_at=started,
        versions=package_versions(),
        flow_run_id=_flow_run_id(),
        tuned=tuned,  # which study's best settings this run used (tuned: latest), else null
        output_schema_version=OUTPUT_SCHEMA_VERSION,
        as_of=config.as_of,
        schedule=night.schedule_entry() if night is not None else None,
    ))
    run.night = night
    try:
        # the CLI's Ctrl-C and SIGTERM handlers over the flow engine's own (which would leave the task threads
        # training on): every thread stops at its next safe point
        with interrupt.rearmed(), run_task_runner(config, logger) as runner:
            run.runner = runner
            run.manifest.execution = runner.description
            committed = run.execute()
    except BaseException as exc:
        run.wall["total"] = round(time.perf_counter() - t_start, 3)
        _record_failure(writer, run.manifest, run.timings(), exc, logger, run.began, secrets)
        safe = _scrubbed(exc, secrets)
        if safe is exc:
            raise
        raise safe from None
    else:
        record = committed.model_dump(mode="json")  # the manifest as written: what the flow returns
        try:
            publish_artifacts(record, run.plot_notes)
        except Exception as exc:  # noqa: BLE001 - the run is committed; the UI summary is a view of it
            logger.error("run %s committed, but its Prefect artifacts could not be published: %s", run_id,
                         scrub(str(exc), secrets))
        return record
    finally:
        try:
            store.remove_scratch(run_id)
        except Exception as exc:  # noqa: BLE001 - cleaning up must not hide the run's own outcome
            logger.warning("could not remove the run's scratch files: %s", exc)


class _Run:
    """One run's state while it executes: the plan, the models, the shard summaries, timings."""

    def __init__(self, config: ForecastConfig, store: OutputStore, writer: RunWriter, logger,
                 manifest: ManifestDraft) -> None:
        self.config, self.store, self.writer, self.logger = config, store, writer, logger
        self.runner: Any = None  # the started task runner (`run_task_runner`): it has `capacity`
        self.manifest = manifest  # what the manifest says so far; a failure records it as it stands
        self.wall: dict[str, float] = {}
        self.seconds: dict[str, float] = {}  # per step (task name), summed over groups and shards
        self.began = False  # the run's partitions were cleared: an earlier commit of this id is gone
        self.plots = None  # drawn for a run of one shard
        self.plot_notes: dict[str, str] = {"plots": "plots are drawn for runs of one shard; this run was sharded"}
        self.earlier_runs: list[str] = []  # committed runs whose predictions realised accuracy scores
        self.night: NightPlan | None = None  # the run's place among the committed runs (catch-up, revisions)
        self.revisions: list[RevisionRows] = []  # each shard's part of revisions/
        self.t0 = time.perf_counter()

    def _timed(self, name: str, t0: float) -> None:
        self.wall[name] = round(time.perf_counter() - t0, 3)

    def _add_seconds(self, seconds: dict[str, float]) -> None:
        for name, value in seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + value

    def timings(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def execute(self) -> Manifest:
        """The graph: plan -> [split] -> train each group (mapped) -> forecast each shard (mapped) -> commit.

        Every unit is submitted to the flow's task runner; a failed unit's own exception is raised here.
        """
        config = self.config
        t0 = time.perf_counter()
        plan: ShardPlan = plan_shards.submit(config=config, run_id=self.writer.run_id).result()
        self._timed("plan_shards", t0)
        self._add_seconds({"plan_shards": self.wall["plan_shards"]})
        if not config.is_resolved:  # the frequency was inferred from the data: defaults follow from it
            config = self.config = config.resolved(str(plan.freq))  # the plan infers one when none is set
        self.manifest.config = config.public_dict()
        self.manifest.frequency = Frequency(freq=config.freq, source="inferred" if plan.freq else "configured",
                                            season_lengths=list(config.season_lengths))
        self.manifest.ignored_columns = list(plan.ignored_columns)
        if plan.sharded:
            t0 = time.perf_counter()
            self.store.remove_scratch(self.writer.run_id)
            plan = split_shards.submit(config=config, plan=plan).result()
            self._timed("split_shards", t0)
            self._add_seconds({"split_shards": self.wall["split_shards"]})
        self.manifest.plan = plan.summary()

        t0 = time.perf_counter()
        trained = self._train_groups(plan)
        self._timed("train_or_load_model", t0)  # only submitting: the groups train beside the shards

        # listed before this run id's partitions are cleared: an earlier attempt of it is not an earlier run
        self.earlier_runs = self._earlier_runs()
        t0 = time.perf_counter()
        self.writer.begin()  # a re-run of this run id starts from a clean partition
        self.began = True
        shards = forecast_shard.map(plan.shards, config=unmapped(config), writer=unmapped(self.writer),
                                    model=[trained.get(spec.group) for spec in plan.shards],
                                    single=unmapped(plan.n_shards == 1), earlier_runs=unmapped(self.earlier_runs),
                                    previous_run=unmapped(self.night.previous_run_id if self.night else None))
        choices: dict[Any, Any] = {}
        for group, future in trained.items():  # a failed training raises its own error here
            result = future.result()
            if result.ref is not None:  # None: no series of the group for the network, the fallback serves it
                choices[group] = result.ref
            self._add_seconds(result.seconds)
        summaries = self._shard_results(plan, shards, choices)
        self._timed("shards", t0)
        return self._commit(plan, summaries, choices)

    def _earlier_runs(self) -> list[str]:
        """The committed runs whose predictions realised accuracy scores; none when they cannot be listed
        for a reason other than storage (realised accuracy is a view of the past, not tonight's forecast)."""
        try:
            runs = self.store.committed_runs()
        except Exception as exc:
            if is_storage_failure(exc):
                raise
            self.logger.error("realised accuracy skipped: the earlier runs could not be listed: %s: %s",
                              type(exc).__name__, exc)
            return []
        return [r for r in runs if r != self.writer.run_id]

    # --- models ---------------------------------------------------------------
    def _train_groups(self, plan: ShardPlan) -> dict[Any, Any]:
        """Submit each group's training (or loading) on a bounded sample of its series: group -> future.

        A group of one shard whose sample is all its series trains inside that shard (the unsharded
        order), and mode per_series trains in every shard: neither is listed. On Dask the groups train
        in parallel, each shard starting when its group's model is ready.
        """
        config = self.config
        if config.mode == "per_series":
            return {}
        # loading a pinned model, or under retrain 'never', needs no data: the model key guarantees the inputs
        no_data = config.retrain == "never" or bool(config.model_version or config.model_url)
        groups = [g for g in plan.groups if g.train is not None]
        return {g.name: train_group.submit(config=config, group=g.name, sample=None if no_data else g.train)
                for g in groups}

    # --- shards ---------------------------------------------------------------
    def _shard_results(self, plan: ShardPlan, futures, choices: dict) -> list[ShardSummary]:
        """Each shard's summary, in the order they finish; a failed shard raises its own error.

        A run of several shards logs each shard it finishes and, on a terminal, counts them on a progress bar.
        """
        summaries: list[ShardSummary] = []
        total = plan.n_shards
        with Progress(enabled=None if total > 1 else False) as bar:
            bar.update("shards", 0, total)
            for done, future in enumerate(as_completed(futures), start=1):
                result = future.result()
                last = result.summary
                summaries.append(last)
                self._add_seconds(result.seconds)
                if result.revisions is not None:
                    self.revisions.append(result.revisions)
                if result.plots is not None:
                    self.plots = result.plots
                    self.plot_notes = result.plots.notes
                if result.trained is not None:
                    choices[last.group if self.config.mode != "per_series" else last.shard] = result.trained
                if total > 1:
                    skipped = f", {last.series_skipped} skipped" if last.series_skipped else ""
                    self.logger.info("shard %d/%d done: %d series forecast%s (shard %d; shards finish in any order)",
                                     done, total, last.series_forecast, skipped, last.shard)
                    bar.update("shards", done, total, f"{sum(s.series_forecast for s in summaries)} series forecast")
        return summaries

    # --- commit ---------------------------------------------------------------
    def _commit(self, plan: ShardPlan, summaries: list[ShardSummary], choices: dict) -> Manifest:
        """The manifest assembled from the shards' summaries and the models (lstm_core.manifest), then the
        commit: the overall rows of a sharded run and the plots, then the manifest, last."""
        summaries.sort(key=lambda s: s.shard)
        if sum(s.series_forecast for s in summaries) == 0:
            from lstm_core.validation import SkippedSeries

            skipped = [s for summary in summaries for s in summary.skipped]
            error = no_valid_series([SkippedSeries(**s.model_dump()) for s in skipped], self.config)
            error.quarantine_written = True  # each shard wrote its part of the quarantine table
            # The failed manifest points at that table (nothing else: no forecast was committed).
            error.quarantine = (summaries[0].outputs.get("quarantine") if plan.n_shards == 1 else
                                self.store.partitions(self.writer.run_id, ("quarantine",)).get("quarantine"))
            raise error
        single = plan.n_shards == 1
        assembled = assemble_manifest(
            self.manifest, summaries, choices, self.config,
            RunShape(shards=plan.n_shards, split=plan.sharded, in_flight=self.runner.capacity,
                     earlier_runs_scored=len(self.earlier_runs)),
            partitions=None if single else self.store.partitions(self.writer.run_id, TABLES))
        manifest = self.manifest = assembled.draft  # a commit that fails records the run as assembled
        plots = dict(self.plots.files) if self.plots is not None else {}
        if self.night is not None:  # revisions/ and the nightly health plot (lstm_core.nightly)
            manifest.revisions, path, png = night_outputs(self.night, self.store, self.writer.run_id, self.revisions,
                                                          single, self.logger)
            if path is not None and manifest.outputs is not None:
                manifest.outputs.revisions = path
            plots.update(png)
        self.wall["total"] = round(time.perf_counter() - self.t0, 3)
        done = manifest.finish(status="succeeded",
                               timings_s={**self.timings(), **{f"wall_{k}": v for k, v in self.wall.items()}},
                               finished_at=datetime.now(UTC))
        return commit_run(self.writer, done, assembled.overall_rows, plots or None, assembled.realised_rows)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _scrubbed(exc: BaseException, secrets: set[str]) -> BaseException:
    """`exc` itself, or a one-line copy without the credentials a library quoted in it."""
    text = str(exc)
    clean = scrub(text, secrets)
    if clean == text:
        return exc
    return LstmForecastError(f"{type(exc).__name__}: {clean.splitlines()[0] if clean else ''}")


class _FailedFields(TypedDict, total=False):
    """The fields a failed run's manifest adds to its draft (`ManifestDraft.finish`)."""

    status: Literal["failed"]
    error: str
    timings_s: dict[str, float]
    finished_at: datetime
    reason: Literal["interrupted", "error"]
    skipped: list[SkippedEntry]
    skipped_truncated: bool
    counts: Counts
    outputs: Outputs


def _record_failure(writer: RunWriter, manifest: ManifestDraft, timings, exc: BaseException, logger,
                    began: bool, secrets: set[str]) -> None:
    """Leave a manifest that says the run failed and why; never one that says succeeded."""
    reason = scrub(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", secrets)
    if isinstance(exc, LeaseLostError) or (writer.lease is not None and writer.lease.lost):
        # Another process runs this run id now: its manifest is not ours to touch.
        logger.error("run %s stopped without committing: %s", writer.run_id, reason)
        return
    try:
        previous = writer.read_manifest()  # as JSON: an earlier attempt's manifest may be of another version
        if previous and previous.get("status") == "succeeded" and not began:
            # An earlier attempt of this run id committed and nothing of it was touched: keep it.
            logger.error("run %s failed before writing; the earlier committed attempt stays: %s", writer.run_id, reason)
            return
        failed: _FailedFields = {"status": "failed", "error": reason, "timings_s": timings,
                                 "finished_at": datetime.now(UTC),
                                 "reason": "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"}
        if isinstance(exc, NoValidSeriesError):
            # Every series was skipped: say which and why, in the manifest and the quarantine table.
            failed["skipped"] = [SkippedEntry.of(s) for s in exc.skipped[:SKIPPED_IN_SUMMARY]]
            failed["counts"] = Counts(series_read=len(exc.skipped), series_forecast=0,
                                      series_skipped=len(exc.skipped))
            if len(exc.skipped) > SKIPPED_IN_SUMMARY:
                failed["skipped_truncated"] = True
            if getattr(exc, "quarantine_written", False):
                failed["outputs"] = Outputs(quarantine=getattr(exc, "quarantine", None))
            else:
                from lstm_core.validation import ValidationResult

                failed["outputs"] = Outputs(quarantine=writer.write(
                    "quarantine", ValidationResult(pd.DataFrame(), exc.skipped).skipped_frame(), 0))
        writer.commit(manifest.finish(**failed))
    except Exception as write_exc:  # noqa: BLE001 - storage may be what failed
        logger.error("could not record the failure in the manifest: %s", scrub(str(write_exc), secrets))
