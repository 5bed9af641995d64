"""Tasks that read and shape data."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lstm_core.artifacts import data_fingerprint
from lstm_core.backtest import training_cutoff
from lstm_core.config import ForecastConfig, redact_url
from lstm_core.engine import panel_of
from lstm_core.errors import NoValidSeriesError
from lstm_core.panel import Panel
from lstm_core.sharding import ShardSpec, read_shard
from lstm_core.storage import read_series
from lstm_core.tuning import check_tuned_fits
from lstm_core.validation import SkippedSeries, ValidationResult, min_length, validate_for
from lstm_core.windows import target_bounds, validation_span, windows_per_series
from tasks.common import STORAGE_RETRIES, STORAGE_RETRY_DELAYS, retry_transient


@task(name="load_series", retries=STORAGE_RETRIES, retry_delay_seconds=STORAGE_RETRY_DELAYS,
      retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def load_series(config: ForecastConfig, shard: ShardSpec | None = None) -> pd.DataFrame:
    """The rows of one shard: its scratch file, or the input itself (all of it, or only some series)."""
    logger = get_run_logger()
    if shard is not None and shard.url is not None:
        source = shard.url
        frame = read_shard(shard.url, config.storage_options, config.column_names())
    else:
        source = config.input_url
        filters = config.filters
        if shard is not None and shard.series_ids is not None:
            filters = [*(filters or []), [config.id_column, "in", list(shard.series_ids)]]
        # Only the id, time, target and declared covariate columns are read (the group column names
        # the model and is read by the planner only).
        frame = read_series(config.input_url, config.storage_options, config.read_columns(), filters,
                            **config.input_options())
    logger.info("%sread %d rows, %d series from %s", f"{shard.name}: " if shard is not None else "", len(frame),
                frame["series_id"].nunique(), redact_url(source))
    return frame


@task(name="validate_series", cache_policy=NO_CACHE)
def validate_series(frame: pd.DataFrame, config: ForecastConfig) -> ValidationResult:
    logger = get_run_logger()
    result = validate_for(frame, config, source=redact_url(config.input_url))
    kept = result.frame["series_id"].nunique()
    logger.info("%d series valid, %d skipped, %d missing points filled", kept, len(result.skipped),
                result.filled_points)
    for s in result.skipped[:20]:
        logger.warning("skipped series %r (%s): %s", s.series_id, s.field, s.reason)
    if len(result.skipped) > 20:
        logger.warning("... and %d more skipped series (all listed in the manifest)", len(result.skipped) - 20)
    return result


@dataclass
class Prepared:
    panel: Panel  # full history of every valid series
    # what the model trains on: the history before the earliest backtest cutoff (window
    # `first_window`) of the series long enough for it; with one window, every series up to T - H
    train_panel: Panel
    fingerprint: str
    train_windows: int
    validation_windows: int
    # what validation found, kept so the validated frame itself can be released
    skipped: list[SkippedSeries] = field(default_factory=list)
    filled_points: int = 0
    rows_read: int = 0
    first_window: int = 0

    @property
    def series_read(self) -> int:
        return int(self.panel.n_series) + len(self.skipped)

    def skipped_frame(self) -> pd.DataFrame:
        return ValidationResult(pd.DataFrame(), self.skipped).skipped_frame()


NO_VALID_SERIES = "no valid series left to forecast (all were skipped; see the manifest for reasons)"


def no_valid_series(skipped: list[SkippedSeries], config: ForecastConfig | None = None) -> NoValidSeriesError:
    """The error of a run whose series were all skipped: one line with the commonest reason and an example."""
    if not skipped:
        return NoValidSeriesError(f"no valid series left to forecast: the input has none"
                                  f"{f' of at least {min_length(config)} points' if config else ''}")
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
    """Pack the valid series into panels. `allow_empty`: a shard whose series were all skipped is no error."""
    logger = get_run_logger()
    if validated.frame.empty and not allow_empty:
        raise no_valid_series(validated.skipped, config)
    panel = panel_of(validated, config)
    check_tuned_fits(config, panel)  # tuned: latest: a tuned window the data cannot use is refused, not clipped
    first_window, train_panel = training_cutoff(panel, config)
    chunk = config.chunk_length
    span = validation_span(config.validation_steps, chunk)
    lo, hi = target_bounds(train_panel, config.window, span, chunk)
    train_windows = int((hi - lo).clip(min=0).sum())
    val_windows = int(((train_panel.lengths - span - config.window) // chunk + span // chunk)
                      .clip(min=0, max=span // chunk).sum())
    logger.info("%d series, %d features; %d training windows available (%d sampled per series per epoch), "
                "%d validation windows; training cutoff: backtest window %d of %d (%d series)", panel.n_series,
                panel.n_features, train_windows,
                windows_per_series(train_panel, config.window, span, chunk, config.training.windows_per_series,
                                   config.training.min_windows_per_epoch), val_windows, first_window,
                config.backtest.windows, train_panel.n_series)
    return Prepared(panel, train_panel, data_fingerprint(panel), train_windows, val_windows,
                    list(validated.skipped), validated.filled_points, validated.rows_read, first_window)
