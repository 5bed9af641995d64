"""Object storage through fsspec: local paths, s3:// (AWS, MinIO, R2) and any other fsspec URL.

Reads go through pyarrow datasets (single files or hive-partitioned folders,
with column and partition filters). Writes put each object whole: a temp file
and a rename locally, one PUT on object stores, so no reader sees half a file.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any, NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from lstm_core.errors import DataValidationError, LstmForecastError, StorageError
from lstm_core.secrets import scrub, url_userinfo

REQUIRED = ("series_id", "ds", "y")


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
        if "retries" not in config_kwargs and not (os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS")):
            config_kwargs["retries"] = dict(S3_RETRIES)
            opts["config_kwargs"] = config_kwargs
    return opts


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **resolve_options(url, storage_options))
    return fs, path.rstrip("/") if len(path) > 1 else path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
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


# --- reading ------------------------------------------------------------
class OpenedDataset(NamedTuple):
    dataset: pads.Dataset
    fs: Any
    path: str
    shown: str  # the URL as messages may name it: without credentials
    hide: set[str]  # credentials a library may quote without the URL around them


def open_dataset(url: str, storage_options: dict[str, Any] | None = None) -> OpenedDataset:
    """The Parquet dataset (file or hive folder) at `url`, listed but not read.

    A missing, empty or unreadable input raises DataValidationError naming it; failing to reach
    storage raises StorageError (transient unless permissions are at fault).
    """
    shown = scrub(url)
    hide = url_userinfo(url)
    fs, path = filesystem(url, storage_options)
    try:
        exists = fs.exists(path)
    except Exception as exc:  # noqa: BLE001 - anything here is about reaching storage
        raise storage_error(f"input {shown}: cannot reach storage", exc, hide) from None
    if not exists:
        raise DataValidationError("input path does not exist", source=shown)
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive",
                               exclude_invalid_files=False)
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"input {shown}: cannot list the dataset", exc, hide) from None
        raise DataValidationError(f"not a readable Parquet dataset: {_arrow_reason(exc)}", source=shown) from None
    if not dataset.files:
        raise DataValidationError("dataset is empty (no Parquet files)", source=shown)
    return OpenedDataset(dataset, fs, path, shown, hide)


def read_series(
    url: str,
    storage_options: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    filters: list[list[Any]] | None = None,
) -> pd.DataFrame:
    """Read a long-format Parquet dataset (file or hive-partitioned folder) into a frame.

    Bad data raises DataValidationError naming the file and column; failures to reach storage
    raise StorageError (transient unless permissions are at fault), which callers may retry.
    """
    dataset, fs, path, shown, hide = open_dataset(url, storage_options)
    expr = pq.filters_to_expression(filters) if filters else None
    try:
        fragments = list(dataset.get_fragments(filter=expr)) if expr is not None else list(dataset.get_fragments())
    except Exception as exc:  # noqa: BLE001 - a filter naming an unknown field, for instance
        raise DataValidationError(f"bad filters {filters!r}: {_first_line(exc)}", source=shown) from None
    schemas = _physical_schemas(fs, fragments, shown)
    if columns:
        wanted = list(dict.fromkeys([*REQUIRED, *columns]))
    else:  # the files' own columns; partition keys are read only when asked for
        wanted = list(dict.fromkeys([*REQUIRED, *(schemas[0][1].names if schemas else [])]))
    missing = [c for c in wanted if c not in dataset.schema.names]
    if missing:
        raise DataValidationError(f"missing required column (have {dataset.schema.names})", source=shown,
                                  column=missing[0])
    unified = _check_schemas(schemas, wanted, dataset.schema, shown)
    if unified is not None:  # compatible differences (int vs float, time units): read as one schema
        dataset = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive",
                               exclude_invalid_files=False, schema=unified)
    try:
        table = dataset.to_table(columns=wanted, filter=expr)
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"input {shown}: read failed", exc, hide) from None
        raise _explain_read_failure(shown, fs, list(dataset.files), wanted, exc) from None
    return table.to_pandas()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _arrow_reason(exc: BaseException) -> str:
    """pyarrow nests its reasons ('Error creating dataset. ... : Parquet magic bytes not found ...'); keep the last."""
    text = _first_line(exc)
    return text.rsplit("': ", 1)[-1] if "': " in text else text


def _physical_schemas(fs, fragments, shown: str) -> list[tuple[str, pa.Schema]]:
    """Each file's own schema (its footer), read in parallel; a file that is not Parquet is named."""
    from concurrent.futures import ThreadPoolExecutor

    def one(fragment):
        try:
            return fragment.path, fragment.physical_schema
        except Exception as exc:  # noqa: BLE001
            if is_storage_failure(exc):
                raise storage_error(f"input {shown}: cannot read {scrub(fragment.path)}", exc) from None
            raise DataValidationError(f"not a readable Parquet file: {_arrow_reason(exc)}",
                                      source=scrub(fragment.path)) from None

    if len(fragments) <= 1:
        return [one(f) for f in fragments]
    with ThreadPoolExecutor(max_workers=min(8, len(fragments))) as pool:
        return list(pool.map(one, fragments))


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_timestamp(t):
        return f"timestamp (tz {t.tz})" if t.tz else "timestamp"
    return str(t)


