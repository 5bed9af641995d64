"""Object storage through fsspec: local paths, s3:// (AWS, MinIO, R2) and any other fsspec URL.

Reads go through pyarrow datasets (Parquet or CSV, single files or hive-partitioned folders,
with column projection and partition filters). Types that differ compatibly between files (int and
float, decimals, time units, dates, all-null columns) are read as one schema, the same way whether
the input is read whole or split into shards. Writes put each object whole: a temp file and a rename
locally, one PUT on object stores, so no reader sees half a file.
"""
from __future__ import annotations

import errno
import io
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, NamedTuple, Sequence

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from lstm_core.errors import DataValidationError, LstmForecastError, StorageError
from lstm_core.secrets import scrub, url_credentials, without_secrets

REQUIRED = ("series_id", "ds", "y")
# Cells read as missing in numeric columns (target, numeric covariates, numeric statics): pandas' own
# list, the dashes spreadsheets print for "nothing", and Excel's #N/A. Other text (`#VALUE!`,
# `1,234.50` without `thousands`) is no number: refused, naming the row (setting `missing_values`).
DEFAULT_MISSING = ("", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "none", "<NA>",
                   "#N/A", "#N/A N/A", "#NA", "-", "--", "?")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.zstd", ".csv.lz4")
# Spark writes INT96 timestamps; read as microseconds, so a 9999-12-31 placeholder does not overflow.
PARQUET = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(coerce_int96_timestamp_unit="us"))


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
    def of(cls, where: "str | Location", storage_options: Mapping[str, Any] | None = None) -> "Location":
        """`where` as a Location: a URL gets `storage_options` (none by default); a Location is kept."""
        return where if isinstance(where, Location) else cls(str(where), dict(storage_options or {}))

    @cached_property
    def _reached(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(self.url, dict(self.options))

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._reached[0]

    @property
    def path(self) -> str:
        return self._reached[1]

    @property
    def shown(self) -> str:
        """The URL as messages may name it: without credentials."""
        return scrub(self.url)

    def child(self, *parts: str) -> "Location":
        """The Location of `parts` below this one, on the same storage."""
        return Location(join(self.url, *parts), self.options)

    def with_url(self, url: str) -> "Location":
        """Another URL reached with the same storage options (a shard of this run's scratch, say)."""
        return Location(url, self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.url, dict(self.options)) == (other.url, dict(other.options))

    def __hash__(self) -> int:
        return hash(self.url)

    def __reduce__(self):
        return (_relocated, (self.url, without_secrets(dict(self.options))))

    def __str__(self) -> str:
        return self.shown


def _relocated(url: str, options: dict[str, Any]) -> Location:
    """A Location rebuilt in another process: its secret options from this process's environment."""
    from lstm_core.config import with_environment_secrets  # noqa: PLC0415 - config imports this module

    return Location(url, with_environment_secrets(options))


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


def is_csv_path(path: str) -> bool:
    return path.lower().endswith(CSV_SUFFIXES)


def file_format(input_format: str, column_types: dict[str, pa.DataType] | None = None, delimiter: str = ","):
    """The pyarrow file format to read with. CSV: the named columns get the given types (the declared
    columns as text: `validation` reads numbers, placeholders and dates from it the same way whatever
    file they came from) instead of per-file guesses that could disagree; only an empty cell is null
    (the reader's own placeholders such as `NA` are left as text, so an id `NA` stays an id)."""
    if input_format == "csv":
        return pads.CsvFileFormat(
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types=dict(column_types or {}), strings_can_be_null=True,
                                                 null_values=[""], quoted_strings_can_be_null=True))
    return PARQUET


