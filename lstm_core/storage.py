"""Import face of the storage modules, for code not yet moved to their homes (issue 24 step 4).

What this module held now lives by concern; new code imports from there:

- `lstm_core.location`: where data live (`Location`, `filesystem`, `join`, `is_local`) and how reaching
  them fails (`is_storage_failure`, `storage_error`);
- `lstm_core.inputs`: reading inputs (`read_series`, `check_input`, `open_dataset`, `scan_input`, `to_frame`,
  `REQUIRED`, `DEFAULT_MISSING`), with `lstm_core.input_schema` (`read_schema`, `filter_expression`, ...)
  and `lstm_core.input_size` (`parquet_read_bytes`, `parquet_longest_values`, `MAX_ID_BYTES`);
- `lstm_core.atomic`: atomic writes (`put_bytes`, `write_json`, `write_parquet`, `parquet_bytes`,
  `read_json`), removals (`remove_tree`, `remove_file`, `LinkRefused`, `open_dir`) and `check_output`.

Kept only so modules being rewritten in parallel (config, tuning, modelling, model_store, artifacts and
the flows) import unchanged; the names below are the same objects as in their homes.
"""
from __future__ import annotations

from lstm_core.atomic import (
    LinkRefused,
    check_output,
    open_dir,
    parquet_bytes,
    put_bytes,
    read_json,
    remove_file,
    remove_tree,
    write_json,
    write_parquet,
)
from lstm_core.input_schema import CSV_SUFFIXES, filter_expression, is_csv_path, read_schema
from lstm_core.input_size import MAX_ID_BYTES, parquet_longest_values, parquet_read_bytes
from lstm_core.inputs import (
    DEFAULT_MISSING,
    PARQUET,
    REQUIRED,
    OpenedDataset,
    check_input,
    column_types,
    file_format,
    open_dataset,
    read_series,
    to_frame,
)
from lstm_core.location import (
    PERMANENT_ERROR_NAMES,
    S3_RETRIES,
    Location,
    filesystem,
    is_local,
    is_storage_failure,
    join,
    resolve_options,
    storage_error,
)

__all__ = [
    "CSV_SUFFIXES", "DEFAULT_MISSING", "MAX_ID_BYTES", "PARQUET", "PERMANENT_ERROR_NAMES", "REQUIRED", "S3_RETRIES",
    "LinkRefused", "Location", "OpenedDataset",
    "check_input", "check_output", "column_types", "file_format", "filesystem", "filter_expression", "is_csv_path",
    "is_local", "is_storage_failure", "join", "open_dataset", "open_dir", "parquet_bytes", "parquet_longest_values",
    "parquet_read_bytes", "put_bytes", "read_json", "read_schema", "read_series", "remove_file", "remove_tree",
    "resolve_options", "storage_error", "to_frame", "write_json", "write_parquet",
]
