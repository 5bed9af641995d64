"""The tasks that write a run's outputs: each shard's part files, then the commit with the manifest."""
from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core import interrupt
from lstm_core.backtest import history_frame
from lstm_core.config import ForecastConfig
from lstm_core.location import is_storage_failure
from lstm_core.manifest import SKIPPED_IN_SUMMARY
from lstm_core.outputs import RunWriter
from lstm_core.realised import earlier_predictions, realised_metrics, realised_sums
from lstm_core.records import (Manifest, Outputs, RealisedScores, RealisedTotals, ShardSummary, ShardTotals,
                               SkippedEntry)
from lstm_core.shard_plan import ShardSpec
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, is_transient, retry_transient
from tasks.data import Prepared
from tasks.modelling import Forecasts, Scored


@task(name="write_outputs", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def write_outputs(writer: RunWriter, forecasts: Forecasts, evaluation: Scored, prepared: Prepared,
                  shard: ShardSpec, overall_rows: bool = True, realised: RealisedScores | None = None
                  ) -> ShardSummary:
    """Write one shard's predictions, metrics, quarantine and backtest as its part files of the run's
    partition (and its realised accuracy of earlier runs, when `realised` holds some).

    Returns the shard's summary (counts and metric totals, no data). `overall_rows`: keep the
    shard's overall metric rows (a run of one shard, whose overall is the run's); a sharded
    run writes the overall rows once, at commit. A retry rewrites the same files.
    """
    logger = get_run_logger()
    interrupt.check()  # a stopped run writes nothing more (what it wrote is never committed)
    metrics = evaluation.metrics if overall_rows else evaluation.metrics[evaluation.metrics["series_id"].notna()]
    part = shard.index
    paths = {}
    interrupt.check()  # and between the files: a stop request leaves the rest unwritten
    paths["predictions"] = writer.write("predictions", forecasts.future, part)
    interrupt.check()
    paths["metrics"] = writer.write("metrics", metrics, part)
    interrupt.check()
    paths["quarantine"] = writer.write("quarantine", prepared.skipped_frame(), part)
    interrupt.check()
    paths["backtest"] = writer.write("backtest", forecasts.backtest.frame, part)
    if realised is not None and len(realised.table):
        table = realised.table if overall_rows else realised.table[realised.table["series_id"].notna()]
        paths["realised"] = writer.write("realised", table, part)
    if forecasts.series_by_model:
        logger.info("%s: series per serving model: %s", shard.name,
                    ", ".join(f"{k} {v}" for k, v in sorted(forecasts.series_by_model.items())))
    logger.info("%s: wrote %d prediction rows, %d metric rows, %d backtest rows, %d quarantined series%s",
                shard.name, len(forecasts.future), len(metrics), len(forecasts.backtest.frame), len(prepared.skipped),
                f", {len(realised.table)} realised accuracy rows" if realised and len(realised.table) else "")
    return shard_summary(shard, forecasts, evaluation, prepared, paths, realised)


def shard_summary(shard: ShardSpec, forecasts: Forecasts, evaluation: Scored, prepared: Prepared,
                  paths: dict[str, str], realised: RealisedScores | None = None) -> ShardSummary:
    """What the flow keeps of a written shard: counts, metric totals for the overall means, no frames."""
    return ShardSummary(
        shard=shard.index,
        group=shard.group,
        source=shard.url or "input",
        series_planned=shard.n_series,
        rows_read=int(prepared.rows_read),
        series_read=int(prepared.series_read),
        series_forecast=int(prepared.all_series.n_series),
        series_by_model=dict(forecasts.series_by_model),
        series_skipped=len(prepared.skipped),
        points_filled=int(prepared.filled_points),
        prediction_rows=int(len(forecasts.future)),
        fingerprint=prepared.fingerprint,
        skipped=[SkippedEntry.of(s) for s in prepared.skipped[:SKIPPED_IN_SUMMARY]],
        backtest_rows=int(len(forecasts.backtest.frame)),
        backtest_seconds=round(float(forecasts.backtest_seconds), 3),
        backtest_skipped_windows=int(len(forecasts.backtest.skipped)),
        intervals=forecasts.intervals_source,
        # the sums behind the pooled and per-window metrics: they merge over shards by addition
        totals=ShardTotals(pooled=evaluation.pooled, window=evaluation.per_window,
                           window_cutoffs=dict(evaluation.window_cutoffs)),
        realised=None if not realised or not len(realised.table) else
        RealisedTotals(totals=realised.totals, points=realised.points, rows=int(len(realised.table))),
        outputs=paths,
        coverage=[] if forecasts.coverage is None else forecasts.coverage.to_dict("records"),
        statistical_seconds=float(forecasts.statistical_seconds),
    )


@task(name="score_realised", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def score_realised(writer: RunWriter, prepared: Prepared, config: ForecastConfig,
                   earlier_runs: list[str]) -> RealisedScores | None:
    """Realised accuracy of the committed predictions of `earlier_runs` for this shard's series whose
    dates now have actuals in the input: the `realised/` table's rows, and the totals that pool over shards.
    None when there is nothing to score."""
    logger = get_run_logger()
    if not earlier_runs or prepared.panel.n_series == 0:
        return None
    skipped: list[tuple[str, str]] = []
    try:
        predictions = earlier_predictions(writer.fs, writer.root, earlier_runs, list(prepared.panel.series_ids),
                                          skipped=skipped)
    except Exception as exc:  # noqa: BLE001
        if is_transient(exc) or is_storage_failure(exc):
            raise  # storage hiccup: the task retries
        # An earlier run's files this job cannot read (another writer, a damaged file) must not fail
        # tonight's forecast: realised accuracy is a view of the past.
        logger.error("realised accuracy skipped: the earlier predictions could not be read: %s: %s",
                     type(exc).__name__, exc)
        return None
    for rid, reason in skipped:  # a damaged or planted earlier run is left out, never fatal
        logger.warning("realised accuracy: earlier run %s skipped, its predictions cannot be read: %s", rid, reason)
    if predictions.empty:
        return None
    sums = realised_sums(predictions, history_frame(prepared.panel), season_length=config.season_length)
    table = realised_metrics(sums)
    if table.empty:
        return None
    group = ("forecast_run_id", "model_version", "cutoff")
    logger.info("realised accuracy: %d forecast points of %d earlier run(s) now have actuals",
                int(sums.frame.loc[sums.frame["model"] == "forecast", "n"].sum()),
                sums.frame["forecast_run_id"].nunique())
    return RealisedScores(table=table, totals=sums.totals(group), points=sums.frame[[*group, "model", "n"]].copy())


@task(name="commit_run", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def commit_run(writer: RunWriter, manifest: Manifest, overall: pd.DataFrame | None = None,
               plots: dict[str, bytes] | None = None, realised_overall: pd.DataFrame | None = None) -> Manifest:
    """Write the overall rows of a sharded run (metrics and realised accuracy) and the plots, then the
    manifest, last: the run becomes visible. Returns the manifest as committed (with those outputs)."""
    logger = get_run_logger()
    # a copy: a retry of this task starts again from the manifest it was given
    outputs = manifest.outputs.model_copy() if manifest.outputs is not None else Outputs()
    if overall is not None:
        outputs.metrics_overall = writer.write("metrics", overall, "overall")
    if realised_overall is not None:
        outputs.realised_overall = writer.write("realised", realised_overall, "overall")
    if plots:
        outputs.plots = {name: writer.write_file(f"plots/{name}", png) for name, png in plots.items()}
    manifest = manifest.model_copy(update={"status": "succeeded", "outputs": outputs})
    interrupt.check()  # the last moment a stop request keeps the run from committing
    writer.commit(manifest)
    counts, shards = manifest.counts, manifest.shards
    logger.info("committed run %s: %s prediction rows, %s quarantined series, %s shard(s)", writer.run_id,
                counts.prediction_rows if counts else None, counts.series_skipped if counts else None,
                shards.count if shards else None)
    return manifest