def open_dataset(source: Location | str, input_format: str = "auto",
                 column_types: dict[str, pa.DataType] | None = None, delimiter: str = ",") -> OpenedDataset:
    """The dataset (Parquet or CSV; file or hive folder) at `source`, listed but not read.

    `input_format` 'auto': CSV when the path, or every file of the folder, ends in .csv (optionally
    compressed), else Parquet. Hive partition values (`series_id=007/`, `ds=2023-01-01/`) are read as
    text, as a CSV cell is: an id keeps its leading zeros, a date its form. A missing, empty or unreadable
    input raises DataValidationError naming it; failing to reach storage raises StorageError (transient
    unless permissions are at fault).
    """
    if input_format not in ("auto", "parquet", "csv"):
        raise ValueError(f"input_format must be auto, parquet or csv, not {input_format!r}")
    source = Location.of(source)
    shown, hide = source.shown, url_credentials(source.url)
    fs, path = source.fs, source.path
    try:
        exists = fs.exists(path)
    except Exception as exc:  # noqa: BLE001 - anything here is about reaching storage
        raise storage_error(f"input {shown}: cannot reach storage", exc, hide) from None
    if not exists:
        raise DataValidationError("input path does not exist", source=shown)
    fmt = input_format
    if fmt == "auto":
        try:
            fmt = "csv" if _looks_csv(fs, path) else "parquet"
        except Exception as exc:  # noqa: BLE001 - listing is about reaching storage
            raise storage_error(f"input {shown}: cannot list the dataset", exc, hide) from None
    kind = "CSV" if fmt == "csv" else "Parquet"
    try:
        dataset = pads.dataset(path, filesystem=fs, format=file_format(fmt, column_types, delimiter),
                               partitioning="hive", exclude_invalid_files=False)
        keys = _partition_keys(list(dataset.files), path)
        if any(not pa.types.is_string(dataset.schema.field(k).type) for k in keys if k in dataset.schema.names):
            # pyarrow guesses a type per partition key (007 -> int32 7): read every key as text instead
            dataset = pads.dataset(path, filesystem=fs, format=dataset.format, exclude_invalid_files=False,
                                   partitioning=pads.HivePartitioning(pa.schema([(k, pa.string()) for k in keys])))
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"input {shown}: cannot list the dataset", exc, hide) from None
        raise DataValidationError(f"not a readable {kind} dataset: {_arrow_reason(exc)}", source=shown) from None
    if not dataset.files:
        raise DataValidationError(f"dataset is empty (no {kind} files)", source=shown)
    return OpenedDataset(dataset, fs, path, shown, hide)


def _partition_keys(files: list[str], root: str) -> list[str]:
    """The hive keys of the folders between `root` and each file (`series_id=007/ds=2023-01-01/x.parquet`),
    in folder order."""
    keys: dict[str, None] = {}
    prefix = root.rstrip("/") + "/"
    for f in files:
        if f.startswith(prefix):
            for part in f[len(prefix):].split("/")[:-1]:
                if "=" in part:
                    keys.setdefault(part.split("=", 1)[0], None)
    return list(keys)


def _looks_csv(fs, path: str) -> bool:
    """A .csv file, or a folder whose data files (not _ or . names, as pyarrow skips them) all are."""
    if is_csv_path(path):
        return True
    if not fs.isdir(path):
        return False
    files = [f for f in fs.find(path) if not any(p.startswith(("_", ".")) for p in f[len(path):].split("/") if p)]
    return bool(files) and all(is_csv_path(f) for f in files)


def column_types(names: dict[str, str], numeric: list[str] | tuple[str, ...] = (),
                 text: list[str] | tuple[str, ...] = ()) -> dict[str, pa.DataType]:
    """CSV column types: every declared column as text (id, time, target, `numeric` covariates and the
    `text` ones); `validation` turns the target and numeric columns into numbers with the run's
    placeholders and decimal settings, naming the row of a value that is not one."""
    return {c: pa.string() for c in dict.fromkeys([names["series_id"], names["ds"], names["y"], *numeric, *text])}


def check_input(source: Location | str, input_format: str = "auto",
                required: list[str] | tuple[str, ...] | None = None, delimiter: str = ",",
                declared: Mapping[str, str] | None = None) -> OpenedDataset:
    """Cheap check that the input exists and is readable: list it, read the first file's schema, and
    find the `required` columns (CSV split on `delimiter`) and the `declared` ones (column -> the setting
    that declares it: a covariate, the group column), by the user's names. No rows are read. Raises
    DataValidationError (naming the column, and the setting for a declared one) or StorageError."""
    opened = open_dataset(source, input_format, delimiter=delimiter)
    fragment = next(iter(opened.dataset.get_fragments()), None)
    if fragment is not None:
        try:
            names = fragment.physical_schema.names
        except Exception as exc:  # noqa: BLE001
            if is_storage_failure(exc):
                raise storage_error(f"input {opened.shown}: cannot read {scrub(fragment.path)}", exc,
                                    opened.hide) from None
            raise DataValidationError(f"not a readable file: {_arrow_reason(exc)}", source=scrub(fragment.path)) from None
        have = set(opened.dataset.schema.names) | set(names)
        for col in required or ():
            if col not in have:
                raise DataValidationError(f"missing required column (have {sorted(have)})", source=opened.shown,
                                          column=col)
        for col, setting in (declared or {}).items():
            if col not in have:
                raise DataValidationError(f"declared in setting {setting!r} but not in the input (have "
                                          f"{sorted(have)}): fix the name there or in the data", source=opened.shown,
                                          column=col)
    return opened


