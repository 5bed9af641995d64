"""Retry only what a retry can fix: storage hiccups, never bad input.

Three layers, innermost first: botocore retries each S3 request (standard mode, see
lstm_core.location.S3_RETRIES), s3fs retries a few more kinds of failure, and the Prefect
storage tasks retry what is still failing with exponential backoff (tasks/common.py). Bad input,
a refused or lost lease and permission errors are never retried: they fail the same way again.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from lstm_core.config import ConfigError
from lstm_core.errors import ArtifactError, DataValidationError, LeaseLostError, RunLockedError, StorageError
from lstm_core.location import is_storage_failure

ATTEMPTS = 5  # a call and four retries, as the storage tasks
PERMANENT = (DataValidationError, ConfigError, ArtifactError, LeaseLostError, RunLockedError, PermissionError)

T = TypeVar("T")
log = logging.getLogger("lstm_core.retries")


def is_transient(exc: BaseException) -> bool:
    """Storage hiccups only: a bug, bad input or a permanent storage error fails the same way again."""
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, PERMANENT):
        return False
    return is_storage_failure(exc)


def call_with_retries(fn: Callable[..., T], *args, attempts: int = ATTEMPTS, base_delay: float = 1.0,
                      what: str = "storage call", **kwargs) -> T:
    """Call `fn`, retrying transient storage failures with jittered exponential backoff.

    For a step that must not repeat the work before it (saving a model just trained). Raises the
    last error when it is not transient or the attempts are spent.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
            log.warning("%s failed (attempt %d of %d), retrying in %.1f s: %s", what, attempt, attempts, delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")
