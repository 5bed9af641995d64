"""Shards of series: plan them from the `series_id` column, then split the input once so each is read alone.

A run over many series works shard by shard, so its memory is bounded by the
shard size, not by the dataset:

- `plan_shards` streams only the series id (and the group column, if any) through
  a column projection, counts the series of each group and assigns each series
  to a shard by a stable hash of its id (`shard_size` series per shard). The
  hash (`pandas.util.hash_array`, SipHash with a fixed key) is the same in every
  process and run, so a series always lands in the same shard.
- `split_shards` makes one streaming pass over the wanted columns and appends
  each batch's rows to its shard's folder (Arrow IPC parts) in a run-scoped scratch folder,
  plus the rows of each group's training sample to a training file. Series
  scattered across row groups are read once, instead of once per shard.
- a shard task then reads only its own folder.

An input that fits in one shard is not split: its single shard reads the input
itself, exactly as an unsharded run does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from lstm_core import layout
from lstm_core.errors import DataValidationError, StorageError
from lstm_core.storage import (MAX_ID_BYTES, REQUIRED, Location, _explain_read_failure, _physical_schemas, column_types,
                               filter_expression, is_local, parquet_longest_values,
                               join, open_dataset, parquet_read_bytes, put_bytes, read_schema, remove_tree, to_frame)

SHARD_KEY = "lstm-fc-shard-01"  # 16-byte SipHash keys: shard assignment and training sample are independent
TRAIN_KEY = "lstm-fc-train-01"
BATCH_ROWS = 1 << 17
SCRATCH_BUFFER_BYTES = 64 * 2**20  # compressed rows held for all shards before the largest is written out
INFER_ROWS = 1_000_000  # rows of (series id, timestamp) read to infer the frequency when it is not given
_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError)


def stable_hash(ids: Any, key: str = SHARD_KEY) -> np.ndarray:
    """uint64 hash of each id; identical in every process, run and machine (unlike Python's `hash`)."""
    values = np.asarray(ids, dtype=object)
    if len(values) == 0:
        return np.zeros(0, dtype=np.uint64)
    return pd.util.hash_array(values, encoding="utf8", hash_key=key, categorize=False)


def shard_of(ids: Any, n_shards: int) -> np.ndarray:
    """Shard number (0..n_shards-1) of each series id."""
    return (stable_hash(ids) % np.uint64(max(n_shards, 1))).astype(np.int64)


@dataclass(frozen=True)
class ShardSpec:
    """What one shard task reads: its scratch file, or the input itself (optionally only some series)."""

    index: int  # part number: this shard's outputs are part-<index>.parquet
    group: str | None
    n_series: int
    url: str | None = None  # scratch file; None reads `input_url` with the configured filters
    series_ids: tuple[str, ...] | None = None  # with url None: read only these series
    role: str = "forecast"  # "forecast", or "train" for a group's training sample
    rows: int | None = None  # rows written to `url` by the split

    @property
    def name(self) -> str:
        if self.role == "train":
            return f"train[{self.group}]" if self.group is not None else "train"
        return f"shard {self.index}" + (f" [{self.group}]" if self.group is not None else "")


@dataclass
class GroupPlan:
    name: str | None  # the group's value as a string; None without a group column
    n_series: int
    n_shards: int  # hash buckets of this group (some may be empty)
    offset: int  # global index of the group's first bucket
    shards: list[int]  # indices of its non-empty shards
    sample_size: int  # series its model trains on
    train_threshold: int | None  # series with train hash <= this are in the sample; None: all
    train: ShardSpec | None  # separate training data; None: train on the group's only shard


@dataclass
class ShardPlan:
    n_series: int
    rows: int
    shard_size: int
    columns: list[str]  # what every shard reads (input names): id, time, target and covariates (never the group)
    features: tuple[str, ...]  # ("y", *numeric covariates), as validation will find them
    group_column: str | None
    groups: list[GroupPlan]
    shards: list[ShardSpec]
    scratch: str | None = None  # run-scoped folder of shard files; None when the input is read directly
    split_seconds: float | None = None
    ignored_columns: list[str] = field(default_factory=list)  # input columns no setting asks for (not read)
    freq: str | None = None  # the frequency inferred from a sample of the series (when asked for)
    bytes: int = 0  # what the shards read, uncompressed, estimated from the Parquet metadata

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def sharded(self) -> bool:
        return self.scratch is not None

    def group(self, name: str | None) -> GroupPlan:
        return next(g for g in self.groups if g.name == name)

    def summary(self) -> dict[str, Any]:
        return {
            "series": self.n_series, "rows": self.rows, "bytes": self.bytes, "shard_size": self.shard_size,
            "shards": self.n_shards,
            "split": self.sharded, "group_column": self.group_column,
            "groups": [{"group": g.name, "series": g.n_series, "shards": len(g.shards), "train_series": g.sample_size,
                        "train_data": "shard" if g.train is None else ("scratch" if g.train.url else "input")}
                       for g in self.groups],
        }


# --- the input dataset ------------------------------------------------------
@dataclass
class _Input:
    dataset: pads.Dataset
    files: list[str]
    fs: Any
    url: str
    columns: list[str]  # id, time, target and covariates (input names), as `read_series` reads them
    expression: Any
    names: dict[str, str] = field(default_factory=dict)  # standard name -> input name
    ignored: list[str] = field(default_factory=list)  # the first file's columns that are not read


def _open_input(source: Location, columns: list[str] | None,
                filters: list[list[Any]] | None, group_column: str | None, *, input_format: str = "auto",
                names: dict[str, str] | None = None, numeric: list[str] | tuple[str, ...] = (),
                static: list[str] | tuple[str, ...] = (), delimiter: str = ",") -> _Input:
    """The same dataset, columns, types and checks as `storage.read_series`, without reading the rows."""
    names = {**{c: c for c in REQUIRED}, **(names or {})}
    required = [names[c] for c in REQUIRED]
    numeric = [names["y"], *numeric]
    dataset, fs, path, url, _ = open_dataset(source, input_format, column_types(names, numeric, static),
                                             delimiter)  # url: as messages may name it
    files = list(dataset.files)
    try:
        first = next(iter(dataset.get_fragments())).physical_schema.names
    except _READ_ERRORS as exc:
        raise _explain_read_failure(url, fs, files, required, exc) from None
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
    schemas = _physical_schemas(fs, list(dataset.get_fragments()), url)
    unified = read_schema(schemas, [*wanted, *([group_column] if group_column else [])], dataset.schema, url,
                          numeric)
    if unified is not None:
        dataset = pads.dataset(path, filesystem=fs, format=dataset.format, partitioning=dataset.partitioning or "hive",
                               exclude_invalid_files=False, schema=unified)
    expr = filter_expression(filters, dataset.schema, url, names["ds"])
    return _Input(dataset, files, fs, url, wanted, expr, names, ignored)


def _batches(src: _Input, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The input's rows batch by batch. Without `pre_buffer`, Arrow would cache whole files' column
    chunks ahead of the batches (memory growing with the file); no readahead beyond one batch."""
    options = pads.ParquetFragmentScanOptions(pre_buffer=False) \
        if isinstance(src.dataset.format, pads.ParquetFileFormat) else None
    try:
        yield from src.dataset.to_batches(columns=columns, filter=src.expression, batch_size=BATCH_ROWS,
                                          batch_readahead=0, fragment_readahead=0,
                                          fragment_scan_options=options)
    except _READ_ERRORS as exc:
        raise _explain_read_failure(src.url, src.fs, src.files, columns, exc) from None


def _count(table: pa.Table, keys: list[str]) -> pa.Table:
    """Distinct keys with their summed row counts `n` and read bytes `b`."""
    out = table.group_by(keys).aggregate([("n", "sum"), ("b", "sum")])
    return pa.table({**{k: out.column(k) for k in keys}, "n": out.column("n_sum"), "b": out.column("b_sum")})


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
        stats = chunk.statistics if chunk.is_stats_set else None
        if stats is not None and stats.has_min_max:
            yield (rg, chunk.path_in_schema), max(len(_bytes(stats.min)), len(_bytes(stats.max)))


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _count_n(table: pa.Table, keys: list[str]) -> pa.Table:
    """Distinct keys with their summed row counts `n`."""
    out = table.group_by(keys).aggregate([("n", "sum")])
    return pa.table({**{k: out.column(k) for k in keys}, "n": out.column("n_sum")})


class _RowBytes:
    """Bytes per row of each input file, over the columns a shard reads, from the file's Parquet footer and
    the longest value of each dictionary-encoded string column (statistics, or measured from the dictionary:
    `storage.parquet_longest_values`).

    Per row of the rows really read from the file (counted while streaming), never of the footer's
    `num_rows`, which a crafted file can forge (1e12 rows would make any file look small per row). Each row
    counts at least the longest value of each such column, so a footer that understates its sizes does not
    shrink the estimate below what the rows decode to. CSV files have no such metadata: they count 0 here
    and are bounded by `shard_rows` alone.
    """

    def __init__(self, src: "_Input", columns: list[str]) -> None:
        self.src, self.columns = src, columns
        self.fragments = {f.path: f for f in src.dataset.get_fragments()}
        self.per_file: dict[str, tuple[float, float, dict]] = {}  # path -> (footer bytes, bytes per row at least, longest)

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
            except _READ_ERRORS as exc:
                raise _explain_read_failure(self.src.url, self.src.fs, [path], self.columns, exc) from None
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


def _shards_for_bytes(n_shards: int, hashes: np.ndarray, weights: np.ndarray, budget: int) -> int:
    """Enough hash buckets that the fullest holds at most `budget` bytes (buckets are uneven, so more
    than total / budget may be needed); each series fits on its own, which the caller checked."""
    n = len(hashes)
    n_shards = max(n_shards, math.ceil(float(weights.sum()) / budget))
    while True:
        per = np.bincount((hashes % np.uint64(n_shards)).astype(np.int64), weights=weights, minlength=n_shards)
        if per.max(initial=0) <= budget or n_shards >= 8 * n:
            return n_shards
        n_shards = min(8 * n, max(n_shards + 1, math.ceil(n_shards * 1.25)))


def _features(src: _Input) -> tuple[str, ...]:
    """Numeric (not boolean) columns read besides the id, time and target columns."""
    covariates = []
    for name in src.columns:
        if name in src.names.values():
            continue
        t = src.dataset.schema.field(name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            covariates.append(name)
    return ("y", *covariates)


def _check_ids(column: pa.ChunkedArray | pa.Array, url: str, name: str = "series_id") -> None:
    t = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
        raise DataValidationError(f"must be string, got {t}", source=url, column=name)
    if column.null_count:
        raise DataValidationError("null series_id", source=url, column=name)


def _decoded(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


# --- plan -------------------------------------------------------------------
def plan_shards(
    source: Location | str,
    *,
    columns: list[str] | None = None,
    filters: list[list[Any]] | None = None,
    shard_size: int = 5_000,
    shard_rows: int | None = None,
    shard_bytes: int | None = None,
    group_column: str | None = None,
    max_train_series: int | None = None,
    scratch: str | None = None,
    input_format: str = "auto",
    names: dict[str, str] | None = None,
    numeric: list[str] | tuple[str, ...] = (),
    static: list[str] | tuple[str, ...] = (),
    delimiter: str = ",",
    infer_freq: bool = False,
    time_format: str | None = None,
) -> ShardPlan:
    """List the series (reading only the id and group columns) and assign them to shards.

    A group gets ceil(series / shard_size) shards, or more when its rows exceed `shard_rows`
    per shard (long series), or when the bytes a shard would read exceed `shard_bytes` (wide or
    hostile files: counted from the Parquet footers over the columns a shard reads, see
    `storage.parquet_read_bytes`). A series that alone exceeds `shard_bytes` is refused with
    DataValidationError. `scratch` is the run's scratch folder, used only when the input
    needs more than one shard. `names` maps series_id, ds and y to the input's column names;
    `infer_freq`: also read the timestamps of a sample of series and infer their frequency (written
    as `time_format` declares). `static`, `delimiter`: as `storage.read_series` takes them.
    """
    source = Location.of(source)
    url = source.shown
    src = _open_input(source, columns, filters, group_column, input_format=input_format,
                      names=names, numeric=numeric, static=static, delimiter=delimiter)
    keys = [src.names["series_id"], *([group_column] if group_column else [])]
    row_bytes = _RowBytes(src, [*src.columns, *([group_column] if group_column else [])])
    # Before any row is decoded: a key column whose values are huge (no statistics bound them) is refused
    # here, since listing the series decodes it batch by batch.
    for path in src.files:
        for (_, column), length in row_bytes.longest(path).items():
            if column in keys and length > MAX_ID_BYTES:
                raise DataValidationError(f"a value of {length:,} bytes; ids and group values may be at most "
                                          f"{MAX_ID_BYTES:,} bytes", source=url, column=column)
    parts: list[pa.Table] = []
    files: dict[str, int] = {}
    held, rows = 0, 0
    for batch in _batches(src, [*keys, "__filename"]):  # each batch comes from one file
        rows += batch.num_rows
        _check_ids(batch.column(0), url, keys[0])
        if not batch.num_rows:
            continue
        f = files.setdefault(batch.column(len(keys))[0].as_py(), len(files))
        table = pa.table({**{k: _decoded(batch.column(i)) for i, k in enumerate(keys)},
                          "f": pa.array(np.full(batch.num_rows, f, dtype=np.int32)),
                          "n": pa.array(np.ones(batch.num_rows, dtype=np.int64))})
        parts.append(_count_n(table, [*keys, "f"]))
        held += parts[-1].num_rows
        if held > 4 * BATCH_ROWS:  # keep only distinct keys (and their row counts) while streaming
            parts = [_count_n(pa.concat_tables(parts), [*keys, "f"])]
            held = parts[0].num_rows
    if parts:
        per_file = _count_n(pa.concat_tables(parts), [*keys, "f"])
        # bytes per row of each file over the rows really read from it (the footer's row count is not trusted)
        f_col, n_col = per_file.column("f").to_numpy(), per_file.column("n").to_numpy()
        file_rows = np.bincount(f_col, weights=n_col, minlength=len(files))
        paths = sorted(files, key=files.get)
        per_row = np.array([row_bytes.per_row(p, int(file_rows[i])) for i, p in enumerate(paths)], dtype=np.float64)
        weighted = pa.table({**{k: per_file.column(k) for k in keys}, "n": per_file.column("n"),
                             "b": pa.array(n_col * per_row[f_col])})
        pairs = _count(weighted, keys)
    else:
        pairs = pa.table({**{k: pa.array([], pa.string()) for k in keys}, "n": pa.array([], pa.int64()),
                          "b": pa.array([], pa.float64())})
    ids = np.asarray(pairs.column(keys[0]).to_pylist(), dtype=object)
    series_rows = pairs.column("n").to_numpy()
    series_bytes = pairs.column("b").to_numpy()
    if shard_bytes is not None and len(ids) and series_bytes.max() > shard_bytes:
        big = int(np.argmax(series_bytes))
        raise DataValidationError(
            f"this series alone reads about {series_bytes[big] / 2**20:,.1f} MiB of the columns "
            f"{row_bytes.columns} (uncompressed, from the Parquet metadata), more than shard_bytes "
            f"({shard_bytes / 2**20:,.1f} MiB): a shard holds whole series. Raise shard_bytes, or read fewer "
            f"columns", source=url, series_id=str(ids[big]))
    pa.default_memory_pool().release_unused()
    if group_column:
        gcol = pairs.column(group_column)
        if gcol.null_count:
            sid = ids[np.flatnonzero(pc.is_null(gcol).to_numpy(zero_copy_only=False))[0]]
            raise DataValidationError("group value is null", source=url, column=group_column, series_id=str(sid))
        groups = np.asarray([str(v) for v in gcol.to_pylist()], dtype=object)
        order = np.argsort(ids, kind="stable")
        dup = ids[order][1:] == ids[order][:-1]
        if dup.any():
            sid = ids[order][1:][dup][0]
            seen = sorted(set(groups[ids == sid]))
            raise DataValidationError(f"series has several groups {seen}; each series must belong to one group",
                                      source=url, column=group_column, series_id=str(sid))
    else:
        groups = np.full(len(ids), None, dtype=object)

    names: list[str | None] = sorted(set(groups)) if group_column and len(ids) else [None]
    shard_hash = stable_hash(ids, SHARD_KEY)
    train_hash = stable_hash(ids, TRAIN_KEY)
    plans: list[GroupPlan] = []
    specs: list[ShardSpec] = []
    offset = 0
    for name in names:
        mask = groups == name if name is not None else np.ones(len(ids), dtype=bool)
        n = int(mask.sum())
        n_shards = max(1, math.ceil(n / shard_size))
        if shard_rows is not None:
            n_shards = min(max(n_shards, math.ceil(int(series_rows[mask].sum()) / shard_rows)), max(n, 1))
        if shard_bytes is not None and n:
            n_shards = _shards_for_bytes(n_shards, shard_hash[mask], series_bytes[mask], shard_bytes)
        counts = np.bincount((shard_hash[mask] % np.uint64(n_shards)).astype(np.int64), minlength=n_shards)
        members = [offset + k for k in range(n_shards) if counts[k] > 0] or [offset]
        for k in members:
            specs.append(ShardSpec(k, name, int(counts[k - offset]) if n else 0))
        sample_size, threshold = n, None
        if max_train_series is not None and n > max_train_series:
            threshold = int(np.partition(train_hash[mask], max_train_series - 1)[max_train_series - 1])
            sample_size = max_train_series
        plans.append(GroupPlan(name, n, n_shards, offset, members, sample_size, threshold, None))
        offset += n_shards

    split = len(specs) > 1
    run_scratch = scratch if split else None
    if split and not run_scratch:
        raise ValueError("an input of several shards needs a scratch folder")
    if split:
        specs = [replace(s, url=join(run_scratch, f"shard-{s.index}")) for s in specs]
    for gi, g in enumerate(plans):
        whole = g.train_threshold is None
        if split:
            if not (whole and len(g.shards) == 1):
                g.train = ShardSpec(-1, g.name, g.sample_size, url=join(run_scratch, f"train-{gi}"),
                                    role="train")
        elif not whole:
            sample = ids[train_hash <= np.uint64(g.train_threshold)]
            g.train = ShardSpec(-1, g.name, g.sample_size, series_ids=tuple(sorted(map(str, sample))), role="train")
    freq = sample_frequency(src, time_format=time_format) if infer_freq else None
    return ShardPlan(len(ids), rows, shard_size, src.columns, _features(src), group_column, plans, specs,
                     run_scratch, ignored_columns=src.ignored, freq=freq, bytes=int(series_bytes.sum()))


def sample_frequency(src: _Input, max_rows: int = INFER_ROWS, time_format: str | None = None) -> str:
    """The frequency the series follow, inferred from the timestamps of the input's first rows.

    Raises DataValidationError when series disagree or none tells (then freq must be set).
    """
    from lstm_core import timestamps
    from lstm_core.validation import infer_parsed_frequency

    id_col, ds_col = src.names["series_id"], src.names["ds"]
    parts, rows = [], 0
    for batch in _batches(src, [id_col, ds_col]):
        parts.append(pa.Table.from_batches([batch]))
        rows += batch.num_rows
        if rows >= max_rows:
            break
    frame = to_frame(pa.concat_tables(parts), src.names) if parts else pd.DataFrame(columns=["series_id", "ds"])
    if frame.empty:  # say so, rather than that no series tells its frequency
        raise DataValidationError("dataset has no rows", source=src.url)
    ids = frame["series_id"].astype(object).astype(str)
    parsed = timestamps.parse(frame["ds"], ids, src.url, lambda *_: None, time_format=time_format,
                              column=src.names["ds"])
    return infer_parsed_frequency(parsed, ids, src.url, src.names["ds"])


# --- split ------------------------------------------------------------------
class _ScratchShard:
    """One shard's scratch data: LZ4 Arrow IPC streams, buffered in memory, written as whole part files.

    Arrow IPC, not Parquet: the parts are written once and read once by this run, and IPC skips
    Parquet's encoding (several times faster, about the same size). Each part is one object put
    whole (no open multipart upload per shard on object stores), so what waits in memory is
    bounded by the split's budget, not by the number of shards.
    """

    def __init__(self, fs, folder: str, schema: pa.Schema, root: str | None = None) -> None:
        self.fs, self.folder, self.schema, self.root = fs, folder, schema, root
        self.rows = self.parts = self.buffered_rows = 0
        self._open()

    def _open(self) -> None:
        self.sink = pa.BufferOutputStream()
        self.writer = ipc.new_stream(self.sink, self.schema, options=ipc.IpcWriteOptions(compression="lz4"))
        self.buffered_rows = 0

    @property
    def size(self) -> int:
        return self.sink.tell()

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)  # copied and compressed: the input batch can go
        self.rows += table.num_rows
        self.buffered_rows += table.num_rows

    def flush(self, last: bool = False) -> None:
        if self.buffered_rows == 0 and (self.parts or not last):
            return  # nothing new (an empty shard still gets one empty part at the end)
        self.writer.close()
        put_bytes(self.fs, f"{self.folder}/part-{self.parts:05d}.arrow", self.sink.getvalue().to_pybytes(),
                  root=self.root)
        self.parts += 1
        if last:
            self.sink = self.writer = None
        else:
            self._open()


def read_shard(shard: Location | str, names: dict[str, str] | None = None) -> pd.DataFrame:
    """A shard's rows, as `storage.read_series` would return them from the input (standard column names)."""
    shard = Location.of(shard)
    fs, folder, url = shard.fs, shard.path, shard.shown
    fs.invalidate_cache(folder)
    try:
        parts = sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".arrow"))
    except FileNotFoundError:
        parts = []
    if not parts:
        raise StorageError(f"shard folder {url} is missing (was the run's scratch folder removed?)")
    tables = []
    for part in parts:
        with fs.open(part, "rb") as fh:
            tables.append(ipc.open_stream(fh).read_all())
    return to_frame(pa.concat_tables(tables), names)