def check_output(target: Location | str, setting: str = "output_url") -> None:
    """Cheap check, before any work, that the run can write under `target` (the output root): refuses a
    path that is a file (or lies under one) and, locally, a folder this process cannot write (ConfigError
    naming `setting`); raises StorageError when the storage cannot be reached (transient: retry later).
    Nothing is left written. On object stores a write permission shows only at the first write (a refused PUT
    fails the run then: StorageError, permanent)."""
    from lstm_core.errors import ConfigError  # noqa: PLC0415

    target = Location.of(target)
    hide = url_credentials(target.url)  # what a library may quote without the URL around it
    try:
        fs, path = target.fs, target.path
    except Exception as exc:  # noqa: BLE001 - a filesystem that cannot even be set up
        if is_storage_failure(exc):
            raise storage_error(f"output {target.shown}: cannot reach storage", exc, hide) from None
        raise
    shown = target.shown
    if is_local(fs):
        where = os.path.abspath(path)
        if os.path.exists(where) and not os.path.isdir(where):
            raise ConfigError(f"setting {setting!r}: {shown} is a file, not a folder: give a folder (the run writes "
                              f"predictions/, metrics/, runs/ ... under it)")
        probe = where
        while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise ConfigError(f"setting {setting!r}: {shown} cannot be created: {probe} is a file, not a folder")
        # Try it: a folder made and removed at once where the output (or its first missing parent) would be
        # created. Permission bits alone do not say it (root, ACLs, read-only or special file systems).
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".lstm-forecast-write-check-", dir=probe))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(f"setting {setting!r}: {shown} is not writable ({probe}: {why})") from None
        return
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return  # not there yet: the run creates it
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"output {shown}: cannot reach storage", exc, hide) from None
        raise
    if info.get("type") == "file":
        raise ConfigError(f"setting {setting!r}: {shown} is a file (an object), not a folder: give a prefix the run "
                          f"can write predictions/, metrics/, runs/ ... under")


# Longest series id (or group value) accepted, in bytes: listing the series decodes the id column batch by
# batch, so a file of huge ids is refused before it is read (ids are names, not data).
MAX_ID_BYTES = 4096


def parquet_read_bytes(metadata: pq.FileMetaData, columns: Sequence[str],
                       longest: Mapping[tuple[int, str], int] | None = None) -> int:
    """Bytes the named columns of a Parquet file take once read, from its footer (nothing decoded).

    Each column chunk counts its uncompressed size. A dictionary-encoded string column's encoded size
    hides how often a long value repeats (a few KB can decode to GBs), so it counts at least one
    value of its longest length per row (plus Arrow's 4-byte offset): `longest[(row group, column)]`
    when given (`parquet_longest_values` measures it), else what its statistics show. Without either,
    only the encoded size is known: pyarrow writes no statistics for values over 4 KB, so a caller that
    bounds memory measures them (the footer's row counts can be forged too: see lstm_core.sharding).
    """
    wanted = set(columns)
    total = 0
    for rg in range(metadata.num_row_groups):
        group = metadata.row_group(rg)
        for ci in range(group.num_columns):
            chunk = group.column(ci)
            path = chunk.path_in_schema
            if path not in wanted and path.split(".", 1)[0] not in wanted:
                continue
            size = chunk.total_uncompressed_size
            if chunk.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY") and chunk.has_dictionary_page:
                length = (longest or {}).get((rg, path))
                if length is None:
                    length = _stats_longest(chunk)
                if length is not None:
                    size = max(size, chunk.num_values * (length + 4))
            total += size
    return total


def _stats_longest(chunk: Any) -> int | None:
    stats = chunk.statistics if chunk.is_stats_set else None
    if stats is not None and stats.has_min_max:
        return max(len(_utf8(stats.min)), len(_utf8(stats.max)))
    return None


