"""Shard planning: list the series from the `series_id` column and assign each to a shard.

Split from `lstm_core/sharding.py` (issue 24 step 4); `lstm_core.shard_split` writes the plan's shards.
A run over many series works shard by shard, so its memory is bounded by the shard size, not by the
dataset:

- `plan_shards` streams only the series id (and the group column, if any) through a column projection
  (`lstm_core.inputs.scan_input`), counts the series of each group and assigns each series to a shard by
  a stable hash of its id (`shard_size` series per shard; more shards for long series, `shard_rows`, or
  for wide files, `shard_bytes`, counted from the Parquet footers by `lstm_core.input_size`). The hash
  (`pandas.util.hash_array`, SipHash with a fixed key) is the same in every process and run, so a series
  always lands in the same shard.
- `ShardPlan`, `GroupPlan` and `ShardSpec` are the plan's typed records: what the split writes and what
  each shard task reads.

An input that fits in one shard is not split: its single shard reads the input itself, exactly as an
unsharded run does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lstm_core.errors import DataValidationError
from lstm_core.input_size import MAX_ID_BYTES, RowBytes
from lstm_core.inputs import BATCH_ROWS, InputScan, decoded, scan_input, to_frame
from lstm_core.location import Location, join

SHARD_KEY = "lstm-fc-shard-01"  # 16-byte SipHash keys: shard assignment and training sample are independent
TRAIN_KEY = "lstm-fc-train-01"


INFER_ROWS = 1_000_000  # rows of (series id, timestamp) read to infer the frequency when it is not given


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
        """How logs and errors name this shard: `shard 3 [group]`, or `train[group]` for a training sample."""
        if self.role == "train":
            return f"train[{self.group}]" if self.group is not None else "train"
        return f"shard {self.index}" + (f" [{self.group}]" if self.group is not None else "")


@dataclass
class GroupPlan:
    """One group's part of the plan (the whole input when there is no group column): its shards and sample."""

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
    """The plan of a run: the series, the groups and the shards each task reads (`plan_shards` makes it,
    `shard_split.split_shards` fills in the rows written per shard)."""

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
        """Shards the run's tasks read (non-empty hash buckets; at least one)."""
        return len(self.shards)

    @property
    def sharded(self) -> bool:
        """True when the input is split into scratch files; False when its single shard reads the input."""
        return self.scratch is not None

    def group(self, name: str | None) -> GroupPlan:
        """The plan of group `name` (None without a group column); StopIteration when there is none."""
        return next(g for g in self.groups if g.name == name)

    def summary(self) -> dict[str, Any]:
        """The plan in a few numbers for logs and the manifest: series, rows, bytes, shards, groups."""
        return {
            "series": self.n_series, "rows": self.rows, "bytes": self.bytes, "shard_size": self.shard_size,
            "shards": self.n_shards,
            "split": self.sharded, "group_column": self.group_column,
            "groups": [{"group": g.name, "series": g.n_series, "shards": len(g.shards), "train_series": g.sample_size,
                        "train_data": "shard" if g.train is None else ("scratch" if g.train.url else "input")}
                       for g in self.groups],
        }


def _count(table: pa.Table, keys: list[str]) -> pa.Table:
    """Distinct keys with their summed row counts `n` and read bytes `b`."""
    out = table.group_by(keys).aggregate([("n", "sum"), ("b", "sum")])
    return pa.table({**{k: out.column(k) for k in keys}, "n": out.column("n_sum"), "b": out.column("b_sum")})


def _count_n(table: pa.Table, keys: list[str]) -> pa.Table:
    """Distinct keys with their summed row counts `n`."""
    out = table.group_by(keys).aggregate([("n", "sum")])
    return pa.table({**{k: out.column(k) for k in keys}, "n": out.column("n_sum")})


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


def _features(src: InputScan) -> tuple[str, ...]:
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
    `input_size.parquet_read_bytes`). A series that alone exceeds `shard_bytes` is refused with
    DataValidationError. `scratch` is the run's scratch folder, used only when the input
    needs more than one shard. `names` maps series_id, ds and y to the input's column names;
    `infer_freq`: also read the timestamps of a sample of series and infer their frequency (written
    as `time_format` declares). `static`, `delimiter`: as `inputs.read_series` takes them.
    """
    source = Location.of(source)
    url = source.shown
    src = scan_input(source, columns, filters, group_column, input_format=input_format,
                     names=names, numeric=numeric, static=static, delimiter=delimiter)
    keys = [src.names["series_id"], *([group_column] if group_column else [])]
    row_bytes = RowBytes(src, [*src.columns, *([group_column] if group_column else [])])
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
    for batch in src.batches([*keys, "__filename"]):  # each batch comes from one file
        rows += batch.num_rows
        _check_ids(batch.column(0), url, keys[0])
        if not batch.num_rows:
            continue
        f = files.setdefault(batch.column(len(keys))[0].as_py(), len(files))
        table = pa.table({**{k: decoded(batch.column(i)) for i, k in enumerate(keys)},
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
        paths = sorted(files, key=lambda p: files[p])
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

    group_names: list[str | None] = sorted(set(groups)) if group_column and len(ids) else [None]
    shard_hash = stable_hash(ids, SHARD_KEY)
    train_hash = stable_hash(ids, TRAIN_KEY)
    plans: list[GroupPlan] = []
    specs: list[ShardSpec] = []
    offset = 0
    for name in group_names:
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

    run_scratch: str | None = None  # set when the input is split (more than one shard)
    if len(specs) > 1:
        if not scratch:
            raise ValueError("an input of several shards needs a scratch folder")
        run_scratch = scratch
        specs = [replace(s, url=join(scratch, f"shard-{s.index}")) for s in specs]
    for gi, g in enumerate(plans):
        whole = g.train_threshold is None
        if run_scratch is not None:
            if not (whole and len(g.shards) == 1):
                g.train = ShardSpec(-1, g.name, g.sample_size, url=join(run_scratch, f"train-{gi}"),
                                    role="train")
        elif g.train_threshold is not None:
            sample = ids[train_hash <= np.uint64(g.train_threshold)]
            g.train = ShardSpec(-1, g.name, g.sample_size, series_ids=tuple(sorted(map(str, sample))), role="train")
    freq = sample_frequency(src, time_format=time_format) if infer_freq else None
    return ShardPlan(len(ids), rows, shard_size, src.columns, _features(src), group_column, plans, specs,
                     run_scratch, ignored_columns=src.ignored, freq=freq, bytes=int(series_bytes.sum()))


def sample_frequency(src: InputScan, max_rows: int = INFER_ROWS, time_format: str | None = None) -> str:
    """The frequency the series follow, inferred from the timestamps of the input's first rows.

    Raises DataValidationError when series disagree or none tells (then freq must be set).
    """
    from lstm_core import timestamps
    from lstm_core.validation import infer_parsed_frequency

    id_col, ds_col = src.names["series_id"], src.names["ds"]
    parts, rows = [], 0
    for batch in src.batches([id_col, ds_col]):
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
