"""The job never writes through a symbolic link planted under the output root (issue 16, point 5).

Links planted where the job writes a file (the lease, the manifest, part files, plots) are replaced
by real files; links in folder positions (the run folder, a table, the model store) refuse the run
with a message naming them. Either way the link's target, outside the output root, is unchanged.

Scheduled run ids stay predictable on purpose (a re-run slot must replace its own outputs); what a
planted file or link at a predicted path can do is tested here: nothing but being replaced, or
refusing the run with its path named.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from lstm_core.atomic import LinkRefused, put_bytes
from lstm_core.config import validate_config
from lstm_core.errors import RunLockedError
from lstm_core.lease import RunLease
from lstm_core.location import filesystem
from lstm_core.outputs import RunWriter, slot_run_id
from tests.conftest import make_frame
from tests.reliability.conftest import FAST


def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or `path` itself) with its bytes: what must not change."""
    if path.is_file():
        return {str(path): path.read_bytes()}
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def outside(tmp_path) -> Path:
    """Files and a folder outside the output root, with content a planted link would damage."""
    victim = tmp_path / "outside"
    (victim / "dir").mkdir(parents=True)
    (victim / "dir" / "keep.txt").write_text("precious folder content\n")
    (victim / "file.txt").write_text("precious file content\n")
    return victim


def test_put_bytes_replaces_a_link_at_the_file_and_refuses_one_in_a_folder(tmp_path, outside):
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    before = _snapshot(outside)
    fs, _ = filesystem(str(root))
    os.symlink(outside / "file.txt", root / "a" / "f.json")
    put_bytes(fs, str(root / "a" / "f.json"), b"mine", root=str(root))
    assert not (root / "a" / "f.json").is_symlink() and (root / "a" / "f.json").read_bytes() == b"mine"
    os.symlink(outside / "dir", root / "b")
    with pytest.raises(LinkRefused, match=r"out/b is a symbolic link: refusing to write through it"):
        put_bytes(fs, str(root / "b" / "c" / "f.json"), b"mine", root=str(root))
    assert _snapshot(outside) == before
    assert not list(root.rglob("*.tmp-*")) and not list(root.rglob(".*tmp-*"))


def test_local_lease_never_follows_a_planted_link(tmp_path, outside, caplog):
    root = tmp_path / "out"
    (root / "runs" / "r1").mkdir(parents=True)
    os.symlink(outside / "file.txt", root / "runs" / "r1" / "lease.json")
    before = _snapshot(outside)
    fs, path = filesystem(str(root))
    lease = RunLease.acquire(fs, path, "r1", ttl=60)
    lease_file = root / "runs" / "r1" / "lease.json"
    assert not lease_file.is_symlink() and json.loads(lease_file.read_text())["run_id"] == "r1"
    with pytest.raises(RunLockedError):  # the real file is the lock now
        RunLease.acquire(fs, path, "r1", ttl=60)
    lease.release()
    assert _snapshot(outside) == before
    assert "was a symbolic link; replaced by a real lease file" in caplog.text


def test_a_run_folder_that_is_a_link_refuses_the_run(tmp_path, outside):
    root = tmp_path / "out"
    (root / "runs").mkdir(parents=True)
    os.symlink(outside / "dir", root / "runs" / "r1")
    before = _snapshot(outside)
    fs, path = filesystem(str(root))
    with pytest.raises(LinkRefused, match=r"runs/r1 is a symbolic link"):
        RunLease.acquire(fs, path, "r1", ttl=60)
    assert _snapshot(outside) == before and sorted(os.listdir(outside / "dir")) == ["keep.txt"]


@pytest.mark.parametrize("folder", ["models", "predictions", "runs", "_scratch"])
def test_an_output_folder_that_is_a_link_refuses_the_writer(tmp_path, outside, folder):
    root = tmp_path / "out"
    root.mkdir()
    os.symlink(outside / "dir", root / folder)
    with pytest.raises(LinkRefused, match=f"out/{folder} is a symbolic link"):
        RunWriter.open(str(root), "r1")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_run_over_planted_links_writes_only_under_its_root(tmp_path, outside):
    """A scheduled slot's run id is predictable: links planted at its paths are replaced, never followed."""
    from flows.batch_forecast import batch_forecast

    data = tmp_path / "series.parquet"
    make_frame(n_series=3, length=100).to_parquet(data, index=False)
    root = tmp_path / "out"
    settings = {**FAST, "input_url": str(data), "output_url": str(root)}
    run_id = slot_run_id(datetime(2026, 3, 1, 1, tzinfo=timezone.utc), validate_config(settings).config_hash())
    runs = root / "runs" / run_id
    runs.mkdir(parents=True)
    for table in ("predictions", "metrics"):
        (root / table).mkdir()
    links = {
        runs / "lease.json": outside / "file.txt",
        runs / "manifest.json": outside / "file.txt",
        runs / "plots": outside / "dir",
        root / "predictions" / f"run={run_id}": outside / "dir",
        root / "metrics" / f"run={run_id}": outside / "dir",
    }
    for link, target in links.items():
        os.symlink(target, link)
    before = _snapshot(outside)
    t0 = time.time()

    manifest = batch_forecast(settings={**settings, "run_id": run_id})
    assert manifest["status"] == "succeeded"
    assert _snapshot(outside) == before, "a file outside the output root changed"
    assert all(os.stat(p).st_mtime < t0 for p in before)
    for link in links:
        assert not link.is_symlink(), link
    assert json.loads((runs / "manifest.json").read_text())["status"] == "succeeded"
    preds = pd.read_parquet(root / "predictions" / f"run={run_id}")
    assert len(preds) == 3 * FAST["horizon"]
    assert sorted(p.name for p in (runs / "plots").iterdir()) == ["backtest.png", "error_distribution.png",
                                                                   "forecast_intervals.png", "holdout.png", "loss.png"]
    assert not [p for p in root.rglob("*") if p.is_symlink()]

    # A link in a folder position (here the model store) refuses the run, naming the link; nothing is written.
    (root / "models").rename(root / "models-real")
    os.symlink(outside / "dir", root / "models")
    with pytest.raises(LinkRefused, match=r"out/models is a symbolic link"):
        batch_forecast(settings={**settings, "run_id": "second"})
    assert _snapshot(outside) == before
    assert not (root / "runs" / "second").exists()


@pytest.mark.parametrize("planted, reason", [
    ({"renewed_at_epoch": time.time() + 10 * 365 * 86400, "ttl_s": 60}, "is in the future"),
    ({"renewed_at_epoch": time.time() - 2 * 86400, "ttl_s": 1e12}, "not renewed for"),
    ({"renewed_at_epoch": "soon", "ttl_s": 60}, "the lease is unreadable"),
])
def test_a_lease_planted_for_a_predicted_run_id_on_s3_cannot_hold_it(s3_bucket, s3_endpoint, planted, reason):
    fs, root = filesystem(f"{s3_bucket}/out", {"endpoint_url": s3_endpoint})
    run_id = slot_run_id(datetime(2026, 3, 1, 1, tzinfo=timezone.utc), "3f2a9c1b7d4e")
    fs.pipe_file(f"{root}/runs/{run_id}/lease.json", json.dumps({
        "run_id": run_id, "token": "planted", "host": "elsewhere", "pid": 1, **planted}).encode())
    lease = RunLease.acquire(fs, root, run_id, ttl=60, heartbeat=False)
    assert lease.took_over and reason in lease.took_over
    lease.release()