def parquet_longest_values(source: Any, columns: Sequence[str]) -> dict[tuple[int, str], int]:
    """The longest value, in bytes, of each dictionary-encoded string column chunk of `columns`:
    {(row group, column): bytes}. From the chunk's statistics when they hold a min and max; otherwise
    measured by decoding that chunk's dictionary only (each distinct value once, an index per row), never
    the values row by row: what a file without statistics (pyarrow writes none for values over 4 KB) will
    decode to is known before it is read."""
    import pyarrow.compute as pc  # noqa: PLC0415

    # `source`: a path or an open file; its string columns read as dictionaries (the values once each)
    parquet_file = pq.ParquetFile(source, read_dictionary=list(columns))
    metadata = parquet_file.metadata
    wanted = set(columns)
    out: dict[tuple[int, str], int] = {}
    for rg in range(metadata.num_row_groups):
        group = metadata.row_group(rg)
        for ci in range(group.num_columns):
            chunk = group.column(ci)
            path = chunk.path_in_schema
            if path not in wanted or chunk.physical_type != "BYTE_ARRAY" or not chunk.has_dictionary_page:
                continue
            length = _stats_longest(chunk)
            if length is None:
                column = parquet_file.read_row_group(rg, columns=[path]).column(0)
                lengths = [pc.max(pc.binary_length(c.dictionary)).as_py() or 0 for c in column.chunks
                           if pa.types.is_dictionary(c.type) and len(c.dictionary)]
                plain = [pc.max(pc.binary_length(c)).as_py() or 0 for c in column.chunks
                         if not pa.types.is_dictionary(c.type) and len(c)]
                length = max([0, *lengths, *plain])
            out[(rg, path)] = int(length)
    return out


def _utf8(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def read_series(
    source: Location | str,
    columns: list[str] | None = None,
    filters: list[list[Any]] | None = None,
    *,
    input_format: str = "auto",
    names: dict[str, str] | None = None,
    numeric: list[str] | tuple[str, ...] = (),
    static: list[str] | tuple[str, ...] = (),
    delimiter: str = ",",
) -> pd.DataFrame:
    """Read a long-format dataset (Parquet or CSV; file or hive-partitioned folder) into a frame.

    Only `series_id`, `ds`, `y` and `columns` are read (all the file's columns when `columns` is None).
    `names` maps those three to the input's own column names ({'series_id': 'store', ...}); the frame
    comes back with the standard names. `numeric`: columns read as float64 from Parquet (the target
    always is); from CSV every declared column (`static` ones too) is read as text, split on `delimiter`.
    `filters` literals are converted to their column's type (an ISO string for a timestamp column),
    or refused naming `filters`.
    A `ds` written as the pandas index comes back as a column. Bad data raises DataValidationError
    naming the file and column; failures to reach storage raise StorageError (transient unless
    permissions are at fault), which callers may retry.
    """
    names = {**{c: c for c in REQUIRED}, **(names or {})}
    required = [names[c] for c in REQUIRED]
    numeric = [names["y"], *numeric]
    dataset, fs, path, shown, hide = open_dataset(source, input_format, column_types(names, numeric, static),
                                                  delimiter)
    expr = filter_expression(filters, dataset.schema, shown, names["ds"])
    try:
        fragments = list(dataset.get_fragments(filter=expr)) if expr is not None else list(dataset.get_fragments())
    except Exception as exc:  # noqa: BLE001 - a filter naming an unknown field, for instance
        raise DataValidationError(f"bad filters {filters!r}: {_first_line(exc)}", source=shown) from None
    schemas = _physical_schemas(fs, fragments, shown)
    if columns:
        wanted = list(dict.fromkeys([*required, *columns]))
    else:  # the files' own columns; partition keys are read only when asked for
        wanted = list(dict.fromkeys([*required, *(c for c in (schemas[0][1].names if schemas else [])
                                                   if not c.startswith("__index_level_"))]))
    missing = [c for c in wanted if c not in dataset.schema.names]
    if missing:
        raise DataValidationError(f"missing required column (have {dataset.schema.names})", source=shown,
                                  column=missing[0])
    unified = read_schema(schemas, wanted, dataset.schema, shown, numeric)
    if unified is not None:  # compatible differences (int vs float, decimals, time units): read as one schema
        dataset = pads.dataset(path, filesystem=fs, format=dataset.format, partitioning=dataset.partitioning or "hive",
                               exclude_invalid_files=False, schema=unified)
    try:
        table = dataset.to_table(columns=wanted, filter=expr)
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"input {shown}: read failed", exc, hide) from None
        raise _explain_read_failure(shown, fs, list(dataset.files), wanted, exc) from None
    return to_frame(table, names)


