"""Reading inputs, part two: the schema files are read with, typed filters, and naming the file at fault.

Split from `lstm_core/storage.py` (issue 24 step 4; the map of the pieces is in `lstm_core.location`).
`lstm_core.inputs` (the whole read) and the shard planner's streaming scan both use what is here, so a
series reads the same whichever way it was read:

- `physical_schemas`: each file's own schema (its footer or CSV header), the file named when unreadable;
- `read_schema`: types that differ compatibly between files (int and float, decimals, time units, dates,
  all-null columns) read as one schema; files that disagree refused, naming both;
- `filter_expression`: the `filters` setting as a dataset expression, each value in its column's type;
- `explain_read_failure`: the error to raise when a read fails, naming the file whose bytes are at fault.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from lstm_core.errors import DataValidationError, LstmForecastError
from lstm_core.location import is_storage_failure, storage_error
from lstm_core.secrets import scrub

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.zstd", ".csv.lz4")
# What pyarrow raises when a file's bytes cannot be read as the schema says (and OSError for storage).
READ_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError)


def is_csv_path(path: str) -> bool:
    """True when `path` names a CSV file (optionally compressed: see CSV_SUFFIXES), whatever its case."""
    return path.lower().endswith(CSV_SUFFIXES)


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message (its class name when it has none): a one-line reason for a message."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def arrow_reason(exc: BaseException) -> str:
    """pyarrow nests its reasons ('Error creating dataset. ... : Parquet magic bytes not found ...'); keep the last."""
    text = first_line(exc)
    return text.rsplit("': ", 1)[-1] if "': " in text else text


def physical_schemas(fragments: Sequence[pads.Fragment], shown: str) -> list[tuple[str, pa.Schema]]:
    """Each file's own schema (its footer, or its CSV header), read in parallel: [(path, schema)] in
    `fragments`' order. A file that cannot be read raises DataValidationError naming it (not UTF-8, not
    Parquet, a '.csv.zst' name pyarrow cannot decompress); failing to reach it raises StorageError.
    `shown` is the input's URL as messages may name it.
    """

    def one(fragment: pads.Fragment) -> tuple[str, pa.Schema]:
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
            raise DataValidationError(f"not a readable {kind} file: {arrow_reason(exc)}",
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


def read_schema(schemas: Sequence[tuple[str, pa.Schema]], wanted: Sequence[str], dataset_schema: pa.Schema,
                shown: str, numeric: list[str] | tuple[str, ...] = ()) -> pa.Schema | None:
    """The schema to read the wanted columns with, or None when the files' own types serve as they are.

    Files must agree on each column's kind (number, string, timestamp with its zone); within a kind,
    differences are read as one type: numbers as float64, timestamps and dates as microseconds (a unit
    every encoding fits in, 9999-12-31 included), text as string. `numeric` columns are float64 always
    (decimals and nullable integers included). Refuses files that disagree, naming them.
    """
    physical = [c for c in wanted if any(c in s.names for _, s in schemas)]  # not partition keys
    if not schemas:
        return None
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


def explain_read_failure(shown: str, fs: fsspec.AbstractFileSystem, files: Sequence[str], wanted: Sequence[str],
                         exc: BaseException) -> LstmForecastError:
    """The error to raise for `exc`, a failed read of the `wanted` columns of `files`: each Parquet file is
    read again alone to find the one whose schema or bytes are at fault, so the message can name it
    (DataValidationError; StorageError when reaching it failed). Returned, not raised."""
    if files and all(is_csv_path(f) for f in files):
        return DataValidationError(f"cannot read the CSV input: {arrow_reason(exc)}", source=shown)
    for f in files:
        try:
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                pf.read(columns=[c for c in wanted if c in pf.schema_arrow.names])
        except Exception as inner:  # noqa: BLE001 - any failure here means this file is unreadable
            if is_storage_failure(inner):
                return storage_error(f"input {shown}: cannot read {scrub(f)}", inner)
            return DataValidationError(f"not a readable Parquet file: {arrow_reason(inner)}", source=scrub(f))
    return DataValidationError(f"cannot read dataset: {arrow_reason(exc)}", source=shown)


_RANGE_OPS = {"<", "<=", ">", ">="}


def filter_expression(filters: list[list[Any]] | None, schema: pa.Schema, shown: str,
                      time_column: str | None = None) -> pads.Expression | None:
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
        raise DataValidationError(f"setting 'filters': {filters!r}: {first_line(exc)}", source=shown) from None


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
