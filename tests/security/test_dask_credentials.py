"""On an existing Dask cluster, the credentials of the config file never reach the scheduler or the workers
(issue 16, point 3): the workers use the credentials of their own environment.

A real `dask scheduler` and `dask worker` (separate processes, as a user runs them); the run's storage
options hold a distinct key and secret; afterwards both processes' memory is read (/proc/<pid>/mem) and
searched for them. The run's own id is searched too, to show the scan sees what did travel.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port, make_frame
from tests.reliability.conftest import FAST, direct_fs, put_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))


def _memory_holds(pid: int, needles: list[bytes]) -> set[bytes]:
    """Which of `needles` occur anywhere in the readable memory of process `pid`."""
    found: set[bytes] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            lo, hi, perms = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
            if not perms.startswith("r") or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            found.update(n for n in needles if n in data)
    return found


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_config_file_credentials_never_reach_the_cluster(s3_bucket, s3_endpoint, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.batch_forecast import batch_forecast

    try:
        _memory_holds(os.getpid(), [b"x"])
    except PermissionError:
        pytest.skip("this machine does not let a process read its children's memory")
    key, secret = f"AKIACFG{uuid.uuid4().hex[:12].upper()}", f"cfgsecret-{uuid.uuid4().hex}"
    run_id = f"dask-{uuid.uuid4().hex[:10]}"
    fs = direct_fs(s3_endpoint)
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=6, length=100))
    config = tmp_path / "job.yaml"
    config.write_text(f"storage_options:\n  key: {key}\n  secret: {secret}\n  endpoint_url: {s3_endpoint}\n")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LSTM_FORECAST_"))}
    env.update({"PREFECT_API_URL": PREFECT_API_URL.value(), "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                # the workers' own credentials (moto accepts any): what they must use
                "AWS_ACCESS_KEY_ID": "AKIAWORKERONLY", "AWS_SECRET_ACCESS_KEY": "worker-own-secret",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint})
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("scheduler", "worker")}
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0"], env=env, cwd=ROOT, stdout=logs["scheduler"],
                                 stderr=subprocess.STDOUT)
    worker = subprocess.Popen([DASK, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-nanny",
                               "--dashboard-address", ":0"], env=env, cwd=ROOT, stdout=logs["worker"],
                              stderr=subprocess.STDOUT)
    try:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=120) as client:
            client.wait_for_workers(1, timeout=180)
        manifest = batch_forecast(config_path=str(config), settings={
            **FAST, "input_url": f"{s3_bucket}/in/series.parquet", "output_url": f"{s3_bucket}/out",
            "dask_address": f"tcp://127.0.0.1:{port}", "shard_size": 3, "run_id": run_id})
        assert manifest["status"] == "succeeded" and manifest["execution"]["address"].endswith(str(port))
        assert manifest["shards"]["count"] >= 2
        time.sleep(1)
        for name, proc in (("scheduler", scheduler), ("worker", worker)):
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            held = _memory_holds(proc.pid, [key.encode(), secret.encode(), run_id.encode()])
            assert run_id.encode() in held, f"the scan of the {name} sees nothing of the run"
            assert key.encode() not in held and secret.encode() not in held, f"credentials reached the {name}"
    finally:
        for proc in (worker, scheduler):
            _stop(proc)
        for fh in logs.values():
            fh.close()
