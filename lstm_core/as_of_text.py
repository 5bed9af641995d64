"""`as_of` on a time column that is not stored as a timestamp or date: text (every CSV input, Parquet strings,
hive partition keys) or numbers (epoch times, `20230102` digits with a `time_format`).

Such a column cannot be bounded by a pyarrow comparison (text order is not time order), so the readers
(`lstm_core.inputs.read_series` and `scan_input`) do what the run does: they parse the time column's values
the way validation parses them (`lstm_core.timestamps.parse`, with `time_format`), and keep only the rows on
or before `as_of`, as a filter of the read itself (`time in [the values kept]`), so no later step (validation,
counting, frequency inference, shard planning or splitting) ever sees a later row.

- The values are parsed once per distinct value, over the whole column as filtered by `filters` (so the form
  a column is read in, e.g. which date order, is decided on the same values whether the run is sharded or
  not). A value's time depends only on its text and that form: the cut is the same row by row.
- Comparison (the same rules as the typed filter of `lstm_core.input_schema.filter_expression`): an `as_of`
  without an offset is on the data's clock (naive text as written; text with offsets on each value's own
  wall clock); one with an offset is compared as the instant (naive text taken as UTC; epochs are UTC).
- A value that cannot be parsed, or a null, has no known time: the read is refused (DataValidationError
  naming the file, column, series and row of its first occurrence), wherever it lies.
- A value nanoseconds cannot hold (the `9999-12-31` placeholder) lies after (or, before 1677, before) every
  `as_of`: it is dropped (kept) accordingly.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from lstm_core import timestamps
from lstm_core.errors import DataValidationError

__all__ = ["is_typed_time", "text_cut"]

_YEAR = re.compile(r"\d{4}")
_UTC_WORD = re.compile(r"(?<=\d)\s*(?:UTC|GMT)$")  # as `timestamps` reads '2023-01-02 00:00:00 UTC'
_OFFSET = re.compile(timestamps.OFFSET_RE)


def is_typed_time(t: pa.DataType) -> bool:
    """True for a timestamp or date column (also dictionary-encoded): pyarrow compares it with `as_of`."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_timestamp(t) or pa.types.is_date(t)


def text_cut(dataset: pads.Dataset, expression: pads.Expression | None, id_column: str, time_column: str,
             as_of: datetime, time_format: str | None, shown: str) -> pads.Expression:
    """The filter that keeps the rows of `dataset` (already filtered by `expression`) whose time is on or
    before `as_of`: `time_column in [kept values]`. Reads the id and time columns once.

    Raises:
        DataValidationError: a null or unparseable time value (naming `time_column`, the series and the row
            of its first occurrence), or a column-level parse refusal (an ambiguous date order, a bad
            `time_format`), as validation would raise it.
    """
    first: dict[Any, tuple[str, int]] = {}  # distinct value -> (series id, row) of its first occurrence
    offset = 0
    value_type: pa.DataType | None = None
    for batch in dataset.to_batches(columns=[id_column, time_column], filter=expression, batch_readahead=0,
                                    fragment_readahead=0):
        ids, times = _plain(batch.column(0)), _plain(batch.column(1))
        value_type = times.type
        if times.null_count:
            r = int(np.flatnonzero(times.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataValidationError("null timestamp: its time is unknown, so it cannot be placed before or "
                                      "after as_of", source=shown, column=time_column,
                                      series_id=str(ids[r].as_py()), row=offset + r)
        encoded = pc.dictionary_encode(times)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        _, at = np.unique(codes, return_index=True)  # codes follow first appearance: at[k] is code k's first row
        for value, r in zip(encoded.dictionary.to_pylist(), at.tolist(), strict=True):
            if value not in first:
                first[value] = (str(ids[r].as_py()), offset + r)
        offset += batch.num_rows
    values = list(first)
    if not values or value_type is None:
        return pc.field(time_column).is_valid()  # nothing read: nothing to keep or drop
    keep = _kept(values, first, as_of, time_format, shown, time_column)
    kept = pa.array([v for v, k in zip(values, keep, strict=True) if k], type=value_type)
    return pc.field(time_column).isin(kept)


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _kept(values: list[Any], first: dict[Any, tuple[str, int]], as_of: datetime, time_format: str | None,
          shown: str, column: str) -> np.ndarray:
    """Per distinct value: True when its time is on or before `as_of` (see the module for the rules)."""
    limit = pd.Timestamp(as_of.astimezone(UTC).replace(tzinfo=None) if as_of.tzinfo else as_of)
    keep = np.zeros(len(values), dtype=bool)
    strings = all(isinstance(v, str) for v in values)
    text = time_format is None and strings
    # Values with and without a UTC offset are parsed apart (a run refuses or puts aside series that mix
    # them; the cut only needs each value's own time); a declared `time_format` reads every value alike.
    offsets = np.array([bool(_OFFSET.search(_UTC_WORD.sub("Z", v.strip()))) for v in values]) if text \
        else np.zeros(len(values), dtype=bool)
    for group in (np.flatnonzero(~offsets), np.flatnonzero(offsets)):
        if not len(group):
            continue
        col = pd.Series([values[i] for i in group], dtype=object if strings else None)
        ids = pd.Series([str(i) for i in group], dtype=object)  # each value its own "series": errors name it
        outside: set[int] = set()
        try:
            parsed = timestamps.parse(col, ids, shown, lambda sid, *_, seen=outside: seen.add(int(sid)),
                                      time_format=time_format, column=column)
        except DataValidationError as exc:
            if exc.series_id is None:
                raise
            sid, row = first[values[int(exc.series_id)]]
            raise DataValidationError(exc.message, source=shown, column=column, series_id=sid, row=row) from None
        if parsed.zone is not None and as_of.tzinfo is None:  # offsets: each value's own wall clock
            assert parsed.wall is not None, "timestamps keeps the wall clock of offsets"
            on_time = (parsed.wall <= pd.Timestamp(as_of)).to_numpy()
        else:
            on_time = (parsed.instants <= limit).to_numpy()
        for j, i in enumerate(group.tolist()):
            keep[i] = not _after_range(values[i], time_format) if i in outside else bool(on_time[j])
    return keep


def _after_range(value: Any, time_format: str | None) -> bool:
    """For a value nanoseconds cannot hold: True when it lies after their range (9999-12-31), False before."""
    if time_format in timestamps.EPOCH_UNITS:
        return float(value) > 0
    if time_format is not None:
        try:
            return datetime.strptime(str(value).strip(), time_format).year > timestamps.NS_MAX.year
        except ValueError:
            pass
    year = _YEAR.search(str(value))
    return year is None or int(year.group()) > timestamps.NS_MAX.year
