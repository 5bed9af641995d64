"""Where data live: a URL bound to the filesystem that reaches it, and how reaching it fails.

Part of what `lstm_core/storage.py` held (issue 24 step 4), split by concern:

- `lstm_core.location` (this module): `Location`, fsspec filesystems and their options (S3 endpoint,
  region and retries from the environment), `join` for paths, and the storage errors
  (`is_storage_failure`, `storage_error`) every reader and writer maps failures with;
- `lstm_core.inputs`: reading the long-format input (`read_series`, `check_input`, the streaming scan
  the shard planner uses), with `lstm_core.input_schema` (files' schemas read as one, typed filters,
  naming the file at fault) and `lstm_core.input_size` (the bytes a read takes, from Parquet footers);
- `lstm_core.atomic`: writes that put each object whole, removals that never follow links, and the
  check that the output root can be written.

Local paths, s3:// (AWS, MinIO, R2) and any other fsspec URL are reached the same way.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from lstm_core.errors import StorageError
from lstm_core.secrets import scrub, with_environment_secrets, without_secrets

# botocore's own retries (standard mode: connection errors, 5xx, throttling, with jittered backoff)
# handle storage hiccups first; s3fs retries a few more kinds on top (a body cut mid-read,
# SlowDown; its class attribute S3FileSystem.retries, 5); what still fails surfaces as
# StorageError and the Prefect storage tasks retry it with backoff.
S3_RETRIES = {"mode": "standard", "total_max_attempts": 5}  # 1 try + 4 retries
PERMANENT_ERROR_NAMES = {"ParamValidationError", "InvalidBucketName", "NoCredentialsError", "PartialCredentialsError"}


def resolve_options(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Storage options for `url`; for s3:// an endpoint may come from AWS_ENDPOINT_URL(_S3).

    Retries are configured unless the options (or AWS_RETRY_MODE / AWS_MAX_ATTEMPTS) say otherwise.
    """
    opts = dict(storage_options or {})
    if url.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client_kwargs = dict(opts.get("client_kwargs") or {})
        if endpoint and "endpoint_url" not in opts and "endpoint_url" not in client_kwargs:
            opts["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region and "region_name" not in client_kwargs:
            client_kwargs["region_name"] = region
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        config_kwargs = dict(opts.get("config_kwargs") or {})
        env_retries = os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS")
        if "retries" not in config_kwargs and not env_retries:
            config_kwargs["retries"] = dict(S3_RETRIES)
            opts["config_kwargs"] = config_kwargs
    return opts


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec's filesystem for `url` (options resolved by `resolve_options`) and the path on it, without a
    trailing '/'. Code that reads or writes takes a `Location` instead; this is what a Location calls."""
    fs, path = fsspec.core.url_to_fs(url, **resolve_options(url, storage_options))
    return fs, path.rstrip("/") if len(path) > 1 else path


def join(base: str, *parts: str) -> str:
    """`base` and `parts` joined by single '/' (a URL or a path; the parts' own leading/trailing '/' dropped)."""
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


@dataclass(frozen=True, eq=False)
class Location:
    """A URL bound to the filesystem that reaches it: the one place storage options are applied.

    Functions that read or write storage take a Location, never a (url, storage_options) pair; a
    configuration makes them (`ForecastConfig.location`). `fs` and `path` are fsspec's filesystem and
    the path on it (trailing '/' dropped), made on first use. Pickled (to a Dask worker), a Location
    leaves its secret options behind and takes them from the receiving process's environment, as
    ForecastConfig does.
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, where: str | Location, storage_options: Mapping[str, Any] | None = None) -> Location:
        """`where` as a Location: a URL gets `storage_options` (none by default); a Location is kept."""
        return where if isinstance(where, Location) else cls(str(where), dict(storage_options or {}))

    @cached_property
    def _reached(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(self.url, dict(self.options))

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem that reaches `url` (made on first use)."""
        return self._reached[0]

    @property
    def path(self) -> str:
        """The path of `url` on `fs`, without a trailing '/'."""
        return self._reached[1]

    @property
    def shown(self) -> str:
        """The URL as messages may name it: without credentials."""
        return scrub(self.url)

    def child(self, *parts: str) -> Location:
        """The Location of `parts` below this one, on the same storage."""
        return Location(join(self.url, *parts), self.options)

    def with_url(self, url: str) -> Location:
        """Another URL reached with the same storage options (a shard of this run's scratch, say)."""
        return Location(url, self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.url, dict(self.options)) == (other.url, dict(other.options))

    def __hash__(self) -> int:
        return hash(self.url)

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        return (_relocated, (self.url, without_secrets(dict(self.options))))

    def __str__(self) -> str:
        return self.shown


def _relocated(url: str, options: dict[str, Any]) -> Location:
    """A Location rebuilt in another process: its secret options from this process's environment."""
    return Location(url, with_environment_secrets(options))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (where writes guard against symbolic links: `lstm_core.atomic`)."""
    return isinstance(fs, LocalFileSystem)


def is_storage_failure(exc: BaseException) -> bool:
    """True when `exc` came from reaching storage (network, 5xx, permissions), not from the bytes read.

    pyarrow's own errors about file contents are ArrowException or plain OSError without errno;
    fsspec/s3fs/botocore failures are typed (ConnectionError, PermissionError, OSError with errno...).
    """
    if isinstance(exc, StorageError):
        return True
    if isinstance(exc, pa.ArrowException):
        return False
    if isinstance(exc, (PermissionError, ConnectionError, TimeoutError, FileNotFoundError)):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs", "urllib3", "requests", "fsspec", "asyncio"))


def storage_error(action: str, exc: BaseException, hide: tuple[str, ...] | list[str] = ()) -> StorageError:
    """A one-line StorageError for a failed `action`, marked permanent for permission problems.

    The library's message is kept whole (on one line) but scrubbed of URL credentials and `hide`.
    """
    if isinstance(exc, StorageError):
        return exc
    # Retrying cannot fix a denied permission or a request botocore refuses to send (a bad bucket name).
    permanent = isinstance(exc, PermissionError) or type(exc).__name__ in PERMANENT_ERROR_NAMES
    detail = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip()) or type(exc).__name__
    if len(detail) > 400:
        detail = detail[:400] + "..."
    kind = "permission denied" if isinstance(exc, PermissionError) else type(exc).__name__
    return StorageError(scrub(f"{action}: {kind}: {detail}", hide), transient=not permanent)