_RANGE_OPS = {"<", "<=", ">", ">="}


def filter_expression(filters: list[list[Any]] | None, schema: pa.Schema, shown: str, time_column: str | None = None):
    """`filters` (pyarrow's DNF: [[col, op, value], ...] or a list of such lists) as a dataset expression,
    each value converted to its column's type: an ISO string to a timestamp (in the column's zone) or a
    date, a number to text for a text column (hive keys are text), text to a number. A value that does
    not convert, or a range on a time column stored as text (text order is not time order), raises
    DataValidationError naming `filters`."""
    if not filters:
        return None
    groups = filters if filters and isinstance(filters[0], (list, tuple)) and filters[0] \
        and isinstance(filters[0][0], (list, tuple)) else [filters]
    typed = []
    for group in groups:
        out = []
        for term in group:
            if not isinstance(term, (list, tuple)) or len(term) != 3:
                raise DataValidationError(f"setting 'filters': {term!r} is not [column, op, value]", source=shown)
            col, op, value = term
            if col not in schema.names:
                raise DataValidationError(f"setting 'filters': no column {col!r} (have {schema.names})",
                                          source=shown, column=str(col))
            t = schema.field(col).type
            if pa.types.is_dictionary(t):
                t = t.value_type
            if col == time_column and (pa.types.is_string(t) or pa.types.is_large_string(t)) and op in _RANGE_OPS:
                raise DataValidationError(
                    f"setting 'filters': {[col, op, value]!r} compares the time column, which this input stores as "
                    "text (text order is not time order): filter on a partition or other column, or store the "
                    "time column as a timestamp", source=shown, column=str(col))
            many = op in ("in", "not in")
            values = list(value) if many and isinstance(value, (list, tuple, set)) else [value]
            converted = [_literal(v, t, col, op, shown) for v in values]
            out.append((col, op, converted if many else converted[0]))
        typed.append(out)
    try:
        return pq.filters_to_expression(typed)
    except Exception as exc:  # noqa: BLE001 - an unknown operator, for instance
        raise DataValidationError(f"setting 'filters': {filters!r}: {_first_line(exc)}", source=shown) from None


def _literal(value: Any, t: pa.DataType, col: str, op: str, shown: str) -> Any:
    """One filter value as a scalar of the column's type `t` (see `filter_expression`)."""
    try:
        if value is None:
            return None
        if pa.types.is_timestamp(t):
            ts = pd.Timestamp(value)
            if t.tz is not None:
                ts = ts.tz_localize(t.tz) if ts.tzinfo is None else ts.tz_convert(t.tz)
            elif ts.tzinfo is not None:
                ts = ts.tz_convert("UTC").tz_localize(None)
            return pa.scalar(ts.to_pydatetime(), type=pa.timestamp("us", tz=t.tz)).cast(t)
        if pa.types.is_date(t):
            return pa.scalar(pd.Timestamp(value).date(), type=t)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return value if isinstance(value, str) else str(value)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            if isinstance(value, str):
                number = float(value)
                return int(number) if pa.types.is_integer(t) and number.is_integer() else number
            return value
    except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
        raise DataValidationError(f"setting 'filters': {value!r} ({op}) cannot be compared with column {col!r} "
                                  f"of type {t}: {exc}", source=shown, column=str(col)) from None
    return value