def split_shards(source: Location | str, plan: ShardPlan, *,
                 filters: list[list[Any]] | None = None, columns: list[str] | None = None,
                 input_format: str = "auto", names: dict[str, str] | None = None,
                 numeric: list[str] | tuple[str, ...] = (), static: list[str] | tuple[str, ...] = (),
                 delimiter: str = ",") -> ShardPlan:
    """Write each shard's rows (and each group's training sample) to its scratch file in one pass.

    The scratch files are reached with `source`'s storage options. Returns the plan with the rows
    written per shard. Memory: one input batch plus at most
    `SCRATCH_BUFFER_BYTES` of compressed rows waiting to be written, whatever the input's size.
    """
    if not plan.sharded:
        return plan
    source = Location.of(source)
    url = source.shown
    src = _open_input(source, columns, filters, plan.group_column, input_format=input_format,
                      names=names, numeric=numeric, static=static, delimiter=delimiter)
    scratch = source.with_url(plan.scratch)
    fs = scratch.fs
    read = [*plan.columns, *([plan.group_column] if plan.group_column else [])]
    # The input's pandas metadata too, so a shard reads back with the dtypes the input itself reads with.
    schema = pa.schema([src.dataset.schema.field(c) for c in plan.columns], metadata=src.dataset.schema.metadata)
    by_index = {s.index: s for s in plan.shards}
    outs: dict[Any, _ScratchShard] = {}
    root = scratch.path  # no link below the run's scratch folder is followed
    for s in plan.shards:
        outs[s.index] = _ScratchShard(fs, source.with_url(s.url).path, schema, root)
    for gi, g in enumerate(plan.groups):
        if g.train is not None and g.train.url is not None:
            outs[("train", gi)] = _ScratchShard(fs, source.with_url(g.train.url).path, schema, root)
    buffered = 0
    group_index = {g.name: gi for gi, g in enumerate(plan.groups)}
    n_shards = np.array([g.n_shards for g in plan.groups], dtype=np.uint64)
    offsets = np.array([g.offset for g in plan.groups], dtype=np.int64)
    no_threshold = np.iinfo(np.uint64).max
    thresholds = np.array([no_threshold if g.train_threshold is None else g.train_threshold for g in plan.groups],
                          dtype=np.uint64)
    sampled = [gi for gi, g in enumerate(plan.groups) if ("train", gi) in outs]

    try:
        for batch in _batches(src, read):
            if batch.num_rows == 0:
                continue
            ids = pc.dictionary_encode(_decoded(batch.column(0)))
            codes = ids.indices.to_numpy(zero_copy_only=False)
            uniq = np.asarray(ids.dictionary.to_pylist(), dtype=object)
            if plan.group_column:
                gcol = pc.dictionary_encode(_decoded(batch.column(len(plan.columns))))
                try:
                    gmap = np.array([group_index[str(v)] for v in gcol.dictionary.to_pylist()], dtype=np.int64)
                except KeyError as exc:  # the input changed between plan and split
                    raise StorageError(f"input {url} changed during the run: group {exc} was not planned") from None
                row_group = gmap[gcol.indices.to_numpy(zero_copy_only=False)]
            else:
                row_group = np.zeros(batch.num_rows, dtype=np.int64)
            row_hash = stable_hash(uniq, SHARD_KEY)[codes]
            row_shard = offsets[row_group] + (row_hash % n_shards[row_group]).astype(np.int64)
            data = pa.Table.from_batches([batch]).select(plan.columns)
            order = np.argsort(row_shard, kind="stable")
            ordered = data.take(pa.array(order))  # one copy, then zero-copy slices per shard
            keys, starts = np.unique(row_shard[order], return_index=True)
            ends = np.append(starts[1:], len(order))
            for k, lo, hi in zip(keys, starts, ends):
                if int(k) not in by_index:
                    raise StorageError(f"input {url} changed during the run: rows of an unplanned shard {int(k)}")
                buffered += _write(outs[int(k)], ordered.slice(lo, hi - lo))
            if sampled:
                row_in = stable_hash(uniq, TRAIN_KEY)[codes] <= thresholds[row_group]
                for gi in sampled:
                    take = np.flatnonzero(row_in & (row_group == gi))
                    if len(take):
                        buffered += _write(outs[("train", gi)], data.take(pa.array(take)))
            while buffered > SCRATCH_BUFFER_BYTES:  # write out the largest buffers first
                largest = max(outs.values(), key=lambda o: o.size)
                buffered -= largest.size
                largest.flush()
                buffered += largest.size  # the fresh, empty stream's header
    except BaseException:
        remove_tree(fs, scratch.path)
        raise
    for out in outs.values():
        out.flush(last=True)
    pa.default_memory_pool().release_unused()  # hand the pass's buffers back before the shards start

    shards = [replace(s, rows=outs[s.index].rows) for s in plan.shards]
    groups = []
    for gi, g in enumerate(plan.groups):
        if ("train", gi) in outs:
            g = replace(g, train=replace(g.train, rows=outs[("train", gi)].rows))
        groups.append(g)
    return replace(plan, shards=shards, groups=groups)


def _write(out: _ScratchShard, table: pa.Table) -> int:
    before = out.size
    out.write(table)
    return out.size - before


def remove_scratch(scratch_root: Location | str, run_id: str) -> None:
    """Remove the run's scratch folder, and the scratch root when no other run uses it."""
    scratch_root = Location.of(scratch_root)
    run_scratch = scratch_root.with_url(layout.run_scratch(scratch_root.url, run_id))
    fs, path = run_scratch.fs, run_scratch.path
    remove_tree(fs, path, root=scratch_root.path)
    if is_local(fs):
        try:
            fs.rmdir(path.rsplit("/", 1)[0])  # only if empty
        except OSError:
            pass
