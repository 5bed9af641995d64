"""The task that writes a run's outputs and commits them with the manifest."""
from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core.engine import Evaluation
from lstm_core.outputs import RunWriter
from lstm_core.validation import ValidationResult
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, retry_transient


@task(name="write_outputs", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def write_outputs(writer: RunWriter, predictions: pd.DataFrame, evaluation: Evaluation,
                  validated: ValidationResult, manifest: dict[str, Any],
                  plots: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Write predictions, metrics and quarantine under the run's partition, the plots, then the manifest."""
    logger = get_run_logger()
    writer.begin()  # a retry or re-run starts from a clean partition
    paths = {
        "predictions": writer.write("predictions", predictions),
        "metrics": writer.write("metrics", evaluation.metrics),
        "quarantine": writer.write("quarantine", validated.skipped_frame()),
    }
    if plots:
        paths["plots"] = {name: writer.write_file(f"plots/{name}", png) for name, png in plots.items()}
    manifest = {**manifest, "status": "succeeded", "outputs": paths}
    writer.commit(manifest)
    logger.info("committed run %s: %d prediction rows, %d metric rows, %d quarantined series",
                writer.run_id, len(predictions), len(evaluation.metrics), len(validated.skipped))
    return manifest
