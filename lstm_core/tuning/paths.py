"""Where a study's files live: `<output_url>/tuning/study=<name>/` (the output contract's tuning rows)."""
from __future__ import annotations

import fsspec

from lstm_core.config import ForecastConfig

STUDY_FILES = ("journal.log", "trials.parquet", "best.yaml", "best.json", "objective.png")


def study_url(config: ForecastConfig, study: str | None = None) -> str:
    """Where a study's results live: `<output_url>/tuning/study=<name>` (`study`, default `tuning.study`)."""
    return config.layout().study(study or config.tuning.study)


def study_fs(config: ForecastConfig) -> fsspec.AbstractFileSystem:
    """The filesystem of the output URL, with the configured storage options."""
    return config.location(config.output_url).fs


def write_root(config: ForecastConfig) -> str | None:
    """The `root` local writes are confined to (the output folder), or None on object storage."""
    from lstm_core.location import is_local

    return config.output_url if is_local(study_fs(config)) else None
