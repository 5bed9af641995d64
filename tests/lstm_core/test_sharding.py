"""Shard plans and the one-pass split: stable assignment, each shard's own rows, groups, training samples."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lstm_core.errors import DataValidationError
from lstm_core.inputs import read_series
from lstm_core.shard_plan import plan_shards, shard_of, stable_hash
from lstm_core.shard_split import read_shard, remove_scratch, split_shards
from tests.conftest import make_frame


def _input(tmp_path, n_series=30, groups=False, **kw):
    frame = make_frame(n_series=n_series, length=60, **kw)
    if groups:
        frame["line"] = np.where(frame["series_id"].str[-1].astype(int) < 5, "a", "b")
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # series spread over row groups
    path = tmp_path / "in.parquet"
    frame.to_parquet(path, index=False, row_group_size=300)
    return frame, str(path)


def test_stable_hash_is_the_same_in_another_process():
    ids = ["s00", "shop-17/sku-9", "ü-1", ""]
    here = stable_hash(ids).tolist()
    code = "from lstm_core.shard_plan import stable_hash; print(stable_hash(%r).tolist())" % (ids,)
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert str(here) == there
    assert shard_of(ids, 1).tolist() == [0, 0, 0, 0]


def test_small_input_is_one_shard_read_directly(tmp_path):
    _, url = _input(tmp_path, n_series=12)
    plan = plan_shards(url, shard_size=100, scratch=str(tmp_path / "scratch"))
    assert plan.n_series == 12 and plan.n_shards == 1 and not plan.sharded
    assert plan.shards[0].url is None and plan.groups[0].train is None  # trains on its only shard
    assert split_shards(url, plan) is plan and not (tmp_path / "scratch").exists()


def test_split_writes_each_shard_its_own_series_and_rows(tmp_path):
    frame, url = _input(tmp_path, n_series=30)
    plan = plan_shards(url, shard_size=7, scratch=str(tmp_path / "scratch" / "run=r"))
    n = 5  # ceil(30 / 7) hash buckets
    ids = np.array(sorted(frame["series_id"].unique()), dtype=object)
    expected = {k: set(ids[shard_of(ids, n) == k]) for k in range(n)}
    assert plan.sharded and plan.rows == len(frame)
    assert {s.index: s.n_series for s in plan.shards} == {k: len(v) for k, v in expected.items() if v}
    split = split_shards(url, plan)
    seen = 0
    for s in split.shards:
        part = read_shard(s.url)
        assert set(part["series_id"]) == expected[s.index]
        assert len(part) == s.rows == len(frame[frame["series_id"].isin(expected[s.index])])
        assert list(part.columns) == ["series_id", "ds", "y"]
        seen += len(part)
    assert seen == len(frame)
    # A shard's rows read back as the input's rows read directly (same dtypes, same values).
    s0 = split.shards[0]
    direct = read_series(url, filters=[["series_id", "in", sorted(expected[s0.index])]])
    got = read_shard(s0.url)
    cols = ["series_id", "ds"]
    pd.testing.assert_frame_equal(got.sort_values(cols).reset_index(drop=True),
                                  direct.sort_values(cols).reset_index(drop=True))
    remove_scratch(str(tmp_path / "scratch"), "r")
    assert not (tmp_path / "scratch").exists()


def test_training_sample_is_bounded_stable_and_written_in_the_same_pass(tmp_path):
    frame, url = _input(tmp_path, n_series=30)
    plan = plan_shards(url, shard_size=10, max_train_series=8, scratch=str(tmp_path / "s"))
    again = plan_shards(url, shard_size=10, max_train_series=8, scratch=str(tmp_path / "s"))
    g = plan.groups[0]
    assert g.sample_size == 8 and g.train is not None and g.train.role == "train"
    split = split_shards(url, plan)
    sample = read_shard(split.groups[0].train.url)
    assert sample["series_id"].nunique() == 8 and split.groups[0].train.rows == 8 * 60
    assert g.train_threshold == again.groups[0].train_threshold  # the same sample every run
    # Unsplit input: the sample is read from the input by series id.
    one = plan_shards(url, shard_size=100, max_train_series=8, scratch=str(tmp_path / "s2"))
    assert not one.sharded and set(one.groups[0].train.series_ids) == set(sample["series_id"])


def test_groups_get_their_own_shards(tmp_path):
    frame, url = _input(tmp_path, n_series=20, groups=True)
    plan = plan_shards(url, shard_size=4, group_column="line", scratch=str(tmp_path / "s"))
    assert [g.name for g in plan.groups] == ["a", "b"] and plan.columns == ["series_id", "ds", "y"]
    assert plan.features == ("y",)  # the group column is not a covariate
    split = split_shards(url, plan)
    group_of = frame.drop_duplicates("series_id").set_index("series_id")["line"]
    for s in split.shards:
        assert set(group_of[read_shard(s.url)["series_id"].unique()]) == {s.group}
    assert sum(s.n_series for s in split.shards) == 20


def test_a_series_in_two_groups_or_a_missing_group_column_is_refused(tmp_path):
    frame, url = _input(tmp_path, n_series=6, groups=True)
    with pytest.raises(DataValidationError, match="column 'region'"):
        plan_shards(url, group_column="region")
    frame.loc[frame.index[:3], "line"] = "c"
    frame.to_parquet(url, index=False)
    with pytest.raises(DataValidationError, match="several groups"):
        plan_shards(url, group_column="line")


def test_plan_checks_the_id_column_like_reading_does(tmp_path):
    frame = make_frame(n_series=2, length=5)
    frame.assign(series_id=1).to_parquet(tmp_path / "ints.parquet", index=False)
    with pytest.raises(DataValidationError, match="column 'series_id'.*must be string"):
        plan_shards(str(tmp_path / "ints.parquet"))
    frame.drop(columns=["y"]).to_parquet(tmp_path / "noy.parquet", index=False)
    with pytest.raises(DataValidationError, match="column 'y'"):
        plan_shards(str(tmp_path / "noy.parquet"))


def test_long_series_make_more_shards(tmp_path):
    _, url = _input(tmp_path, n_series=12)  # 60 rows per series
    assert plan_shards(url, shard_size=100, shard_rows=10_000).n_shards == 1
    plan = plan_shards(url, shard_size=100, shard_rows=200, scratch=str(tmp_path / "s"))
    assert len({s.index for s in plan.shards}) >= 3 and plan.sharded  # 720 rows, <= ~200 per shard
    assert sum(s.n_series for s in plan.shards) == 12


def test_an_empty_input_says_it_has_no_rows_when_the_frequency_is_inferred(tmp_path):
    """Found by a user: an empty file without `freq` was reported as 'cannot infer the frequency'."""
    url = str(tmp_path / "empty.parquet")
    make_frame(n_series=2, length=10).iloc[:0].to_parquet(url, index=False)
    with pytest.raises(DataValidationError, match="dataset has no rows") as err:
        plan_shards(url, shard_size=10, scratch=str(tmp_path / "s"), infer_freq=True)
    assert "empty.parquet" in str(err.value)
