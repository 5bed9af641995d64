"""Reading inputs: the long-format dataset (Parquet or CSV; a file or a hive-partitioned folder) as series.

Split from `lstm_core/storage.py` (issue 24 step 4; the map of the pieces is in `lstm_core.location`).
Reads go through pyarrow datasets, with column projection and partition filters:

- `check_input`: the cheap check before any work (listed, the first file's schema, the named columns);
- `read_series`: the whole input (or the columns asked for) as a frame with the standard column names;
- `scan_input` and `InputScan.batches`: the same dataset, columns, types and checks as `read_series`,
  streamed batch by batch without holding the rows; the shard planner and splitter read through it.

Types that differ compatibly between files are read as one schema (`lstm_core.input_schema`), the same
way whether the input is read whole or split into shards.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from lstm_core.as_of import read_filters
from lstm_core.as_of_text import is_typed_time, text_cut
from lstm_core.errors import DataValidationError
from lstm_core.input_schema import (
    READ_ERRORS,
    arrow_reason,
    explain_read_failure,
    filter_expression,
    first_line,
    is_csv_path,
    physical_schemas,
    read_schema,
)
from lstm_core.location import Location, is_storage_failure, storage_error
from lstm_core.secrets import scrub, url_credentials

REQUIRED = ("series_id", "ds", "y")
# Cells read as missing in numeric columns (target, numeric covariates, numeric statics): pandas' own
# list, the dashes spreadsheets print for "nothing", and Excel's #N/A. Other text (`#VALUE!`,
# `1,234.50` without `thousands`) is no number: refused, naming the row (setting `missing_values`).
DEFAULT_MISSING = ("", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "none", "<NA>",
                   "#N/A", "#N/A N/A", "#NA", "-", "--", "?")


# Spark writes INT96 timestamps; read as microseconds, so a 9999-12-31 placeholder does not overflow.
PARQUET = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(coerce_int96_timestamp_unit="us"))
BATCH_ROWS = 1 << 17  # rows per batch of a streaming scan (`InputScan.batches`)


class OpenedDataset(NamedTuple):
    """An input listed but not read (`open_dataset`): the dataset, its filesystem and path on it."""

    dataset: pads.Dataset
    fs: fsspec.AbstractFileSystem
    path: str
    shown: str  # the URL as messages may name it: without credentials
    hide: list[str]  # credentials a library may quote without the URL around them


def file_format(input_format: str, column_types: dict[str, pa.DataType] | None = None,
                delimiter: str = ",") -> pads.FileFormat:
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
        raise DataValidationError(f"not a readable {kind} dataset: {arrow_reason(exc)}", source=shown) from None
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


def _looks_csv(fs: fsspec.AbstractFileSystem, path: str) -> bool:
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
            raise DataValidationError(f"not a readable file: {arrow_reason(exc)}",
                                      source=scrub(fragment.path)) from None
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
    as_of: datetime | None = None,
    time_format: str | None = None,
) -> pd.DataFrame:
    """Read a long-format dataset (Parquet or CSV; file or hive-partitioned folder) into a frame.

    Only `series_id`, `ds`, `y` and `columns` are read (all the file's columns when `columns` is None).
    `names` maps those three to the input's own column names ({'series_id': 'store', ...}); the frame
    comes back with the standard names. `numeric`: columns read as float64 from Parquet (the target
    always is); from CSV every declared column (`static` ones too) is read as text, split on `delimiter`.
    `filters` literals are converted to their column's type (an ISO string for a timestamp column),
    or refused naming `filters`. `as_of`: only rows with time <= as_of are read (`as_of_filter`; `time_format`
    says how a text time column is written).
    A `ds` written as the pandas index comes back as a column. Bad data raises DataValidationError
    naming the file and column; failures to reach storage raise StorageError (transient unless
    permissions are at fault), which callers may retry.
    """
    names = {**{c: c for c in REQUIRED}, **(names or {})}
    required = [names[c] for c in REQUIRED]
    numeric = [names["y"], *numeric]
    dataset, fs, path, shown, hide = open_dataset(source, input_format, column_types(names, numeric, static),
                                                  delimiter)
    expr = filter_expression(_typed_as_of(filters, dataset.schema, as_of, names["ds"]), dataset.schema, shown,
                             names["ds"])
    try:
        fragments = list(dataset.get_fragments(filter=expr)) if expr is not None else list(dataset.get_fragments())
    except Exception as exc:  # noqa: BLE001 - a filter naming an unknown field, for instance
        raise DataValidationError(f"bad filters {filters!r}: {first_line(exc)}", source=shown) from None
    schemas = physical_schemas(fragments, shown)
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
        expr = as_of_filter(dataset, expr, names, as_of, time_format, shown)
        table = dataset.to_table(columns=wanted, filter=expr)
    except DataValidationError:  # a time value the as_of cut cannot place: already names its row
        raise
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"input {shown}: read failed", exc, hide) from None
        raise explain_read_failure(shown, fs, list(dataset.files), wanted, exc) from None
    return to_frame(table, names)


def _typed_as_of(filters: list[list[Any]] | None, schema: pa.Schema, as_of: datetime | None,
                 time_column: str) -> list[Any] | None:
    """`filters` with `[time_column, "<=", as_of]` ANDed in when the time column is a timestamp or date
    (pyarrow drops later rows while reading); unchanged otherwise (`as_of_filter` cuts text columns)."""
    if as_of is None:  # nothing to cut (and the schema is not read: a file that is not UTF-8 fails later, named)
        return filters
    try:
        typed = time_column in schema.names and is_typed_time(schema.field(time_column).type)
    except UnicodeDecodeError:  # column names that are not UTF-8: the read below refuses the file, named
        return filters
    return read_filters(filters, as_of if typed else None, time_column)


def as_of_filter(dataset: pads.Dataset, expression: pads.Expression | None, names: dict[str, str],
                 as_of: datetime | None, time_format: str | None, shown: str) -> pads.Expression | None:
    """`expression` with the rows after `as_of` left out when the time column is not a timestamp or date
    (text, or numbers with a `time_format`): their values are parsed as validation parses them and only
    those on or before `as_of` kept (`lstm_core.as_of_text`). Unchanged without `as_of`, or for a typed
    time column (its bound is already in `expression`). Raises DataValidationError naming the row of a
    time value that cannot be parsed."""
    ds = names["ds"]
    if as_of is None or ds not in dataset.schema.names or is_typed_time(dataset.schema.field(ds).type):
        return expression
    cut = text_cut(dataset, expression, names["series_id"], ds, as_of, time_format, shown)
    return cut if expression is None else expression & cut


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


@dataclass
class InputScan:
    """An input opened for streaming (`scan_input`): what `read_series` would read, without the rows."""

    dataset: pads.Dataset  # read with the one schema every file is read with
    files: list[str]
    fs: fsspec.AbstractFileSystem
    url: str  # as messages may name it: without credentials
    columns: list[str]  # id, time, target and covariates (input names), as `read_series` reads them
    expression: pads.Expression | None  # the `filters` setting, typed
    names: dict[str, str] = field(default_factory=dict)  # standard name -> input name
    ignored: list[str] = field(default_factory=list)  # the first file's columns that are not read

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """The input's rows of `columns` (input names), filtered, batch by batch (at most BATCH_ROWS rows,
        each from one file). Without `pre_buffer`, Arrow would cache whole files' column chunks ahead of
        the batches (memory growing with the file); no readahead beyond one batch. A file that cannot be
        read raises DataValidationError naming it (StorageError when reaching it failed)."""
        options = pads.ParquetFragmentScanOptions(pre_buffer=False) \
            if isinstance(self.dataset.format, pads.ParquetFileFormat) else None
        try:
            yield from self.dataset.to_batches(columns=columns, filter=self.expression, batch_size=BATCH_ROWS,
                                               batch_readahead=0, fragment_readahead=0,
                                               fragment_scan_options=options)
        except READ_ERRORS as exc:
            raise explain_read_failure(self.url, self.fs, self.files, columns, exc) from None


def scan_input(source: Location | str, columns: list[str] | None,
               filters: list[list[Any]] | None, group_column: str | None, *, input_format: str = "auto",
               names: dict[str, str] | None = None, numeric: list[str] | tuple[str, ...] = (),
               static: list[str] | tuple[str, ...] = (), delimiter: str = ",", as_of: datetime | None = None,
               time_format: str | None = None) -> InputScan:
    """The same dataset, columns, types and checks as `read_series`, without reading the rows.

    `columns`, `filters`, `input_format`, `names`, `numeric`, `static`, `delimiter`, `as_of`, `time_format`:
    as `read_series` takes them (with `as_of` on a text time column, the id and time columns are read once
    here to find the values on or before it). `group_column` (input name) must exist; it is left out of
    `InputScan.columns` (a caller reads it on purpose). Raises DataValidationError naming a missing column,
    an unreadable file or a time value the as_of cut cannot place, and StorageError when storage cannot be
    reached.
    """
    names = {**{c: c for c in REQUIRED}, **(names or {})}
    required = [names[c] for c in REQUIRED]
    numeric = [names["y"], *numeric]
    dataset, fs, path, url, _ = open_dataset(source, input_format, column_types(names, numeric, static),
                                             delimiter)  # url: as messages may name it
    files = list(dataset.files)
    try:
        first = next(iter(dataset.get_fragments())).physical_schema.names
    except READ_ERRORS as exc:
        raise explain_read_failure(url, fs, files, required, exc) from None
    wanted = list(dict.fromkeys([*required, *columns])) if columns else \
        [c for c in first if not c.startswith("__index_level_")]
    have = dataset.schema.names
    missing = [c for c in dict.fromkeys([*required, *wanted]) if c not in have]
    if missing:
        raise DataValidationError(f"missing required column (have {have})", source=url, column=missing[0])
    if group_column is not None and group_column not in have:
        raise DataValidationError(f"group column not found (have {have})", source=url, column=group_column)
    wanted = [c for c in wanted if c != group_column]
    ignored = [c for c in first if c not in wanted and c != group_column and not c.startswith("__index_level_")]
    # One schema for every file (int and float, decimals, time units): the shards read what
    # `read_series` reads, whichever file a series came from.
    schemas = physical_schemas(list(dataset.get_fragments()), url)
    unified = read_schema(schemas, [*wanted, *([group_column] if group_column else [])], dataset.schema, url,
                          numeric)
    if unified is not None:
        dataset = pads.dataset(path, filesystem=fs, format=dataset.format, partitioning=dataset.partitioning or "hive",
                               exclude_invalid_files=False, schema=unified)
    expr = filter_expression(_typed_as_of(filters, dataset.schema, as_of, names["ds"]), dataset.schema, url,
                             names["ds"])
    try:
        expr = as_of_filter(dataset, expr, names, as_of, time_format, url)
    except READ_ERRORS as exc:
        raise explain_read_failure(url, fs, files, [names["series_id"], names["ds"]], exc) from None
    return InputScan(dataset, files, fs, url, wanted, expr, names, ignored)


def decoded(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """`column` as one plain array: chunks combined, a dictionary-encoded column decoded to its values."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