def _check_schemas(schemas, wanted, dataset_schema: pa.Schema, shown: str) -> pa.Schema | None:
    """Refuse files whose wanted columns disagree in kind or are missing; unify compatible types.

    Returns a schema to read with when types differ compatibly (int and float, time units), else None.
    """
    if len(schemas) <= 1:
        return None
    physical = [c for c in wanted if any(c in s.names for _, s in schemas)]  # not partition keys
    ref_path, ref = schemas[0]
    differs = False
    for path, schema in schemas[1:]:
        for col in physical:
            a = ref.field(col).type if col in ref.names else None
            b = schema.field(col).type if col in schema.names else None
            if a is None or b is None:
                has, lacks = (ref_path, path) if b is None else (path, ref_path)
                raise DataValidationError(
                    f"partitions' schemas disagree: {scrub(has)} has column {col!r}, {scrub(lacks)} does not",
                    source=shown, column=col)
            if _kind(a) != _kind(b):
                raise DataValidationError(
                    f"partitions' schemas disagree: {scrub(ref_path)} has {col}: {a}, {scrub(path)} has {col}: {b}",
                    source=shown, column=col)
            differs = differs or a != b
    if not differs:
        return None
    fields = []
    for f in dataset_schema:
        if f.name in physical:
            kinds = {_kind(s.field(f.name).type) for _, s in schemas}
            kind = kinds.pop()
            if kind == "number":
                f = pa.field(f.name, pa.float64())
            elif kind.startswith("timestamp"):
                f = pa.field(f.name, pa.timestamp("ns", tz=ref.field(f.name).type.tz))
            elif kind == "string":
                f = pa.field(f.name, pa.string())
        fields.append(f)
    return pa.schema(fields)


def _explain_read_failure(shown, fs, files, wanted, exc) -> LstmForecastError:
    """Find the file whose schema or bytes are at fault, so the message can name it."""
    for f in files:
        try:
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                pf.read(columns=[c for c in wanted if c in pf.schema_arrow.names])
        except Exception as inner:  # noqa: BLE001 - any failure here means this file is unreadable
            if is_storage_failure(inner):
                return storage_error(f"input {shown}: cannot read {scrub(f)}", inner)
            return DataValidationError(f"not a readable Parquet file: {_arrow_reason(inner)}", source=scrub(f))
    return DataValidationError(f"cannot read dataset: {_arrow_reason(exc)}", source=shown)


# --- writing ------------------------------------------------------------
def put_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write one object whole (temp + rename locally; a single PUT on object stores).

    A failure raises StorageError naming the object (permanent for permission problems).
    """
    try:
        if is_local(fs):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            fs.pipe_file(path, data)
    except Exception as exc:  # noqa: BLE001 - name the object whatever the library raised
        raise storage_error(f"cannot write {scrub(path)}", exc) from None


def parquet_bytes(df: pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, df: pd.DataFrame, schema: pa.Schema | None = None) -> None:
    put_bytes(fs, path, parquet_bytes(df, schema))


def write_json(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    put_bytes(fs, path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """Parse a JSON object; FileNotFoundError when it is absent."""
    return json.loads(fs.cat_file(path))


def remove_tree(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete `path` and everything under it, if present."""
    fs.invalidate_cache(path)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot delete {scrub(path)}", exc) from None
    fs.invalidate_cache(path)


def remove_file(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete one object, if present."""
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot delete {scrub(path)}", exc) from None
    fs.invalidate_cache(path)
