"""The task that compares a shard's forecast with the previous committed run's (lstm_core.revisions)."""
from __future__ import annotations

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core import interrupt
from lstm_core.config import ForecastConfig
from lstm_core.location import is_storage_failure
from lstm_core.modelling import Prepared
from lstm_core.outputs import RunWriter
from lstm_core.realised import earlier_predictions
from lstm_core.revisions import RevisionRows, compute_revisions, naive_scale
from lstm_core.shard_plan import ShardSpec
from tasks.common import (
    STORAGE_RETRIES,
    STORAGE_RETRY_DELAYS,
    is_transient,
    retry_transient,
)
from tasks.modelling import Forecasts


@task(name="revise_forecast", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def revise_forecast(writer: RunWriter, forecasts: Forecasts, prepared: Prepared, config: ForecastConfig,
                    shard: ShardSpec, previous_run_id: str | None) -> RevisionRows | None:
    """Write this shard's part of `revisions/run=<run_id>/`: its forecast against `previous_run_id`'s
    committed predictions of the same series and dates, scaled by each series' naive MAE.

    None when there is no previous run, or its predictions cannot be read (damaged or planted: logged, never
    fatal; a transient storage failure is raised so the task retries). A shard with no common dates writes an
    empty part, so the partition exists whenever a previous run was compared.
    """
    logger = get_run_logger()
    if previous_run_id is None or forecasts.future.empty:
        return None
    panel = prepared.all_series
    skipped: list[tuple[str, str]] = []
    try:
        previous = earlier_predictions(writer.fs, writer.root, [previous_run_id], list(panel.series_ids),
                                       skipped=skipped)
    except Exception as exc:
        if is_transient(exc) or is_storage_failure(exc):
            raise
        logger.error("revisions skipped: the predictions of run %s could not be read: %s: %s", previous_run_id,
                     type(exc).__name__, exc)
        return None
    if skipped:
        logger.warning("revisions skipped: run %s's predictions cannot be read: %s", previous_run_id, skipped[0][1])
        return None
    table = compute_revisions(forecasts.future, previous, naive_scale(panel, config.season_lengths[0]),
                              previous_run_id)
    interrupt.check()
    path = writer.write("revisions", table, shard.index)
    values = np.abs(table["revision"].to_numpy(np.float64))
    logger.info("%s: %d forecast points revised against run %s", shard.name, len(table), previous_run_id)
    return RevisionRows(path=path, previous_run_id=previous_run_id, rows=len(table),
                        series=int(table["series_id"].nunique()), abs_revisions=values[np.isfinite(values)])
