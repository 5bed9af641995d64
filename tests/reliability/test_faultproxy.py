"""The fault proxy itself: forwards faithfully, injects what it is told, bounded and repeatable."""
from __future__ import annotations

import pytest

from lstm_core.atomic import read_json, write_json
from lstm_core.location import filesystem
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


def test_recorded_requests_keep_order_headers_and_the_keys_a_delete_names(s3_bucket, make_proxy):
    proxy = make_proxy(record=r"/rec/|[?]delete")
    fs, root = filesystem(f"{s3_bucket}/rec", {"endpoint_url": proxy.url})
    fs.pipe_file(f"{root}/one.json", b"1", mode="create")
    write_json(fs, f"{root}/dir/a.json", {"a": 1})
    write_json(fs, f"{root}/dir/b&c.json", {"b": 2})
    fs.rm_file(f"{root}/one.json")
    fs.rm(f"{root}/dir", recursive=True)
    seen = proxy.seen_requests()
    bucket = s3_bucket.removeprefix("s3://")
    puts = [r for r in seen if r.method == "PUT"]
    assert [r.path.split("?")[0] for r in puts] == [f"/{bucket}/rec/one.json", f"/{bucket}/rec/dir/a.json",
                                                    f"/{bucket}/rec/dir/b&c.json"]
    assert puts[0].header("if-none-match") == "*" and puts[1].header("If-None-Match") is None
    assert puts[1].body == b'{\n  "a": 1\n}'
    deleted = [k for r in seen for k in r.deleted_keys()]
    assert deleted[0] == f"{bucket}/rec/one.json", deleted
    # s3fs deletes the folder's objects in one DeleteObjects POST (and the folder key itself)
    assert {f"{bucket}/rec/dir/a.json", f"{bucket}/rec/dir/b&c.json"} <= set(deleted[1:]), deleted
    assert any(r.method == "POST" and len(r.deleted_keys()) >= 2 for r in seen)
