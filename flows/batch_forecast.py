"""The nightly batch forecasting flow.

plan_shards -> [split_shards] -> train_or_load_model (once per model group, on a bounded sample)
then for each shard of series:
    load_series -> validate_series -> prepare_windows -> forecast (the backtest windows and the
    future, with intervals) -> evaluate (every window) -> score_realised (earlier runs) -> write_outputs
then render_plots (runs of one shard), commit_run (overall metrics, plots, then the manifest) and
publish_artifacts (the committed run in the Prefect UI).

A dataset of one shard (up to `shard_size` series) runs exactly as an unsharded run:
load_series -> validate_series -> prepare_windows -> train_or_load_model -> forecast -> evaluate
-> score_realised -> write_outputs -> commit_run. Tasks run in the flow's process, or on a Dask cluster
(`workers` / `dask_address`, see flows/runners.py) with a few shards in flight at a time.
"""
from __future__ import annotations

import hashlib
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext

from flows.parameters import Overridable, RunSettings, check_overrides, overrides_list, settings_dict
from flows.runners import execution
from lstm_core.artifacts import package_versions
from lstm_core.config import ForecastConfig, load_config, merge_settings, redact_url
from lstm_core.errors import LeaseLostError, LstmForecastError, NoValidSeriesError
from lstm_core.lease import RunLease
from lstm_core.outputs import RunWriter, committed_runs, new_run_id, slot_run_id
from lstm_core.records import (BacktestEntry, Counts, Decision, Execution, Frequency, Manifest, ManifestDraft,
                               ModelEntry, Outputs, PlanSummary, ShardsEntry, ShardSummary, SkippedEntry,
                               TrainingSummary, Tuned)
from lstm_core.secrets import install_log_scrubber, scrub, secret_values
from lstm_core.sharding import ShardPlan, ShardSpec, remove_scratch
from lstm_core.storage import is_storage_failure, join
from lstm_core.tuning import apply_tuned
from tasks.data import load_series, no_valid_series, prepare_windows, validate_series
from tasks.modelling import evaluate, forecast, train_or_load_model
from tasks.outputs import (SKIPPED_IN_SUMMARY, commit_run, overall_metrics, realised_overall_rows, score_realised,
                           write_outputs)
from tasks.reporting import publish_artifacts, publish_failure, render_plots
from tasks.sharding import plan_shards, split_shards


# Parameters are checked in the body (settings_dict), so a bad setting fails the run as a ConfigError naming it,
# exactly as a bad setting in the file does; their types still make the parameter schema (the UI's form).
@flow(name="batch-forecast", log_prints=True, validate_parameters=False, on_failure=[publish_failure])
def batch_forecast(config_path: str | None = None, settings: RunSettings | None = None,
                   allow_overrides: list[Overridable] | None = None) -> dict[str, Any]:
    """Forecast every series at `input_url` and commit predictions and metrics to `output_url`.

    In a deployment run, `settings` are merged over the deployment's own `settings`, so a manual
    run passes only what changes; settings that decide where data goes or where code runs are the
    deployment's unless it lists them in `allow_overrides`. A run the scheduler created gets the run
    id of its slot (`sched-<UTC start>-<config hash>`) unless `run_id` is set.

    Args:
        config_path: YAML configuration file, re-read at every run. Secrets belong here or in the
            environment, never in parameters (the Prefect server stores them). Fixed by the deployment.
        settings: settings of this run, over the config file's (and the deployment's); empty fields keep theirs.
        allow_overrides: the protected settings (URLs, dask_address, storage_options, config_path) a run of
            this deployment may change. Set by the deployment; a run cannot change it.
    """
    given = settings_dict(settings)  # stops here on a bad parameter, before any work
    overrides_list(allow_overrides)
    deployment = _deployment()
    if deployment is not None:  # stops here on a refused override, before any work
        check_overrides(f"batch-forecast/{deployment.name}", deployment.parameters or {},
                        {"config_path": config_path, "settings": given, "allow_overrides": allow_overrides})
    base = dict((deployment.parameters or {}).get("settings") or {}) if deployment is not None else {}
    config = load_config(config_path, overrides=merge_settings(base, given))  # stops here on a bad setting
    return run_pipeline(config)


def _flow_run():
    ctx = FlowRunContext.get()
    return ctx.flow_run if ctx is not None else None


