"""The run lease (lstm_core.lease) on a real S3 server (moto) and on a local disk."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from lstm_core.errors import LeaseLostError, RunLockedError
from lstm_core.lease import RunLease
from lstm_core.location import filesystem
from lstm_core.outputs import RunWriter
from tests.faultproxy import Rule
from tests.reliability.conftest import ROOT, direct_fs


@pytest.fixture
def store(s3_bucket, s3_endpoint):
    fs, root = filesystem(f"{s3_bucket}/out", {"endpoint_url": s3_endpoint})
    return fs, root


def test_second_acquire_of_a_live_run_id_is_refused_naming_the_holder(store):
    fs, root = store
    with RunLease.acquire(fs, root, "r1", ttl=60):
        with pytest.raises(RunLockedError) as exc:
            RunLease.acquire(fs, root, "r1", ttl=60)
        message = str(exc.value)
        assert "run r1 is already running" in message and f"pid {__import__('os').getpid()}" in message
        assert "runs/r1/lease.json" in message
        RunLease.acquire(fs, root, "r2", ttl=60).release()  # other run ids are free
    again = RunLease.acquire(fs, root, "r1", ttl=60)  # released: free again
    again.release()
    assert not fs.exists(f"{root}/runs/r1/lease.json")


def test_heartbeat_keeps_a_live_lease_from_going_stale(store):
    fs, root = store
    with RunLease.acquire(fs, root, "r1", ttl=1.0):
        time.sleep(2.5)  # > ttl: only the heartbeat keeps it fresh
        with pytest.raises(RunLockedError):
            RunLease.acquire(fs, root, "r1", ttl=1.0)


def test_a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit(store):
    fs, root = store
    stalled = RunLease.acquire(fs, root, "r1", ttl=1.0, heartbeat=False)  # a process that hangs
    time.sleep(1.5)
    fresh = RunLease.acquire(fs, root, "r1", ttl=60)
    assert fresh.took_over and "not renewed for" in fresh.took_over
    writer = RunWriter(fs, root, "r1", lease=stalled)
    with pytest.raises(LeaseLostError, match="lost its lease"):
        writer.commit({"status": "succeeded"})
    assert not fs.exists(writer.manifest_path)
    stalled.release()  # must not delete the new holder's lease
    assert json.loads(fs.cat_file(f"{root}/runs/r1/lease.json"))["token"] == fresh.token
    fresh.release()


def test_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once(store):
    fs, root = store
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from lstm_core.lease import RunLease; "
            "from lstm_core.location import filesystem; "
            "fs, root = filesystem(sys.argv[2], {'endpoint_url': sys.argv[3]}); "
            "RunLease.acquire(fs, root, 'r1', ttl=3600, heartbeat=False)")  # exits without releasing
    subprocess.run([sys.executable, "-c", code, str(ROOT), f"s3://{root}", fs.endpoint_url], check=True, timeout=120)
    held = json.loads(fs.cat_file(f"{root}/runs/r1/lease.json"))
    lease = RunLease.acquire(fs, root, "r1", ttl=3600)
    assert lease.took_over and f"pid {held['pid']} on this machine, no longer runs" in lease.took_over
    lease.release()


def test_a_lost_reply_to_the_conditional_create_is_recognised(s3_bucket, make_proxy):
    proxy = make_proxy(rules=[Rule("lost_reply", method="PUT", path=r"runs/r1/lease\.json", times=1)])
    fs, root = filesystem(f"{s3_bucket}/out", {"endpoint_url": proxy.url})
    lease = RunLease.acquire(fs, root, "r1", ttl=60)  # the retried create meets our own lease: ours
    assert proxy.by_kind == {"lost_reply": 1} and lease.took_over is None
    lease.check()
    lease.release()


def test_local_lease_is_a_lock_the_kernel_frees_when_its_holder_dies(tmp_path):
    fs, root = filesystem(str(tmp_path / "out"))
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from lstm_core.lease import RunLease; "
            "from lstm_core.location import filesystem; fs, root = filesystem(sys.argv[2]); "
            "RunLease.acquire(fs, root, 'r1', ttl=60); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(tmp_path / "out")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLease.acquire(fs, root, "r1", ttl=60)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    lease = RunLease.acquire(fs, root, "r1", ttl=60)  # the SIGKILLed holder's lock is gone
    lease.release()


def test_begin_keeps_the_lease_and_clears_an_earlier_attempt(store):
    fs, root = store
    with RunLease.acquire(fs, root, "r1", ttl=60) as lease:
        writer = RunWriter(fs, root, "r1", lease=lease)
        writer.write("quarantine", pd.DataFrame({"series_id": ["a"], "field": ["y"], "reason": ["x"]}))
        writer.commit({"status": "succeeded"})
        writer.begin()
        assert not fs.exists(writer.manifest_path)
        assert not fs.exists(writer.part_path("quarantine"))
        assert fs.exists(f"{root}/runs/r1/lease.json")
