"""What reading an input costs in bytes, known from Parquet footers before any row is decoded.

Split from `lstm_core/storage.py` and `lstm_core/sharding.py` (issue 24 step 4; the map of the pieces is
in `lstm_core.location`). The shard planner bounds each shard's memory with these estimates
(`shard_bytes`), and refuses ids longer than MAX_ID_BYTES before listing the series:

- `parquet_read_bytes`: the bytes the named columns of one file take once read;
- `parquet_longest_values`: the longest value of each dictionary-encoded string column chunk, from its
  statistics or measured from its dictionary alone;
- `RowBytes`: bytes per row of each file of a scan, over the rows really read from it.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from lstm_core.input_schema import READ_ERRORS, explain_read_failure
from lstm_core.inputs import InputScan

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
    bounds memory measures them (the footer's row counts can be forged too: see `RowBytes`).
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


def _dictionary_chunks(meta: pq.FileMetaData, columns: list[str]) -> Iterator[tuple[int, Any]]:
    """(row group, column chunk) of each dictionary-encoded string column chunk of `columns`."""
    wanted = set(columns)
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for ci in range(group.num_columns):
            chunk = group.column(ci)
            if chunk.path_in_schema in wanted and chunk.physical_type == "BYTE_ARRAY" and chunk.has_dictionary_page:
                yield rg, chunk


def _stats_longest_values(meta: pq.FileMetaData, columns: list[str]) -> Iterator[tuple[tuple[int, str], int]]:
    """((row group, column), longest value in bytes) of the dictionary string chunks whose statistics say."""
    for rg, chunk in _dictionary_chunks(meta, columns):
        length = _stats_longest(chunk)
        if length is not None:
            yield (rg, chunk.path_in_schema), length


class RowBytes:
    """Bytes per row of each input file, over the columns a shard reads, from the file's Parquet footer and
    the longest value of each dictionary-encoded string column (statistics, or measured from the dictionary:
    `parquet_longest_values`).

    Per row of the rows really read from the file (counted while streaming), never of the footer's
    `num_rows`, which a crafted file can forge (1e12 rows would make any file look small per row). Each row
    counts at least the longest value of each such column, so a footer that understates its sizes does not
    shrink the estimate below what the rows decode to. CSV files have no such metadata: they count 0 here
    and are bounded by `shard_rows` alone.
    """

    def __init__(self, src: InputScan, columns: list[str]) -> None:
        self.src, self.columns = src, columns
        self.fragments = {f.path: f for f in src.dataset.get_fragments()}
        # path -> (footer bytes, bytes per row at least, longest)
        self.per_file: dict[str, tuple[float, float, dict[tuple[int, str], int]]] = {}

    def longest(self, path: str) -> dict[tuple[int, str], int]:
        """(row group, column) -> longest value in bytes, of the file's dictionary string columns read."""
        return self._measure(path)[2]

    def _measure(self, path: str) -> tuple[float, float, dict[tuple[int, str], int]]:
        if path not in self.per_file:
            fragment = self.fragments.get(path)
            if not isinstance(fragment, pads.ParquetFileFragment):
                self.per_file[path] = (0.0, 0.0, {})
                return self.per_file[path]
            try:
                meta = fragment.metadata
                longest = dict(_stats_longest_values(meta, self.columns))
                if len(longest) < sum(1 for _ in _dictionary_chunks(meta, self.columns)):  # some lack statistics
                    with self.src.fs.open(path, "rb") as fh:
                        longest = parquet_longest_values(fh, self.columns)
            except READ_ERRORS as exc:
                raise explain_read_failure(self.src.url, self.src.fs, [path], self.columns, exc) from None
            floor: dict[str, int] = {}
            for (_, column), length in longest.items():
                floor[column] = max(floor.get(column, 0), length + 4)
            self.per_file[path] = (float(parquet_read_bytes(meta, self.columns, longest)),
                                   float(sum(floor.values())), longest)
        return self.per_file[path]

    def per_row(self, path: str, rows: int) -> float:
        """Bytes per row of `path`, over the `rows` really read from it."""
        footer, floor, _ = self._measure(path)
        return max(footer / max(rows, 1), floor)
