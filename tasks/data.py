"""Tasks that read and shape data."""
from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core.as_of import explain_text_time, input_filters
from lstm_core.config import ForecastConfig, redact_url
from lstm_core.errors import DataValidationError, NoValidSeriesError
from lstm_core.inputs import read_series
from lstm_core.modelling import Prepared, prepare_data
from lstm_core.shard_plan import ShardSpec
from lstm_core.shard_split import read_shard
from lstm_core.validation import SkippedSeries, ValidationResult, validate_for
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, retry_transient


@task(name="load_series", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def load_series(config: ForecastConfig, shard: ShardSpec | None = None) -> pd.DataFrame:
    """The rows of one shard: its scratch file, or the input itself (all of it, or only some series)."""
    logger = get_run_logger()
    if shard is not None and shard.url is not None:
        source = shard.url
        frame = read_shard(config.location(shard.url), config.column_names())
    else:
        source = config.input_url
        filters = input_filters(config)  # with as_of, rows after it are never read
        if shard is not None and shard.series_ids is not None:
            filters = [*(filters or []), [config.id_column, "in", list(shard.series_ids)]]
        # Only the id, time, target and declared covariate columns are read (the group column names
        # the model and is read by the planner only).
        try:
            frame = read_series(config.location(config.input_url), config.read_columns(), filters,
                                **config.input_options())
        except DataValidationError as exc:
            raise explain_text_time(exc, config) from None
    logger.info("%sread %d rows, %d series from %s", f"{shard.name}: " if shard is not None else "", len(frame),
                frame["series_id"].nunique(), redact_url(source))
    return frame


@task(name="validate_series", cache_policy=NO_CACHE)
def validate_series(frame: pd.DataFrame, config: ForecastConfig) -> ValidationResult:
    """Prefect task: validate the input frame for the run (`validate_for`, keeping short series for the fallback)
    and log what was skipped. Raises DataValidationError (naming the file, column and series) on a dataset-level
    problem: a missing column, no rows, a frequency it cannot infer.
    """
    logger = get_run_logger()
    # series too short for the network (or constant) are kept: a statistical fallback serves them
    result = validate_for(frame, config, source=redact_url(config.input_url), keep_short=True)
    kept = result.frame["series_id"].nunique()
    logger.info("%d series valid, %d skipped, %d missing points filled", kept, len(result.skipped),
                result.filled_points)
    for s in result.skipped[:20]:
        logger.warning("skipped series %r (%s): %s", s.series_id, s.field, s.reason)
    if len(result.skipped) > 20:
        logger.warning("... and %d more skipped series (all listed in the manifest)", len(result.skipped) - 20)
    return result


NO_VALID_SERIES = "no valid series left to forecast (all were skipped; see the manifest for reasons)"


def no_valid_series(skipped: list[SkippedSeries], config: ForecastConfig | None = None) -> NoValidSeriesError:
    """The error of a run whose series were all skipped: one line with the commonest reason and an example."""
    if not skipped:
        return NoValidSeriesError("no valid series left to forecast: the input has none with a valid observation")
    from collections import Counter

    kinds = Counter(s.reason.split(":")[0].split(" (")[0] for s in skipped)
    kind, count = kinds.most_common(1)[0]
    example = next(s for s in skipped if s.reason.startswith(kind))
    return NoValidSeriesError(
        f"no valid series left to forecast: all {len(skipped)} were skipped ({count} for '{kind}', e.g. series "
        f"{example.series_id!r}, {example.field}: {example.reason}); every series and reason is in the quarantine "
        "table and the manifest", skipped)


@task(name="prepare_windows", cache_policy=NO_CACHE)
def prepare_windows(validated: ValidationResult, config: ForecastConfig, allow_empty: bool = False) -> Prepared:
    """Pack the valid series into panels (`lstm_core.modelling.prepare_data`). `allow_empty`: a shard whose
    series were all skipped is no error."""
    if validated.frame.empty and not allow_empty:
        raise no_valid_series(validated.skipped, config)
    return prepare_data(validated, config, log=get_run_logger())
