"""Tasks that plan the shards of a run and split the input into one file per shard."""
from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core import shard_plan, shard_split
from lstm_core.as_of import explain_text_time, input_filters
from lstm_core.config import ForecastConfig, redact_url
from lstm_core.errors import DataValidationError
from lstm_core.shard_plan import ShardPlan
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, retry_transient


@task(name="plan_shards", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def plan_shards(config: ForecastConfig, run_id: str) -> ShardPlan:
    """List the series (reading the id and group columns only) and assign each to a shard; infer the
    frequency from a sample of the series when it is not set."""
    logger = get_run_logger()
    scratch = config.layout().run_scratch(run_id)
    try:  # with as_of, rows after it are never read (nor counted, nor sampled for the frequency)
        plan = shard_plan.plan_shards(config.location(config.input_url), columns=config.read_columns(),
                                      filters=input_filters(config), shard_size=config.shard_size,
                                      shard_rows=config.shard_rows, shard_bytes=config.shard_bytes,
                                      group_column=config.group_column, max_train_series=config.training.max_series,
                                      scratch=scratch, infer_freq=config.freq is None,
                                      time_format=config.time_format, **config.input_options())
    except DataValidationError as exc:
        raise explain_text_time(exc, config) from None
    if plan.ignored_columns:
        logger.info("ignoring input columns no setting declares: %s (declare covariates as future_covariates, "
                    "historic_covariates or static_covariates to use them)", ", ".join(plan.ignored_columns))
    if plan.freq is not None:
        logger.info("frequency not set: the series follow %r (inferred from their timestamps)", plan.freq)
    groups = f" in {len(plan.groups)} group(s) of {config.group_column!r}" if config.group_column else ""
    logger.info("%d series (%d rows, about %.1f MiB to read)%s -> %d shard(s) of about %d series%s", plan.n_series,
                plan.rows, plan.bytes / 2**20, groups,
                plan.n_shards, round(plan.n_series / max(plan.n_shards, 1)),
                f"; splitting the input under {redact_url(scratch)}" if plan.sharded
                else "; reading the input directly")
    return plan


@task(name="split_shards", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def split_shards(config: ForecastConfig, plan: ShardPlan) -> ShardPlan:
    """One streaming pass over the input that writes each shard's rows to its own scratch file."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    split = shard_split.split_shards(config.location(config.input_url), plan, filters=input_filters(config),
                                     columns=config.read_columns(), **config.input_options())
    split.split_seconds = round(time.perf_counter() - t0, 3)
    logger.info("split %d rows into %d shard files in %.1f s", sum(s.rows or 0 for s in split.shards),
                split.n_shards, split.split_seconds)
    return split
