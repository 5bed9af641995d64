"""Which failures the storage tasks retry: storage hiccups only."""
from __future__ import annotations

import errno

import pyarrow as pa
import pytest

from lstm_core.config import ConfigError
from lstm_core.errors import ArtifactError, DataValidationError, LeaseLostError, RunLockedError, StorageError
from lstm_core.location import storage_error
from tasks.common import call_with_retries, is_transient


@pytest.mark.parametrize("exc, transient", [
    (StorageError("cannot write x: OSError: 503"), True),
    (StorageError("cannot write x: permission denied", transient=False), False),
    (ConnectionResetError("reset by peer"), True),
    (TimeoutError("read timed out"), True),
    (OSError(errno.EIO, "We encountered an internal error"), True),
    (PermissionError("Access Denied"), False),
    (DataValidationError("missing column"), False),
    (ConfigError("bad setting"), False),
    (ArtifactError("corrupt"), False),
    (RunLockedError("already running"), False),
    (LeaseLostError("lost"), False),
    (pa.ArrowInvalid("Parquet magic bytes not found"), False),
    (KeyError("series_id"), False),  # a bug: retrying repeats it (and, in training, the training)
    (ValueError("no valid series left"), False),
])
def test_only_storage_hiccups_are_transient(exc, transient):
    assert is_transient(exc) is transient


def test_storage_error_names_the_action_and_marks_permissions_permanent():
    denied = storage_error("cannot write b/out/x.parquet", PermissionError("Access Denied"))
    assert str(denied) == "cannot write b/out/x.parquet: permission denied: Access Denied" and not denied.transient
    flaky = storage_error("cannot write b/out/x.parquet", OSError(errno.EIO, "Internal\nError"))
    assert str(flaky) == "cannot write b/out/x.parquet: OSError: [Errno 5] Internal Error" and flaky.transient


def test_call_with_retries_retries_transient_failures_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StorageError("503")
        return "saved"

    assert call_with_retries(flaky, base_delay=0.01) == "saved" and len(calls) == 3
    calls.clear()

    def denied():
        calls.append(1)
        raise StorageError("denied", transient=False)

    with pytest.raises(StorageError):
        call_with_retries(denied, base_delay=0.01)
    assert len(calls) == 1


@pytest.mark.parametrize("storage, env, tries", [
    ({}, {}, 5),  # the default: standard mode, 5 attempts (a sixth would pass: the proxy fails 6 at most)
    ({"config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 2}}}, {}, 2),
    ({}, {"AWS_MAX_ATTEMPTS": "3", "AWS_RETRY_MODE": "standard"}, 3),
], ids=["default", "storage_options retries", "AWS_MAX_ATTEMPTS"])
def test_botocore_tries_each_s3_request_five_times_unless_told_otherwise(storage, env, tries, s3_bucket, make_proxy,
                                                                          monkeypatch):
    from lstm_core.atomic import write_json
    from lstm_core.location import filesystem
    from tests.faultproxy import Rule

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    proxy = make_proxy(rules=[Rule("500", method="PUT", path=r"/retried\.json", times=6)])
    fs, root = filesystem(f"{s3_bucket}/r", {**storage, "endpoint_url": proxy.url, "skip_instance_cache": True})
    with pytest.raises(StorageError, match=r"cannot write .*/r/retried\.json") as exc:
        write_json(fs, f"{root}/retried.json", {"ok": 1})
    assert exc.value.transient  # the storage tasks may try again later
    assert proxy.by_kind == {"500": tries}
