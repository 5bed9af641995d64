"""The nightly batch forecasting flow.

load_series -> validate_series -> prepare_windows -> train_or_load_model -> forecast -> evaluate -> write_outputs
(render_plots draws the run's plots before write_outputs; publish_artifacts shows the committed run in the UI)
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext

from lstm_core.artifacts import package_versions
from lstm_core.config import ForecastConfig, load_config, merge_settings, redact_url
from lstm_core.errors import LeaseLostError, LstmForecastError
from lstm_core.lease import RunLease
from lstm_core.outputs import RunWriter, new_run_id, slot_run_id
from lstm_core.secrets import install_log_scrubber, scrub, secret_values
from tasks.data import load_series, prepare_windows, validate_series
from tasks.modelling import evaluate, forecast, train_or_load_model
from tasks.outputs import write_outputs
from tasks.reporting import publish_artifacts, render_plots


@flow(name="batch-forecast", log_prints=True)
def batch_forecast(config_path: str | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Forecast every series at `input_url` and commit predictions and metrics to `output_url`.

    `config_path` is a YAML file; `settings` overrides it (nested keys, as in the file).
    Secrets belong in the environment or the config file, not in `settings`: flow
    parameters are stored by the Prefect server.

    In a deployment run, `settings` are merged over the deployment's own `settings`, so a manual
    run passes only what changes. A run the scheduler created gets the run id of its slot
    (`sched-<UTC start>-<config hash>`) unless `run_id` is set.
    """
    settings = merge_settings(_deployment_settings(), settings or {})
    config = load_config(config_path, overrides=settings)  # stops here on a bad setting, before any work
    return run_pipeline(config)


def _flow_run():
    ctx = FlowRunContext.get()
    return ctx.flow_run if ctx is not None else None


def _deployment_settings() -> dict[str, Any]:
    """The `settings` parameter the deployment of this run was created with ({} outside deployments)."""
    run = _flow_run()
    if run is None or run.deployment_id is None:
        return {}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(run.deployment_id)
    return dict((deployment.parameters or {}).get("settings") or {})


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
    secrets = secret_values(config.storage_options, [config.input_url, config.output_url])
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
        return _run(config, run_id, run_id_source, slot, writer, logger, secrets)
    finally:
        lease.release()


def _run(config: ForecastConfig, run_id: str, run_id_source: str, slot: datetime | None, writer: RunWriter,
         logger, secrets: set[str]) -> dict[str, Any]:
    started = datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    flow_run = _flow_run()
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "run_id_source": run_id_source,
        "scheduled_start": slot.isoformat() if slot else None,
        "flow_run_id": str(flow_run.id) if flow_run is not None else None,
        "input_url": redact_url(config.input_url),
        "output_url": redact_url(config.output_url),
        "config": config.public_dict(),
        "started_at": started.isoformat(),
        "versions": package_versions(),
    }

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 3)
        return out

    try:
        frame = timed("load_series", load_series, config)
        validated = timed("validate_series", validate_series, frame, config)
        prepared = timed("prepare_windows", prepare_windows, validated, config)
        choice = timed("train_or_load_model", train_or_load_model, prepared, config)
        forecasts = timed("forecast", forecast, choice, prepared, config)
        evaluation = timed("evaluate", evaluate, forecasts, choice, prepared, config)
        plots = timed("render_plots", render_plots, choice, evaluation, prepared, config)
        manifest.update({
            "input_fingerprint": prepared.fingerprint,
            "model_version": choice.version,
            "model_key": config.model_key(),
            "retrain": choice.decision.as_dict(),
            "training": _training_summary(choice),
            "counts": {
                "series_read": int(frame["series_id"].nunique()),
                "rows_read": int(len(frame)),
                "series_forecast": int(prepared.panel.n_series),
                "series_skipped": len(validated.skipped),
                "prediction_rows": int(len(forecasts.future)),
                "points_filled": int(validated.filled_points),
            },
            "skipped": [s.__dict__ for s in validated.skipped],
            "overall_metrics": _overall(evaluation),
        })
        t0 = time.perf_counter()
        timings["write_outputs"] = 0.0
        manifest["timings_s"] = timings
        manifest["finished_at"] = datetime.now(timezone.utc).isoformat()
        committed = write_outputs(writer, forecasts.future, evaluation, validated, manifest, plots.files)
        timings["write_outputs"] = round(time.perf_counter() - t0, 3)
    except BaseException as exc:
        _record_failure(writer, manifest, timings, exc, logger, secrets)
        safe = _scrubbed(exc, secrets)
        if safe is exc:
            raise
        raise safe from None
    try:
        publish_artifacts(committed, plots.notes)
    except Exception as exc:  # noqa: BLE001 - the run is committed; the UI summary is a view of it
        logger.error("run %s committed, but its Prefect artifacts could not be published: %s", run_id,
                     scrub(str(exc), secrets))
    return committed


def _scrubbed(exc: BaseException, secrets: set[str]) -> BaseException:
    """`exc` itself, or a one-line copy without the credentials a library quoted in it."""
    text = str(exc)
    clean = scrub(text, secrets)
    if clean == text:
        return exc
    return LstmForecastError(f"{type(exc).__name__}: {clean.splitlines()[0] if clean else ''}")


def _training_summary(choice) -> dict[str, Any]:
    t = choice.forecaster.training or {}
    return {k: t.get(k) for k in ("device", "cudnn", "seconds", "best_val_loss", "series")} | {
        "epochs": [m.get("epochs_run") for m in t.get("members", [])],
        "stopped_by": [m.get("stopped_by") for m in t.get("members", [])],
    }


def _overall(evaluation) -> dict[str, dict[str, float]]:
    m = evaluation.metrics
    overall = m[m["series_id"].isna()]
    return {model: dict(zip(g["metric"], g["value"].astype(float))) for model, g in overall.groupby("model")}


def _record_failure(writer: RunWriter, manifest: dict[str, Any], timings, exc: BaseException, logger,
                    secrets: set[str]) -> None:
    """Leave a manifest that says the run failed and why; never one that says succeeded."""
    reason = scrub(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", secrets)
    if isinstance(exc, LeaseLostError) or (writer.lease is not None and writer.lease.lost):
        # Another process runs this run id now: its manifest is not ours to touch.
        logger.error("run %s stopped without committing: %s", writer.run_id, reason)
        return
    try:
        previous = writer.read_manifest()
        if previous and previous.get("status") == "succeeded" and "write_outputs" not in timings:
            # An earlier attempt of this run id committed and nothing of it was touched: keep it.
            logger.error("run %s failed before writing; the earlier committed attempt stays: %s", writer.run_id, reason)
            return
        writer.commit({**manifest, "status": "failed", "error": reason, "timings_s": timings,
                       "finished_at": datetime.now(timezone.utc).isoformat()})
    except Exception as write_exc:  # noqa: BLE001 - storage may be what failed
        logger.error("could not record the failure in the manifest: %s", scrub(str(write_exc), secrets))