def _deployment():
    """The deployment this flow run was created from (None outside deployments)."""
    run = _flow_run()
    if run is None or run.deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        return client.read_deployment(run.deployment_id)


def scheduled_slot() -> datetime | None:
    """The scheduled start of this flow run when the scheduler created it; None for manual runs.

    Prefect keeps `expected_start_time` when a run is retried or rescheduled, so it names the slot.
    """
    run = _flow_run()
    if run is None or not run.auto_scheduled or run.expected_start_time is None:
        return None
    return run.expected_start_time


def resolve_run_id(config: ForecastConfig, slot: datetime | None = None) -> tuple[str, str]:
    """(run id, where it came from): the configured one, the scheduled slot's, or a fresh one."""
    if config.run_id:
        return config.run_id, "configured"
    if slot is not None:
        return slot_run_id(slot, config.config_hash()), "schedule"
    return new_run_id(), "new"


def run_pipeline(config: ForecastConfig) -> dict[str, Any]:
    logger = get_run_logger()
    config, applied = apply_tuned(config)  # tuned: latest -> the study's newest best settings (ConfigError if none)
    tuned = None if applied is None else Tuned(**applied)
    if tuned is not None:
        logger.info("tuned settings of study %r, trial %s (backtest MASE %.4f): %s", tuned.study, tuned.trial,
                    tuned.objective, tuned.settings)
    secrets = secret_values(config.storage_options, config.urls())
    install_log_scrubber(secrets)  # console and Prefect API logs never carry a credential
    slot = scheduled_slot()
    run_id, run_id_source = resolve_run_id(config, slot)
    writer = RunWriter.open(config.output_url, run_id, config.storage_options)
    logger.info("run %s (%s): %s -> %s", run_id, f"scheduled slot {slot.isoformat()}" if slot else run_id_source,
                redact_url(config.input_url), redact_url(config.output_url))
    # One process per run id: refused here, before any work, if another live process holds it.
    try:
        lease = RunLease.acquire(writer.fs, writer.root, run_id, config.lease_ttl.total_seconds())
    except Exception as exc:  # noqa: BLE001
        safe = _scrubbed(exc, secrets)
        if safe is exc:
            raise
        raise safe from None
    if lease.took_over:
        logger.warning("run %s: %s", run_id, lease.took_over)
    writer.lease = lease
    try:
        return _run_leased(config, writer, logger, secrets, run_id_source, slot, tuned)
    finally:
        lease.release()


def _run_leased(config: ForecastConfig, writer: RunWriter, logger, secrets: set[str], run_id_source: str,
                slot: datetime | None, tuned: Tuned | None = None) -> dict[str, Any]:
    run_id = writer.run_id
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    run = _Run(config, writer, logger, ManifestDraft(
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
    ))
    try:
        with execution(config, logger) as ex:
            run.ex = ex
            run.manifest.execution = Execution(**ex.describe())
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
            remove_scratch(config.scratch_root, run_id, config.storage_options)
        except Exception as exc:  # noqa: BLE001 - cleaning up must not hide the run's own outcome
            logger.warning("could not remove the run's scratch files: %s", exc)


