"""Helpers shared by tasks: the Prefect side of retrying only what a retry can fix.

What counts as transient, and retrying a step in place, live in lstm_core.retries (no Prefect there);
here is the task-level policy: STORAGE_RETRIES with exponential backoff, and the retry condition.
"""
from __future__ import annotations

from prefect.tasks import exponential_backoff

from lstm_core.retries import ATTEMPTS, PERMANENT, call_with_retries, is_transient

__all__ = ["STORAGE_RETRIES", "STORAGE_RETRY_DELAYS", "PERMANENT", "call_with_retries", "is_transient",
           "retry_transient"]

STORAGE_RETRIES = ATTEMPTS - 1
STORAGE_RETRY_DELAYS = exponential_backoff(backoff_factor=1)


def retry_transient(task, task_run, state) -> bool:
    """Retry storage hiccups (connection errors, 5xx); never bad input, which fails the same way again."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the task's failure, of any type, sorted by is_transient
        return is_transient(exc)
    return False
