"""Running the job as of an instant (`as_of`): only the rows it would have seen then are read.

`as_of` is an ISO 8601 timestamp. On a timestamp or date time column the readers (`lstm_core.inputs`) AND the
term `[time_column, "<=", as_of]` into the configured `filters` (`read_filters`), so pyarrow drops later rows
while reading, before any validation: a value after `as_of` is never parsed, validated, trained on, backtested
or forecast from. The literal is converted to the time column's own type as every filter value is
(`input_schema.filter_expression`): an `as_of` without an offset is read on the data's clock (naive data: as
written; zoned data: in their zone), one with an offset is compared as that instant; a date column keeps the
rows of days up to and including the date of `as_of`. A time column stored as text (CSV, Parquet strings) or
numbers is cut right after its values are parsed as validation parses them, by the same rules
(`lstm_core.as_of_text`).

A run with `as_of` (and no `run_id`) is named `asof-<instant>-<config hash>` (`as_of_run_id`): replaying the
same instant with the same settings replaces its own outputs, as a scheduled slot does, and the manifest
records `as_of`. For ordering runs and slots (`lstm_core.catchup`), an `as_of` without an offset counts as UTC.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["as_of_run_id", "as_utc", "parse_as_of", "read_filters"]


def parse_as_of(value: Any) -> datetime | None:
    """The `as_of` setting as a datetime (None stays None).

    Takes an ISO 8601 string (`2024-03-07`, `2024-03-07T02:00`, `2024-03-07T02:00:00Z`, `...+01:00`), a
    datetime, or a date (midnight; YAML reads a bare `2024-03-07` as a date).

    Raises:
        ValueError: anything else (a number, a boolean, text that is not ISO 8601): pydantic reports it as
            the setting `as_of` (ConfigError, exit 2).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO 8601 timestamp such as 2024-03-07T02:00:00Z or 2024-03-07")


def as_utc(moment: datetime) -> datetime:
    """`moment` as a plain aware UTC `datetime`; a naive one is taken as UTC (how runs and slots are ordered).

    Always the standard library's type: Prefect hands a scheduled start as a pendulum `DateTime`, whose
    comparisons with a standard `datetime` raise TypeError (naive and aware) even when both are aware."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return datetime(aware.year, aware.month, aware.day, aware.hour, aware.minute, aware.second, aware.microsecond,
                    tzinfo=UTC)


def read_filters(filters: list[list[Any]] | None, as_of: datetime | None, time_column: str) -> list[Any] | None:
    """The filters a reader applies: `filters` (pyarrow DNF: a list of terms, or a list of such lists, ORed)
    with `[time_column, "<=", as_of]` ANDed into every group. Unchanged when `as_of` is None."""
    if as_of is None:
        return filters
    term = [time_column, "<=", as_of.isoformat()]
    if not filters:
        return [term]
    nested = isinstance(filters[0], (list, tuple)) and bool(filters[0]) and isinstance(filters[0][0], (list, tuple))
    if nested:
        return [[*group, term] for group in filters]
    return [*filters, term]


def as_of_run_id(as_of: datetime, settings: Mapping[str, object]) -> str:
    """`asof-<YYYYmmddTHHMMSS>[Z]-<hash>`: the run id of a run as of `as_of` (`Z` when it has an offset, the
    instant in UTC), with the hash of its public settings except `as_of` and `run_id` (so the nights of one
    job share the hash and differ in the instant)."""
    stamp = as_of.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if as_of.tzinfo is not None \
        else as_of.strftime("%Y%m%dT%H%M%S")
    rest = {k: v for k, v in settings.items() if k not in ("as_of", "run_id")}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"asof-{stamp}-{digest}"
