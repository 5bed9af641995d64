"""Shard splitting: one streaming pass writes each planned shard's rows to the run's scratch folder.

Split from `lstm_core/sharding.py` (issue 24 step 4); `lstm_core.shard_plan` makes the plan.

- `split_shards` makes one pass over the wanted columns and appends each batch's rows to its shard's folder
  (Arrow IPC parts) in a run-scoped scratch folder, plus the rows of each group's training sample to a
  training folder. Series scattered across row groups are read once, instead of once per shard.
- `read_shard`: a shard task then reads only its own folder, with the dtypes the input itself reads with.
- `remove_scratch`: the run's scratch folder removed when the run is done.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from lstm_core import layout
from lstm_core.atomic import put_bytes, remove_tree
from lstm_core.errors import StorageError
from lstm_core.inputs import decoded, scan_input, to_frame
from lstm_core.location import Location, is_local
from lstm_core.shard_plan import SHARD_KEY, TRAIN_KEY, ShardPlan, stable_hash

SCRATCH_BUFFER_BYTES = 64 * 2**20  # compressed rows held for all shards before the largest is written out


class _ScratchShard:
    """One shard's scratch data: LZ4 Arrow IPC streams, buffered in memory, written as whole part files.

    Arrow IPC, not Parquet: the parts are written once and read once by this run, and IPC skips
    Parquet's encoding (several times faster, about the same size). Each part is one object put
    whole (no open multipart upload per shard on object stores), so what waits in memory is
    bounded by the split's budget, not by the number of shards.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, folder: str, schema: pa.Schema,
                 root: str | None = None) -> None:
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
    """A shard's rows, as `inputs.read_series` would return them from the input (standard column names)."""
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
    if plan.scratch is None:  # not sharded: the single shard reads the input itself
        return plan
    source = Location.of(source)
    url = source.shown
    src = scan_input(source, columns, filters, plan.group_column, input_format=input_format,
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
        if s.url is None:
            raise ValueError(f"{s.name} of a split plan has no scratch folder")
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
        for batch in src.batches(read):
            if batch.num_rows == 0:
                continue
            ids = pc.dictionary_encode(decoded(batch.column(0)))
            codes = ids.indices.to_numpy(zero_copy_only=False)
            uniq = np.asarray(ids.dictionary.to_pylist(), dtype=object)
            if plan.group_column:
                gcol = pc.dictionary_encode(decoded(batch.column(len(plan.columns))))
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
            for k, lo, hi in zip(keys, starts, ends, strict=True):
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
        if g.train is not None and ("train", gi) in outs:
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
