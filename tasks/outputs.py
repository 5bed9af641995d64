"""The tasks that write a run's outputs: each shard's part files, then the commit with the manifest."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core.engine import Evaluation
from lstm_core.outputs import RunWriter
from lstm_core.sharding import ShardSpec
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, retry_transient
from tasks.data import Prepared
from tasks.modelling import Forecasts

SKIPPED_IN_SUMMARY = 1000  # skipped series listed per shard in the manifest (all are in quarantine/)


@task(name="write_outputs", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def write_outputs(writer: RunWriter, forecasts: Forecasts, evaluation: Evaluation, prepared: Prepared,
                  shard: ShardSpec, overall_rows: bool = True) -> dict[str, Any]:
    """Write one shard's predictions, metrics and quarantine as its part files of the run's partition.

    Returns the shard's summary (counts and metric sums, no data). `overall_rows`: keep the
    shard's overall metric rows (a run of one shard, whose overall is the run's); a sharded
    run writes the overall rows once, at commit. A retry rewrites the same files.
    """
    logger = get_run_logger()
    metrics = evaluation.metrics if overall_rows else evaluation.metrics[evaluation.metrics["series_id"].notna()]
    part = shard.index
    paths = {
        "predictions": writer.write("predictions", forecasts.future, part),
        "metrics": writer.write("metrics", metrics, part),
        "quarantine": writer.write("quarantine", prepared.skipped_frame(), part),
    }
    logger.info("%s: wrote %d prediction rows, %d metric rows, %d quarantined series", shard.name,
                len(forecasts.future), len(metrics), len(prepared.skipped))
    return shard_summary(shard, forecasts, evaluation, prepared, paths)


def shard_summary(shard: ShardSpec, forecasts: Forecasts, evaluation: Evaluation, prepared: Prepared,
                  paths: dict[str, str]) -> dict[str, Any]:
    """What the flow keeps of a written shard: counts, metric sums for the overall means, no frames."""
    m = evaluation.metrics
    per_series = m[m["series_id"].notna()]
    sums: dict[str, dict[str, list[float]]] = {}
    for (model, metric), g in per_series.groupby(["model", "metric"], sort=False):
        v = g["value"].to_numpy(dtype=np.float64)
        # np.nanmean is nansum / count of non-NaN; keeping both lets the flow pool shards exactly so
        sums.setdefault(str(model), {})[str(metric)] = [float(np.nansum(v)), int((~np.isnan(v)).sum()),
                                                        bool(np.isfinite(v).any())]
    return {
        "shard": shard.index,
        "group": shard.group,
        "source": shard.url or "input",
        "series_planned": shard.n_series,
        "rows_read": int(prepared.rows_read),
        "series_read": int(prepared.series_read),
        "series_forecast": int(prepared.panel.n_series),
        "series_skipped": len(prepared.skipped),
        "points_filled": int(prepared.filled_points),
        "prediction_rows": int(len(forecasts.future)),
        "fingerprint": prepared.fingerprint,
        "skipped": [s.__dict__ for s in prepared.skipped[:SKIPPED_IN_SUMMARY]],
        "metric_sums": sums,
        "outputs": paths,
    }


def overall_metrics(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """Overall rows (series_id null) pooled over all shards: the mean over every series, as unsharded."""
    pooled: dict[tuple[str, str], list[float]] = {}
    for s in summaries:
        for model, per_metric in s["metric_sums"].items():
            for metric, (total, count, finite) in per_metric.items():
                acc = pooled.setdefault((model, metric), [0.0, 0, False])
                acc[0] += total
                acc[1] += count
                acc[2] = acc[2] or finite
    rows = [{"series_id": None, "metric": metric, "value": (t / c) if (finite and c) else float("nan"),
             "model": model} for (model, metric), (t, c, finite) in pooled.items()]
    frame = pd.DataFrame(rows, columns=["series_id", "metric", "value", "model"])
    return frame.astype({"series_id": "string", "metric": "string", "value": "float64", "model": "string"})


@task(name="commit_run", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def commit_run(writer: RunWriter, manifest: dict[str, Any], overall: pd.DataFrame | None = None,
               plots: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Write the overall metric rows of a sharded run and the plots, then the manifest, last: the run
    becomes visible."""
    logger = get_run_logger()
    outputs = dict(manifest.get("outputs") or {})
    if overall is not None:
        outputs["metrics_overall"] = writer.write("metrics", overall, "overall")
    if plots:
        outputs["plots"] = {name: writer.write_file(f"plots/{name}", png) for name, png in plots.items()}
    manifest = {**manifest, "status": "succeeded", "outputs": outputs}
    writer.commit(manifest)
    counts = manifest.get("counts", {})
    logger.info("committed run %s: %s prediction rows, %s quarantined series, %s shard(s)", writer.run_id,
                counts.get("prediction_rows"), counts.get("series_skipped"), manifest.get("shards", {}).get("count"))
    return manifest