def to_frame(table: pa.Table, names: dict[str, str] | None = None) -> pd.DataFrame:
    """A read table as a frame with the standard column names.

    Columns pandas wrote as the index (`df.set_index("ds").to_parquet()`) come back as columns.
    """
    frame = table.to_pandas()
    index_names = [n for n in frame.index.names if n is not None]
    if index_names and any(n in table.column_names for n in index_names):
        frame = frame.reset_index()
    else:
        frame = frame.reset_index(drop=True)
    if names:
        rename = {src: std for std, src in names.items() if src != std and src in frame.columns}
        frame = frame.rename(columns=rename)
    return frame


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
        if fragment.path.lower().endswith(".csv.zst"):
            # pyarrow picks the codec by extension and knows zstd only as '.zstd'
            raise DataValidationError("a zstd-compressed CSV is read with the extension .csv.zstd (pyarrow "
                                      "does not decompress .zst): rename the file", source=scrub(fragment.path))
        try:
            schema = fragment.physical_schema
            schema.names  # noqa: B018 - a header that is not UTF-8 fails here, not later
            return fragment.path, schema
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8",
                                      source=scrub(fragment.path)) from None
        except Exception as exc:  # noqa: BLE001
            if is_storage_failure(exc):
                raise storage_error(f"input {shown}: cannot read {scrub(fragment.path)}", exc) from None
            kind = "CSV" if is_csv_path(fragment.path) else "Parquet"
            raise DataValidationError(f"not a readable {kind} file: {_arrow_reason(exc)}",
                                      source=scrub(fragment.path)) from None

    if len(fragments) <= 1:
        return [one(f) for f in fragments]
    with ThreadPoolExecutor(max_workers=min(8, len(fragments))) as pool:
        return list(pool.map(one, fragments))


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_timestamp(t):
        return f"timestamp (tz {t.tz})" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"  # a column all empty in one file: takes the type of the others
    return str(t)


def read_schema(schemas, wanted, dataset_schema: pa.Schema, shown: str,
                numeric: list[str] | tuple[str, ...] = ()) -> pa.Schema | None:
    """The schema to read the wanted columns with, or None when the files' own types serve as they are.

    Files must agree on each column's kind (number, string, timestamp with its zone); within a kind,
    differences are read as one type: numbers as float64, timestamps and dates as microseconds (a unit
    every encoding fits in, 9999-12-31 included), text as string. `numeric` columns are float64 always
    (decimals and nullable integers included). Refuses files that disagree, naming them.
    """
    physical = [c for c in wanted if any(c in s.names for _, s in schemas)]  # not partition keys
    if not schemas:
        return None
    ref_path, ref = schemas[0]
    differs = False
    kinds: dict[str, str] = {}
    for col in physical:
        types = []
        for path, schema in schemas:
            if col not in schema.names:
                has = next(p for p, s in schemas if col in s.names)
                raise DataValidationError(
                    f"partitions' schemas disagree: {scrub(has)} has column {col!r}, {scrub(path)} does not",
                    source=shown, column=col)
            types.append((path, schema.field(col).type))
        known = [(p, t) for p, t in types if _kind(t) != "null"]
        for path, t in known[1:]:
            if _kind(t) != _kind(known[0][1]):
                raise DataValidationError(
                    f"partitions' schemas disagree: {scrub(known[0][0])} has {col}: {known[0][1]}, {scrub(path)} "
                    f"has {col}: {t}", source=shown, column=col)
        kinds[col] = _kind(known[0][1]) if known else "null"
        distinct = {t for _, t in types}
        differs = differs or len(distinct) > 1 or (col in numeric and kinds[col] == "number"
                                                   and distinct != {pa.float64()})
    if not differs:
        return None
    fields = []
    for f in dataset_schema:
        if f.name in physical:
            kind = kinds[f.name]
            if kind == "number":
                f = pa.field(f.name, pa.float64())
            elif kind.startswith("timestamp"):
                tz = next((s.field(f.name).type.tz for _, s in schemas
                           if pa.types.is_timestamp(s.field(f.name).type)), None)
                f = pa.field(f.name, pa.timestamp("us", tz=tz))
            elif kind == "string":
                f = pa.field(f.name, pa.string())
            elif kind == "null" and f.name in numeric:
                f = pa.field(f.name, pa.float64())
        fields.append(f)
    return pa.schema(fields, metadata=dataset_schema.metadata)


