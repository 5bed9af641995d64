"""The fault proxy itself: forwards faithfully, injects what it is told, bounded and repeatable."""
from __future__ import annotations

import pytest

from lstm_core.storage import filesystem, read_json, write_json
from tests.faultproxy import FaultProxy, Rule


def _sequence(upstream: str, seed: int, n: int = 40) -> list[str | None]:
    proxy = FaultProxy(upstream, rate=0.3, seed=seed)
    return [proxy.decide("GET", f"/b/k{i}") for i in range(n)]


def test_same_seed_same_faults_and_the_share_is_about_right(s3_endpoint):
    assert _sequence(s3_endpoint, 7) == _sequence(s3_endpoint, 7)
    assert _sequence(s3_endpoint, 7) != _sequence(s3_endpoint, 8)
    proxy = FaultProxy(s3_endpoint, rate=0.1, seed=1)
    kinds = [proxy.decide("PUT", "/b/k") for _ in range(2000)]
    assert 150 < sum(k is not None for k in kinds) < 250
    assert proxy.faults_injected == sum(k is not None for k in kinds) and proxy.requests == 2000
    assert set(proxy.by_kind) == {"500", "503", "reset", "lost_reply"}


def test_faults_are_bounded_and_rules_match_method_and_decoded_path(s3_endpoint):
    proxy = FaultProxy(s3_endpoint, rate=1.0, seed=0, max_faults=3)
    assert sum(proxy.decide("GET", "/x") is not None for _ in range(10)) == 3
    ruled = FaultProxy(s3_endpoint, rules=[Rule("403", method="PUT", path=r"/metrics/run=a/", times=2)])
    assert ruled.decide("GET", "/b/metrics/run=a/part-0.parquet") is None
    assert [ruled.decide("PUT", "/b/metrics/run=a/part-0.parquet") for _ in range(3)] == ["403", "403", None]
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultProxy(s3_endpoint, kinds=("teapot",))


def test_requests_through_the_proxy_reach_s3_intact_despite_faults(s3_bucket, make_proxy):
    proxy = make_proxy(rate=0.3, seed=3)
    fs, root = filesystem(f"{s3_bucket}/x", {"endpoint_url": proxy.url})
    for i in range(10):
        write_json(fs, f"{root}/{i}.json", {"i": i, "pad": "é" * 500})
    assert [read_json(fs, f"{root}/{i}.json")["i"] for i in range(10)] == list(range(10))
    assert sorted(fs.ls(root, detail=False, refresh=True)) == sorted(f"{root}/{i}.json" for i in range(10))
    assert proxy.faults_injected > 0 and proxy.requests > 20
