"""Import face of the shard modules, for code not yet moved to their homes (issue 24 step 4).

What this module held now lives by concern; new code imports from there:

- `lstm_core.shard_plan`: planning (`plan_shards`, `ShardPlan`, `GroupPlan`, `ShardSpec`, `stable_hash`,
  `shard_of`, `sample_frequency`);
- `lstm_core.shard_split`: splitting (`split_shards`, `read_shard`, `remove_scratch`).

Kept only so modules being rewritten in parallel (tuning, the batch flow) import unchanged; the names
below are the same objects as in their homes.
"""
from __future__ import annotations

from lstm_core.shard_plan import GroupPlan, ShardPlan, ShardSpec, plan_shards, sample_frequency, shard_of, stable_hash
from lstm_core.shard_split import read_shard, remove_scratch, split_shards

__all__ = ["GroupPlan", "ShardPlan", "ShardSpec", "plan_shards", "read_shard", "remove_scratch", "sample_frequency",
           "shard_of", "split_shards", "stable_hash"]