def _explain_read_failure(shown, fs, files, wanted, exc) -> LstmForecastError:
    """Find the file whose schema or bytes are at fault, so the message can name it."""
    if files and all(is_csv_path(f) for f in files):
        return DataValidationError(f"cannot read the CSV input: {_arrow_reason(exc)}", source=shown)
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
# Locally, the job never writes through a symbolic link planted under the root it writes to: each
# folder below the root is opened with O_NOFOLLOW (a link there refuses the write), and each file is
# created as a fresh temp file (O_EXCL | O_NOFOLLOW) and renamed over the final name, which replaces a
# link at that name instead of following it. Links above the root are the user's own layout.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class LinkRefused(StorageError):
    """A folder the job would write into is a symbolic link (never retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


def open_dir(root: str, path: str, create: bool = True) -> int:
    """A file descriptor of the local folder `path` (created as needed) under `root`.

    No folder between `root` and `path` may be a symbolic link: LinkRefused names the first one.
    With `create` False a missing folder raises FileNotFoundError. The caller closes the descriptor.
    """
    root_abs, path_abs = os.path.abspath(root), os.path.abspath(path)
    rel = os.path.relpath(path_abs, root_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not under {root}")
    if create:
        os.makedirs(root_abs, exist_ok=True)
    fd = os.open(root_abs, _DIR_FLAGS)
    walked = root_abs
    try:
        for part in [] if rel == os.curdir else rel.split(os.sep):
            walked = os.path.join(walked, part)
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = "a symbolic link" if os.path.islink(walked) else "not a folder"
                    raise LinkRefused(f"{scrub(walked)} is {kind}: refusing to write through it "
                                      f"(remove it; the job writes only real folders under {scrub(root_abs)})") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _put_local(path: str, data: bytes, root: str | None) -> None:
    folder, name = os.path.split(os.path.abspath(path))
    dfd = open_dir(root if root is not None else folder, folder)
    tmp = f".{name}.tmp-{uuid.uuid4().hex}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces a link at `name`, never follows it
        finally:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
    finally:
        os.close(dfd)


def put_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, root: str | None = None) -> None:
    """Write one object whole (temp + rename locally; a single PUT on object stores).

    Locally, `root` is the folder the job owns (the output root, the model store, the run's scratch):
    no folder below it is followed if it is a symbolic link, and a link at `path` itself is replaced.
    A failure raises StorageError naming the object (permanent for permission problems and links).
    """
    try:
        if is_local(fs):
            _put_local(path, data, root)
        else:
            fs.pipe_file(path, data)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - name the object whatever the library raised
        raise storage_error(f"cannot write {scrub(path)}", exc) from None


def parquet_bytes(df: pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    """`df` as one Parquet file (zstd), in `schema` when given. Timestamps are written in microseconds
    whatever `df` holds (pandas' are nanoseconds, which Spark 3 refuses); a sub-microsecond part is dropped."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", coerce_timestamps="us", allow_truncated_timestamps=True)
    return buf.getvalue()


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, df: pd.DataFrame, schema: pa.Schema | None = None,
                  *, root: str | None = None) -> None:
    put_bytes(fs, path, parquet_bytes(df, schema), root=root)


def write_json(fs: fsspec.AbstractFileSystem, path: str, obj: Any, *, root: str | None = None) -> None:
    put_bytes(fs, path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), root=root)


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """Parse a JSON object; FileNotFoundError when it is absent."""
    return json.loads(fs.cat_file(path))


def _local_parents_ok(path: str, root: str | None) -> bool:
    """Locally under `root`: False when `path` is itself a symbolic link (the caller removes only the link);
    LinkRefused when a folder between `root` and `path` is one."""
    if root is None:
        return not os.path.islink(path)
    os.close(open_dir(root, os.path.dirname(os.path.abspath(path)), create=False))
    return not os.path.islink(path)


def remove_tree(fs: fsspec.AbstractFileSystem, path: str, *, root: str | None = None) -> None:
    """Delete `path` and everything under it, if present.

    Locally a symbolic link at `path` is removed itself (what it points to is left alone), and under
    `root` a link in a folder above `path` refuses the removal (LinkRefused).
    """
    fs.invalidate_cache(path)
    try:
        if is_local(fs) and not _local_parents_ok(path, root):
            os.unlink(path)
        elif fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot delete {scrub(path)}", exc) from None
    fs.invalidate_cache(path)


def remove_file(fs: fsspec.AbstractFileSystem, path: str, *, root: str | None = None) -> None:
    """Delete one object, if present (locally, a link is removed itself; see remove_tree)."""
    try:
        if is_local(fs):
            _local_parents_ok(path, root)
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot delete {scrub(path)}", exc) from None
    fs.invalidate_cache(path)
