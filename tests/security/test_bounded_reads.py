"""Two ways around the per-shard byte budget, closed (issue 26, finding 7). Real crafted Parquet files.

1. pyarrow writes no statistics for string values over 4 KB: a dictionary-encoded column of one 10 KB value
   repeated on every row is a few KB on disk, decodes to tens of MB, and its footer alone says nothing of
   it. The planner measures the longest value from the column's dictionary (never the rows) and counts it.
2. A footer whose `num_rows` is forged (1e12): bytes per row are counted over the rows really read from the
   file, so the forgery no longer makes a file look small per row.

And ids: a key column of huge values is refused before any row of it is decoded.
"""
from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstm_core.errors import DataValidationError
from lstm_core.input_size import MAX_ID_BYTES, parquet_longest_values, parquet_read_bytes
from lstm_core.shard_plan import plan_shards
from lstm_core.shard_split import read_shard, split_shards

MiB = 2**20


def _frame(n_series: int, length: int, note: str | None = None, id_suffix: str = "") -> pd.DataFrame:
    frame = pd.DataFrame({
        "series_id": np.repeat([f"s{i}{id_suffix}" for i in range(n_series)], length),
        "ds": np.tile(pd.date_range("2026-01-01", periods=length, freq="h"), n_series),
        "y": np.random.default_rng(0).normal(size=n_series * length)})
    if note is not None:
        frame["note"] = note
    return frame


def _write(frame: pd.DataFrame, path) -> str:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")
    return str(path)


def test_long_values_without_statistics_are_measured_not_missed(tmp_path):
    path = _write(_frame(4, 500, note="x" * 10_000), tmp_path / "in.parquet")
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(0).column(3)
    assert chunk.path_in_schema == "note" and not chunk.statistics.has_min_max  # what pyarrow writes
    decoded = pq.read_table(path).nbytes
    on_disk = (tmp_path / "in.parquet").stat().st_size
    assert on_disk < 100_000 and decoded > 19 * MiB
    columns = ["series_id", "ds", "y", "note"]
    assert parquet_read_bytes(meta, columns) < decoded / 100  # the footer alone misses it
    longest = parquet_longest_values(path, columns)
    assert longest[(0, "note")] == 10_000 and longest[(0, "series_id")] == 2
    assert 0.99 * decoded <= parquet_read_bytes(meta, columns, longest) <= 1.25 * decoded


def test_a_file_of_long_values_is_split_within_the_budget_or_refused(tmp_path):
    path = _write(_frame(8, 250, note="x" * 10_000), tmp_path / "in.parquet")
    columns = ["series_id", "ds", "y", "note"]
    decoded = pq.read_table(path).nbytes
    plan = plan_shards(path, columns=columns, shard_bytes=4 * MiB, scratch=str(tmp_path / "s" / "run=r"))
    assert plan.bytes >= 0.99 * decoded and plan.n_shards >= decoded // (4 * MiB) and plan.sharded
    for spec in split_shards(path, plan, columns=columns).shards:
        frame = read_shard(spec.url)
        assert pa.Table.from_pandas(frame, preserve_index=False).nbytes <= 4 * MiB * 1.1
    with pytest.raises(DataValidationError, match=r"series 's\d'.*more than shard_bytes \(1\.0 MiB\)"):
        plan_shards(path, columns=columns, shard_bytes=MiB, scratch=str(tmp_path / "s2"))


def _forge_num_rows(path, rows: int) -> None:
    """Rewrite the footer's FileMetaData.num_rows (Thrift compact: field 3, i64, right after the schema
    list) and the footer length; the row groups keep their own counts."""
    data = open(path, "rb").read()
    assert data[-4:] == b"PAR1"
    footer_len = struct.unpack("<I", data[-8:-4])[0]
    start = len(data) - 8 - footer_len
    footer = data[start:-8]
    true_rows = pq.ParquetFile(path).metadata.num_rows

    def varint(n: int) -> bytes:
        z, out = (n << 1) ^ (n >> 63), bytearray()
        while True:
            if z < 0x80:
                return bytes(out + bytes([z]))
            out.append((z & 0x7F) | 0x80)
            z >>= 7

    old, new = b"\x16" + varint(true_rows), b"\x16" + varint(rows)
    at = footer.find(old)  # the first: FileMetaData's, before the row groups' own
    assert at > 0
    footer = footer[:at] + new + footer[at + len(old):]
    with open(path, "wb") as fh:
        fh.write(data[:start] + footer + struct.pack("<I", len(footer)) + b"PAR1")


def test_a_forged_row_count_does_not_let_a_refused_file_through(tmp_path):
    # Values of 1 KB (statistics written): refused under a 1 MiB budget as it is...
    path = _write(_frame(2, 2000, note="x" * 1000), tmp_path / "in.parquet")
    columns = ["series_id", "ds", "y", "note"]
    with pytest.raises(DataValidationError, match="more than shard_bytes"):
        plan_shards(path, columns=columns, shard_bytes=MiB, scratch=str(tmp_path / "a"))
    # ...and still refused with its footer claiming 1e12 rows.
    _forge_num_rows(path, 10**12)
    assert pq.ParquetFile(path).metadata.num_rows == 10**12
    assert len(pq.read_table(path)) == 4000  # readers still decode every row
    with pytest.raises(DataValidationError, match="more than shard_bytes"):
        plan_shards(path, columns=columns, shard_bytes=MiB, scratch=str(tmp_path / "b"))
    # The estimate per series does not depend on the footer's row count.
    honest = _write(_frame(2, 2000, note="x" * 1000), tmp_path / "honest.parquet")
    a = plan_shards(honest, columns=columns, shard_bytes=64 * MiB, scratch=str(tmp_path / "c"))
    b = plan_shards(path, columns=columns, shard_bytes=64 * MiB, scratch=str(tmp_path / "d"))
    assert a.bytes == b.bytes >= 4000 * 1000


def test_huge_ids_are_refused_before_they_are_read(tmp_path):
    path = _write(_frame(3, 100, id_suffix="-" + "i" * (MAX_ID_BYTES + 10)), tmp_path / "in.parquet")
    assert not pq.ParquetFile(path).metadata.row_group(0).column(0).statistics.has_min_max
    with pytest.raises(DataValidationError, match=rf"column 'series_id'.*at most {MAX_ID_BYTES:,} bytes"):
        plan_shards(path, scratch=str(tmp_path / "s"))
    ok = _write(_frame(3, 100, id_suffix="-" + "i" * 100), tmp_path / "ok.parquet")
    assert plan_shards(ok, scratch=str(tmp_path / "t")).n_shards == 1
