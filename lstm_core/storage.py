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
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from lstm_core.errors import DataValidationError, StorageError

REQUIRED = ("series_id", "ds", "y")


def resolve_options(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Storage options for `url`; for s3:// an endpoint may come from AWS_ENDPOINT_URL(_S3)."""
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
    return opts


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **resolve_options(url, storage_options))
    return fs, path.rstrip("/") if len(path) > 1 else path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


# --- reading ------------------------------------------------------------
def read_series(
    url: str,
    storage_options: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    filters: list[list[Any]] | None = None,
) -> pd.DataFrame:
    """Read a long-format Parquet dataset (file or hive-partitioned folder) into a frame."""
    fs, path = filesystem(url, storage_options)
    try:
        exists = fs.exists(path)
    except (OSError, PermissionError) as exc:
        raise StorageError(f"input {url}: cannot reach storage: {type(exc).__name__}: {exc}") from None
    if not exists:
        raise DataValidationError("input path does not exist", source=url)
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive",
                               exclude_invalid_files=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"not a readable Parquet dataset: {_first_line(exc)}", source=url) from None
    files = list(dataset.files)
    if not files:
        raise DataValidationError("dataset is empty (no Parquet files)", source=url)
    if columns:
        wanted = list(dict.fromkeys([*REQUIRED, *columns]))
    else:  # the files' own columns; partition keys are read only when asked for
        try:
            wanted = next(iter(dataset.get_fragments())).physical_schema.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise _explain_read_failure(url, fs, files, list(REQUIRED), exc) from None
    missing = [c for c in dict.fromkeys([*REQUIRED, *wanted]) if c not in dataset.schema.names]
    if missing:
        raise DataValidationError(f"missing required column (have {dataset.schema.names})", source=url,
                                  column=missing[0])
    expr = pq.filters_to_expression(filters) if filters else None
    try:
        table = dataset.to_table(columns=wanted, filter=expr)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        raise _explain_read_failure(url, fs, files, wanted, exc) from None
    return table.to_pandas()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _explain_read_failure(url, fs, files, wanted, exc) -> DataValidationError:
    """Find the file whose schema or bytes are at fault, so the message can name it."""
    reference = None
    for f in files:
        try:
            schema = pq.read_schema(fs.open(f, "rb"))
        except Exception as inner:  # noqa: BLE001 - any failure here means this file is unreadable
            return DataValidationError(f"not a readable Parquet file: {_first_line(inner)}", source=f)
        types = {n: schema.field(n).type for n in wanted if n in schema.names}
        if reference is None:
            reference = (f, types)
        elif types != reference[1]:
            diff = [n for n in types if reference[1].get(n) != types[n]]
            col = diff[0] if diff else None
            return DataValidationError(
                f"partitions' schemas disagree: {reference[0]} has {col}: {reference[1].get(col)}, "
                f"{f} has {col}: {types.get(col)}", source=url, column=col)
    return DataValidationError(f"cannot read dataset: {_first_line(exc)}", source=url)


# --- writing ------------------------------------------------------------
def put_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write one object whole (temp + rename locally; a single PUT on object stores)."""
    if is_local(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


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
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


def remove_tree(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete `path` and everything under it, if present."""
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    fs.invalidate_cache(path)
