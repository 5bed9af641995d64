"""Exceptions the engine raises; each message names the file, series and field at fault."""
from __future__ import annotations


class LstmForecastError(Exception):
    """Base class: a failure the user can act on, with a one-line reason."""


class DataValidationError(LstmForecastError):
    """The dataset as a whole cannot be used (missing column, wrong dtype, unreadable file...)."""

    def __init__(self, message: str, *, source: str | None = None, column: str | None = None,
                 series_id: str | None = None, row: int | None = None) -> None:
        self.source, self.column, self.series_id, self.row = source, column, series_id, row
        self.message = message
        where = []
        if source:
            where.append(f"file {source}")
        if column:
            where.append(f"column {column!r}")
        if series_id is not None:
            where.append(f"series {series_id!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def renamed(self, names: dict[str, str]) -> DataValidationError:
        """The same error with its column in the user's names (`names`: standard name -> input column)."""
        column = names.get(self.column, self.column) if self.column is not None else None
        return DataValidationError(self.message, source=self.source, column=column, series_id=self.series_id,
                                   row=self.row)


class ConfigError(LstmForecastError, ValueError):
    """A setting is missing or invalid; the message names it (exit code 2, like bad input)."""


class NoValidSeriesError(LstmForecastError):
    """Validation skipped every series: nothing is left to forecast.

    `skipped` lists them (objects with series_id, field and reason), so a failed run can still
    write its quarantine table and name the reasons in its manifest.
    """

    def __init__(self, message: str, skipped: list | None = None) -> None:
        self.skipped = list(skipped or [])
        # set by a sharded run whose shards already wrote the quarantine table, and where it is
        self.quarantine_written = False
        self.quarantine: str | None = None
        super().__init__(message)


class ArtifactError(LstmForecastError):
    """A saved model is missing, corrupt or incompatible with this configuration."""


class StorageError(LstmForecastError):
    """Reading or writing object storage failed; `transient` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        self.transient = transient
        super().__init__(message)


class RunLockedError(LstmForecastError):
    """Another live process holds this run id's lease: the run is refused before any work."""


class LeaseLostError(LstmForecastError):
    """This run's lease was taken over (it expired); the run stops without committing."""