class _Run:
    """One run's state while it executes: the plan, the models, the shard summaries, timings."""

    def __init__(self, config: ForecastConfig, writer: RunWriter, logger, manifest: ManifestDraft) -> None:
        self.config, self.writer, self.logger = config, writer, logger
        self.ex = None
        self.manifest = manifest  # what the manifest says so far; a failure records it as it stands
        self.wall: dict[str, float] = {}
        self.began = False  # the run's partitions were cleared: an earlier commit of this id is gone
        self.plots = None  # drawn for a run of one shard
        self.plot_notes: dict[str, str] = {"plots": "plots are drawn for runs of one shard; this run was sharded"}
        self.earlier_runs: list[str] = []  # committed runs whose predictions realised accuracy scores
        self.t0 = time.perf_counter()

    def _timed(self, name: str, t0: float) -> None:
        self.wall[name] = round(time.perf_counter() - t0, 3)

    def timings(self) -> dict[str, float]:
        try:
            per_task = self.ex.task_seconds() if self.ex is not None else {}
        except Exception as exc:  # noqa: BLE001 - timings are best effort
            self.logger.warning("could not read task timings: %s", exc)
            per_task = {}
        return per_task

    def execute(self) -> Manifest:
        config, ex = self.config, self.ex
        t0 = time.perf_counter()
        plan: ShardPlan = ex.result(ex.submit(plan_shards, config=config, run_id=self.writer.run_id))
        self._timed("plan_shards", t0)
        if not config.is_resolved:  # the frequency was inferred from the data: defaults follow from it
            config = self.config = config.resolved(plan.freq)
        self.manifest.config = config.public_dict()
        self.manifest.frequency = Frequency(freq=config.freq, source="inferred" if plan.freq else "configured",
                                            season_lengths=list(config.season_lengths))
        self.manifest.ignored_columns = list(plan.ignored_columns)
        if plan.sharded:
            t0 = time.perf_counter()
            remove_scratch(config.scratch_root, self.writer.run_id, config.storage_options)
            plan = ex.result(ex.submit(split_shards, config=config, plan=plan))
            self._timed("split_shards", t0)
        self.manifest.plan = PlanSummary(**plan.summary())

        t0 = time.perf_counter()
        models, train_chains = self._start_training(plan)
        self._timed("train_or_load_model", t0)  # in-process: training itself; on Dask: only submitting it

        # listed before this run id's partitions are cleared: an earlier attempt of it is not an earlier run
        self.earlier_runs = self._earlier_runs()
        t0 = time.perf_counter()
        self.writer.begin()  # a re-run of this run id starts from a clean partition
        self.began = True
        summaries, shard_models = self._run_shards(plan, models, train_chains)
        self._timed("shards", t0)

        choices = {g: ex.result(ref, train_chains.get(g)) for g, ref in models.items()}
        choices.update(shard_models)
        del models
        return self._commit(plan, summaries, choices)

    def _earlier_runs(self) -> list[str]:
        """The committed runs whose predictions realised accuracy scores; none when they cannot be listed
        for a reason other than storage (realised accuracy is a view of the past, not tonight's forecast)."""
        try:
            runs = committed_runs(self.config.output_url, self.config.storage_options)
        except Exception as exc:  # noqa: BLE001
            if is_storage_failure(exc):
                raise
            self.logger.error("realised accuracy skipped: the earlier runs could not be listed: %s: %s",
                              type(exc).__name__, exc)
            return []
        return [r for r in runs if r != self.writer.run_id]

    # --- models ---------------------------------------------------------------
    def _start_training(self, plan: ShardPlan) -> tuple[dict[Any, Any], dict[Any, list]]:
        """Train (or load) each group's model before its shards, on a bounded sample of its series.

        A group of one shard whose sample is all its series trains on that shard's own data,
        inside the shard's chain (the unsharded order). On Dask the groups train in parallel.
        """
        config, ex = self.config, self.ex
        models: dict[Any, Any] = {}
        chains: dict[Any, list] = {}
        if config.mode == "per_series":
            return models, chains  # every shard trains its own series' models
        for g in plan.groups:
            if g.train is None:
                continue
            chain: list = []
            if config.retrain == "never" or config.model_version or config.model_url:
                # loading needs no data: the model key guarantees the inputs (names and roles)
                models[g.name] = ex.submit(train_or_load_model, chain, prepared=None, config=config,
                                           group=g.name)
            else:
                frame = ex.submit(load_series, chain, config=config, shard=g.train)
                validated = ex.submit(validate_series, chain, frame=frame, config=config)
                del frame
                prepared = ex.submit(prepare_windows, chain, validated=validated, config=config)
                del validated
                models[g.name] = ex.submit(train_or_load_model, chain, prepared=prepared, config=config, group=g.name,
                                           calibrate=True)
                del prepared
            chains[g.name] = chain
        return models, chains

    # --- shards ---------------------------------------------------------------
    def _run_shards(self, plan: ShardPlan, models: dict, train_chains: dict) -> tuple[list[ShardSummary], dict]:
        """Each shard's chain, with at most `capacity` shards in flight; only summaries come back."""
        ex = self.ex
        in_flight: deque = deque()
        summaries: list[ShardSummary] = []
        shard_models: dict[Any, Any] = {}

        def finish() -> None:
            spec, summary, chain, trained, plots = in_flight.popleft()
            summaries.append(ex.result(summary, chain))
            if plots is not None:
                self.plots = ex.result(plots, chain)
                self.plot_notes = self.plots.notes
            if trained is not None:
                shard_models[spec.group if self.config.mode != "per_series" else spec.index] = \
                    ex.result(trained, chain)

        for spec in plan.shards:
            while len(in_flight) >= ex.capacity:
                finish()
            in_flight.append(self._shard_chain(plan, spec, models.get(spec.group), train_chains.get(spec.group, [])))
        while in_flight:
            finish()
        return summaries, shard_models

    def _shard_chain(self, plan: ShardPlan, spec: ShardSpec, choice, train_chain: list):
        config, ex = self.config, self.ex
        single = plan.n_shards == 1
        chain = list(train_chain)
        trained = None
        frame = ex.submit(load_series, chain, config=config, shard=spec)
        validated = ex.submit(validate_series, chain, frame=frame, config=config)
        del frame
        prepared = ex.submit(prepare_windows, chain, validated=validated, config=config,
                             allow_empty=not single and choice is not None)
        del validated
        if choice is None:  # this shard's own data trains the model (one-shard group, or per-series mode)
            choice = trained = ex.submit(train_or_load_model, chain, prepared=prepared, config=config,
                                         group=spec.group)
        forecasts = ex.submit(forecast, chain, choice=choice, prepared=prepared, config=config, save=single)
        evaluation = ex.submit(evaluate, chain, forecasts=forecasts, choice=choice, prepared=prepared, config=config)
        plots = None
        if single:
            plots = ex.submit(render_plots, chain, choice=choice, evaluation=evaluation, prepared=prepared,
                              config=config, forecasts=forecasts)
        realised = ex.submit(score_realised, chain, writer=self.writer, prepared=prepared, config=config,
                             earlier_runs=self.earlier_runs)
        summary = ex.submit(write_outputs, chain, writer=self.writer, forecasts=forecasts, evaluation=evaluation,
                            prepared=prepared, shard=spec, overall_rows=single, realised=realised)
        return spec, summary, chain, trained, plots

    # --- commit ---------------------------------------------------------------
    def _commit(self, plan: ShardPlan, summaries: list[ShardSummary], choices: dict) -> Manifest:
        config, manifest = self.config, self.manifest
        summaries.sort(key=lambda s: s.shard)
        forecast_total = sum(s.series_forecast for s in summaries)
        skipped = [s for summary in summaries for s in summary.skipped]
        if forecast_total == 0:
            from lstm_core.validation import SkippedSeries

            error = no_valid_series([SkippedSeries(**s.model_dump()) for s in skipped], config)
            error.quarantine_written = True  # each shard wrote its part of the quarantine table
            raise error
        single = plan.n_shards == 1
        overall = overall_metrics(summaries)
        realised = None if single else realised_overall_rows(summaries)
        counts = Counts(
            series_read=sum(s.series_read for s in summaries),
            rows_read=sum(s.rows_read for s in summaries),
            series_forecast=forecast_total,
            series_skipped=sum(s.series_skipped for s in summaries),
            prediction_rows=sum(s.prediction_rows for s in summaries),
            points_filled=sum(s.points_filled for s in summaries),
        )
        fingerprints = [s.fingerprint for s in summaries]
        models = [self._model_entry(key, choice) for key, choice in sorted(choices.items(), key=lambda kv: str(kv[0]))]
        one = models[0] if len(models) == 1 else None
        manifest.input_fingerprint = fingerprints[0] if single else \
            hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:32]
        manifest.model_version = one.model_version if one else None
        manifest.model_key = one.model_key if one else None
        manifest.retrain = one.retrain if one else _retrain_summary(models)
        manifest.training = one.training if one else None
        manifest.models = models
        manifest.counts = counts
        manifest.skipped = skipped[:SKIPPED_IN_SUMMARY]
        # over all backtest windows (the per-window rows are in the metrics table)
        manifest.overall_metrics = {model: dict(zip(g["metric"], g["value"].astype(float)))
                                    for model, g in overall[overall["window"].isna()].groupby("model", sort=False)}
        manifest.backtest = self._backtest_entry(summaries, choices)
        manifest.shards = ShardsEntry(count=plan.n_shards, shard_size=config.shard_size, split=plan.sharded,
                                      in_flight=self.ex.capacity, items=[s.entry() for s in summaries])
        if len(skipped) > SKIPPED_IN_SUMMARY or counts.series_skipped > len(skipped):
            manifest.skipped_truncated = True  # the quarantine table lists every one
        if single:
            manifest.outputs = Outputs(**summaries[0].outputs)
        else:
            root, rid = self.writer.root, self.writer.run_id
            tables = ("predictions", "metrics", "quarantine", "backtest", *(("realised",) if realised is not None else ()))
            manifest.outputs = Outputs(**{t: join(root, t, f"run={rid}") for t in tables})
        self.wall["total"] = round(time.perf_counter() - self.t0, 3)
        done = manifest.finish(status="succeeded",
                               timings_s={**self.timings(), **{f"wall_{k}": v for k, v in self.wall.items()}},
                               finished_at=datetime.now(timezone.utc))
        return commit_run(self.writer, done, None if single else overall,
                          self.plots.files if self.plots is not None else None, realised)

    def _backtest_entry(self, summaries: list[ShardSummary], choices: dict) -> BacktestEntry:
        """The manifest's `backtest`: its settings, cost and where the intervals came from."""
        config = self.config
        seconds = sum(s.backtest_seconds for s in summaries)
        sources = sorted({s.intervals for s in summaries})
        return BacktestEntry(
            windows=config.backtest.windows, step=config.backtest_step, refit=config.backtest.refit,
            first_window=max((int(c.first_window) for c in choices.values()), default=0),
            rows=sum(s.backtest_rows for s in summaries),
            skipped_windows=sum(s.backtest_skipped_windows for s in summaries),
            seconds=round(seconds, 3),
            levels=[float(v) for v in config.levels], interval_method=config.interval_method,
            # "model": saved beside the model version; "run": calibrated on this run's backtest
            intervals=sources[0] if len(sources) == 1 else "mixed",
            earlier_runs_scored=len(self.earlier_runs),
        )

    def _model_entry(self, key, choice) -> ModelEntry:
        config = self.config
        per_series = config.mode == "per_series"
        return ModelEntry(
            group=None if per_series else key,
            **({"shard": key} if per_series else {}),
            # a pinned model may come from another key: name the one it was saved under
            model_key=None if per_series else (choice.decision.loaded.metadata.get("model_key")
                                               if choice.decision.loaded is not None else config.model_key(key)),
            model_version=choice.version,
            retrain=Decision(**choice.decision.as_dict()),
            training=_training_summary(choice),
        )


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _retrain_summary(models: list[ModelEntry]) -> Decision:
    actions = {m.retrain.action for m in models}
    # (per-series entries have group None: their reasons read "None: ...", as manifests always had them)
    return Decision(action=actions.pop() if len(actions) == 1 else "mixed",
                    reason="; ".join(f"{m.group}: {m.retrain.reason}" for m in models))


