"""Fixtures for the reliability tests: a fault proxy in front of moto, the Prefect API URL for
subprocesses, and checks that nothing of a run was committed."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import s3fs

from tests.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("lstm-forecast"))
H = 12
FAST = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24,
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64},
}
# The same settings as CLI flags.
FAST_FLAGS = ["--freq", "h", "--horizon", str(H), "--season", "24", "--set", "window=24",
              "--set", "model.units=[8]", "--set", "training.epochs=3", "--set", "training.patience=2",
              "--set", "training.windows_per_series=16", "--set", "training.batch_size=64"]


def direct_fs(endpoint: str) -> s3fs.S3FileSystem:
    """A client straight to moto (no proxy), for setting up and checking."""
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def put_frame(fs, url: str, frame: pd.DataFrame) -> str:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    fs.pipe_file(url, buf.getvalue())
    return url


def read_parquet(fs, url: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(fs.cat_file(url)))


def keys_under(fs, url: str) -> list[str]:
    fs.invalidate_cache()
    try:
        return sorted(fs.find(url))
    except FileNotFoundError:
        return []


def assert_nothing_committed(fs, output_url: str, run_id: str, *, manifest: str = "failed") -> dict | None:
    """No partition of `run_id` and no model were written; the manifest is 'failed' (or absent)."""
    keys = keys_under(fs, output_url)
    base = output_url.removeprefix("s3://")
    for table in ("predictions", "metrics", "quarantine", "backtest"):
        assert not [k for k in keys if k.startswith(f"{base}/{table}/")], (table, keys)
    assert not [k for k in keys if k.startswith(f"{base}/models/")], keys
    path = f"{output_url}/runs/{run_id}/manifest.json"
    assert not [k for k in keys if k.startswith(f"{base}/runs/{run_id}/") and not k.endswith("manifest.json")], keys
    if manifest == "absent":
        assert not fs.exists(path)
        return None
    stored = json.loads(fs.cat_file(path))
    assert stored["status"] == manifest
    return stored


@pytest.fixture
def make_proxy(s3_endpoint):
    """Factory: a started FaultProxy in front of the moto server, stopped after the test."""
    proxies = []

    def make(**kw) -> FaultProxy:
        proxy = FaultProxy(upstream=s3_endpoint, **kw).start()
        proxies.append(proxy)
        return proxy

    yield make
    for p in proxies:
        p.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def cli_env(prefect_api_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("LSTM_FORECAST_DEBUG", None)
    return env


def start_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], env=env, cwd=cwd or ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run_cli(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lstm-forecast: error:")]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process we started (by its id): no cleanup, no finally blocks, like a lost worker."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
