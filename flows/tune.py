"""The tune flow: load_series -> validate_series -> run_study -> publish_tuning.

A search for better network and training settings, judged by backtests on the input's history before its
final window (lstm_core.tuning). Its results stay under `<output_url>/tuning/study=<name>/`; a nightly run
with `tuned: latest` uses the newest best settings. Served as a deployment of its own (weekly, in
infra/prefect.yaml), beside the nightly batch-forecast ones.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from prefect import flow, get_run_logger

from flows.cluster import dask_cluster
from flows.handoff import handed_config
from flows.parameters import Overridable, RunSettings, deployment_settings, overrides_list, settings_dict
from lstm_core import interrupt
from lstm_core.config import ForecastConfig, load_config
from lstm_core.engine import panel_of
from lstm_core.secrets import scrubbing, secret_values
from lstm_core.tuning.records import TuneSummary
from tasks.data import load_series, no_valid_series, validate_series
from tasks.tuning import publish_tuning, run_study


@flow(name="tune", log_prints=True, validate_parameters=False)
def tune(config_path: str | None = None, settings: RunSettings | None = None,
         allow_overrides: list[Overridable] | None = None) -> TuneSummary:
    """Run (or resume) the tuning study `tuning.study` on `input_url` within `tuning.trials` / `tuning.minutes`.

    The same parameter contract as batch-forecast: in a deployment run, `settings` are merged over the
    deployment's own, and the settings that decide where data goes or where code runs (every `*_url`,
    `dask_address`, `storage_options`, `config_path`) are the deployment's unless it lists them in
    `allow_overrides`: a run cannot send the series to another Dask cluster or write `best.json` elsewhere.

    Args:
        config_path: YAML configuration file (the one the nightly run uses, with its `tuning` section). Secrets
            belong here or in the environment, never in parameters (the Prefect server stores them).
        settings: settings over the file's; `tuning.study`, `tuning.trials` and `tuning.minutes` set the study
            and its budget.
        allow_overrides: the protected settings a run of this deployment may change. Set by the deployment.

    Returns the summary of this call (`lstm_core.tuning.TuneSummary`).
    """
    # Credentials are scrubbed from every log line and from the run's failure, from the first line on.
    with scrubbing() as scrubber:
        given = settings_dict(settings)  # stops here on a bad parameter
        overrides_list(allow_overrides)
        # Called by the CLI: the configuration it built and checked; a deployment run builds its own.
        config = handed_config(config_path, given)
        if config is None:
            merged = deployment_settings("tune", config_path, given, allow_overrides)  # refused overrides stop here
            config = load_config(config_path, overrides=merged)  # stops here on a bad setting
        scrubber.values.update(secret_values(config.storage_options, config.urls()))
        return run_tuning(config)


def run_tuning(config: ForecastConfig) -> TuneSummary:
    """The tune flow's body for a checked configuration: the study run, its artifacts published."""
    # the CLI's Ctrl-C and SIGTERM handlers over the flow engine's SIGTERM bridge: a trial stops at its next
    # batch and the command exits 130 or 143 (lstm_core.interrupt), as a run does
    with interrupt.rearmed():
        return _run_tuning(config)


def _run_tuning(config: ForecastConfig) -> TuneSummary:
    logger = get_run_logger()
    frame = load_series(config=config)
    validated = validate_series(frame=frame, config=config)
    del frame
    if validated.frame.empty:
        raise no_valid_series(validated.skipped, config)
    if not config.is_resolved:
        config = config.resolved(validated.freq)
    panel = panel_of(validated, config)
    del validated
    logger.info("tuning study %r on %d series (at most %s), budget %s trials / %s minutes", config.tuning.study,
                panel.n_series, config.tuning.max_series, config.tuning.trials, config.tuning.minutes)
    with study_client(config, logger) as client:
        summary, table = run_study(panel=panel, config=config, client=client)
    try:
        publish_tuning(summary, table)
    except Exception as exc:  # noqa: BLE001 - the results are written; the UI view of them is best effort
        logger.error("tuning results written, but the Prefect artifacts could not be published: %s", exc)
    return summary


@contextmanager
def study_client(config: ForecastConfig, logger=None) -> Iterator[Any]:
    """None (trials in this process), or the Dask client of the run's cluster (`flows.cluster.dask_cluster`,
    the batch flow's recipe): a LocalCluster of `workers` processes (spawned, one thread each, TensorFlow's
    threads split between them) or the cluster at `dask_address`."""
    if config.workers is None and config.dask_address is None:
        yield None
        return
    with dask_cluster(config, logger, default_client=True) as cluster:  # the trial pool needs the default client
        yield cluster.client