def _training_summary(choice) -> TrainingSummary:
    t = choice.forecaster.training or {}
    return TrainingSummary(
        **{k: t.get(k) for k in ("device", "cudnn", "seconds", "best_val_loss", "series")},
        epochs=[m.get("epochs_run") for m in t.get("members", [])],
        stopped_by=[m.get("stopped_by") for m in t.get("members", [])],
    )


def _scrubbed(exc: BaseException, secrets: set[str]) -> BaseException:
    """`exc` itself, or a one-line copy without the credentials a library quoted in it."""
    text = str(exc)
    clean = scrub(text, secrets)
    if clean == text:
        return exc
    return LstmForecastError(f"{type(exc).__name__}: {clean.splitlines()[0] if clean else ''}")


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
        failed: dict[str, Any] = {"status": "failed", "error": reason, "timings_s": timings,
                                  "finished_at": datetime.now(timezone.utc)}
        if isinstance(exc, NoValidSeriesError):
            # Every series was skipped: say which and why, in the manifest and the quarantine table.
            failed["skipped"] = [SkippedEntry.of(s) for s in exc.skipped[:SKIPPED_IN_SUMMARY]]
            failed["counts"] = Counts(series_read=len(exc.skipped), series_forecast=0,
                                      series_skipped=len(exc.skipped))
            if len(exc.skipped) > SKIPPED_IN_SUMMARY:
                failed["skipped_truncated"] = True
            if not getattr(exc, "quarantine_written", False):
                from lstm_core.validation import ValidationResult

                failed["outputs"] = Outputs(quarantine=writer.write(
                    "quarantine", ValidationResult(None, exc.skipped).skipped_frame(), 0))
        writer.commit(manifest.finish(**failed))
    except Exception as write_exc:  # noqa: BLE001 - storage may be what failed
        logger.error("could not record the failure in the manifest: %s", scrub(str(write_exc), secrets))
