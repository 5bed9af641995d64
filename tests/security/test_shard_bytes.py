"""A per-shard byte budget (`shard_bytes`) from Parquet metadata: a small file that decodes huge is split
or refused, never read whole (issue 16, point 6)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstm_core.errors import DataValidationError
from lstm_core.shard_plan import plan_shards
from lstm_core.shard_split import read_shard, split_shards
from lstm_core.config import validate_config
from lstm_core.input_size import parquet_read_bytes

BLOB = "x" * 1000  # one long value, repeated: dictionary-encoded, a few KB on disk


def _hostile(path, n_series: int = 8, length: int = 2000, long_ids: bool = False) -> str:
    """Hourly series plus a string column whose 1 KB value repeats on every row (and, with `long_ids`,
    series ids of 1 KB each: then a column every run reads is the hostile one)."""
    ids = np.repeat([f"s{i}" + ("-" + BLOB if long_ids else "") for i in range(n_series)], length)
    frame = pd.DataFrame({"series_id": ids, "ds": np.tile(pd.date_range("2026-01-01", periods=length, freq="h"),
                                                          n_series),
                          "y": np.random.default_rng(0).normal(size=n_series * length), "blob": BLOB})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")
    return str(path)


def test_the_estimate_follows_what_is_really_decoded(tmp_path):
    path = _hostile(tmp_path / "in.parquet")
    file_bytes = (tmp_path / "in.parquet").stat().st_size
    meta = pq.ParquetFile(path).metadata
    decoded = pq.read_table(path).nbytes
    estimate = parquet_read_bytes(meta, ["series_id", "ds", "y", "blob"])
    assert file_bytes < 200_000 and decoded > 15_000_000  # small on disk, large once read
    assert 0.8 * decoded <= estimate <= 1.25 * decoded, (estimate, decoded)
    # The encoded size alone would have missed it by two orders of magnitude.
    encoded = sum(meta.row_group(r).column(c).total_uncompressed_size
                  for r in range(meta.num_row_groups) for c in range(meta.num_columns))
    assert encoded < decoded / 20
    assert parquet_read_bytes(meta, ["series_id", "ds", "y"]) < decoded / 20


def test_a_file_over_the_budget_is_split_and_each_shard_reads_within_it(tmp_path):
    path = _hostile(tmp_path / "in.parquet")
    budget = 5 * 2**20
    scratch = str(tmp_path / "scratch" / "run=r")
    whole = plan_shards(path, shard_size=5000, scratch=scratch)
    assert whole.n_shards == 1 and not whole.sharded  # under the default budget: read directly
    plan = plan_shards(path, shard_size=5000, shard_bytes=budget, scratch=scratch)
    assert plan.n_shards >= 4 and plan.sharded and plan.summary()["bytes"] > 15_000_000
    done = split_shards(path, plan)
    series = set()
    for spec in done.shards:
        frame = read_shard(spec.url)
        read = pa.Table.from_pandas(frame, preserve_index=False).nbytes
        assert read <= budget * 1.1, (spec.name, read)
        series |= set(frame["series_id"])
    assert series == {f"s{i}" for i in range(8)}


def test_a_series_alone_over_the_budget_is_refused_naming_it(tmp_path):
    path = _hostile(tmp_path / "in.parquet", n_series=2, length=4000)
    with pytest.raises(DataValidationError) as exc:
        plan_shards(path, shard_bytes=2**20, scratch=str(tmp_path / "s"))
    message = str(exc.value)
    assert message.startswith(f"file {path}, series 's") and "more than shard_bytes (1.0 MiB)" in message
    assert "'blob'" in message and "read fewer columns" in message


def test_only_the_columns_read_count(tmp_path):
    path = _hostile(tmp_path / "in.parquet", n_series=2, length=4000)
    # What a run reads (config.read_columns: id, time, target, declared covariates) leaves the blob unread:
    # the budget that refused the file read whole fits it in one shard.
    columns = validate_config({"freq": "h"}).read_columns()
    assert columns == ["series_id", "ds", "y"]
    plan = plan_shards(path, columns=columns, shard_bytes=2**20, scratch=str(tmp_path / "s"))
    assert plan.n_shards == 1 and plan.bytes < 2**20 and plan.ignored_columns == ["blob"]


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_refuses_it_before_reading_the_data(tmp_path):
    from flows.batch_forecast import batch_forecast

    path = _hostile(tmp_path / "in.parquet", n_series=2, length=4000, long_ids=True)
    out = tmp_path / "out"
    with pytest.raises(DataValidationError, match="more than shard_bytes"):
        batch_forecast(settings={"input_url": path, "output_url": str(out), "freq": "h", "horizon": 12,
                                 "season_length": 24, "shard_bytes": 2**20, "run_id": "wide"})
    assert not (out / "predictions").exists() and not (out / "_scratch").exists()
