"""Helpers shared by tasks: retry only what a retry can fix."""
from __future__ import annotations

from prefect.tasks import exponential_backoff

from lstm_core.errors import DataValidationError

STORAGE_RETRIES = 4
STORAGE_RETRY_DELAYS = exponential_backoff(backoff_factor=1)


def retry_transient(task, task_run, state) -> bool:
    """Retry storage hiccups (connection errors, 5xx); never bad input, which fails the same way again."""
    try:
        state.result()
    except DataValidationError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False
