"""`--workers`: the local Dask cluster a run starts is closed to everyone else (issue 26, finding 5).

The real cluster the product starts (flows/cluster.py, as a run or a tune with `workers: 1` starts it, one
recipe for both): TLS with a certificate made for it, every listener on 127.0.0.1, no dashboard; a client
without the certificate (any other local user who finds the port) cannot connect, over TLS or plain TCP; the
run's credentials are not in the workers' environment, which their child processes inherit: the workers hold
them in memory; and the workers ignore the terminal's Ctrl-C (the flow's process stops them in order).
"""
from __future__ import annotations

import contextlib
import os
import uuid

import httpx
import pytest

from lstm_core.config import validate_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _no_env_secret() -> dict:
    import os as _os

    return {k: v for k, v in _os.environ.items() if k.startswith(("LSTM_FORECAST_", "AWS_"))}


def _sigint_ignored() -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


@contextlib.contextmanager
def _cluster_client(started_by: str, config):
    """The client of the local cluster a batch run (its task runner) or a tune (its study client) starts."""
    if started_by == "run":
        from flows.runners import _real_runner

        with _real_runner(config) as (runner, description, _):
            assert description["workers"] == 1
            yield runner.client
    else:
        from flows.tune import study_client

        with study_client(config) as client:
            yield client


def _held() -> dict:
    from lstm_core.secrets import _HELD_STORAGE_OPTIONS

    return dict(_HELD_STORAGE_OPTIONS)


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and inode in inodes:  # LISTEN
                    host, port = local.split(":")
                    out.add((host, int(port, 16)))
    return out


@pytest.mark.parametrize("started_by", ["run", "tune"])
def test_the_local_cluster_is_tls_on_loopback_without_a_dashboard(monkeypatch, started_by):
    from distributed import Client

    monkeypatch.delenv("LSTM_FORECAST_DASK_DASHBOARD", raising=False)
    monkeypatch.delenv("LSTM_FORECAST_STORAGE_OPTIONS", raising=False)
    secret = f"worker-secret-{uuid.uuid4().hex}"
    config = validate_config({"workers": 1, "storage_options": {"key": "AKIAWORKER123", "secret": secret}})
    with _cluster_client(started_by, config) as client:
        address = client.scheduler.address
        info = client.scheduler_info()
        assert address.startswith("tls://127.0.0.1:"), address
        assert all(w.startswith("tls://127.0.0.1:") for w in info["workers"]), info["workers"]
        # No dashboard: the scheduler's HTTP server (always there, for health checks) is on a free loopback
        # port, not 8787, and serves the health check only: nothing of the cluster, its tasks or its workers.
        http = info["services"]["dashboard"]
        assert http != 8787
        assert httpx.get(f"http://127.0.0.1:{http}/health", timeout=5).status_code == 200
        for path in ("/status", "/info/main/workers.html", "/json/identity.json", "/metrics", "/proxy/8787/127.0.0.1/"):
            assert httpx.get(f"http://127.0.0.1:{http}{path}", timeout=5).status_code == 404, path
        # Nothing the cluster's processes listen on is reachable from another machine.
        pids = [os.getpid(), *client.run(os.getpid).values()]
        for pid in pids:
            for host, port in _listening_ports(pid):
                assert host in ("0100007F", "00000000000000000000000001000000") or port == 0 or \
                    pid == os.getpid(), (pid, host, port)
        scheduler_port = int(address.rsplit(":", 1)[1])
        assert ("0100007F", scheduler_port) in _listening_ports(os.getpid())
        # Without the cluster's certificate, no client gets in: plain TCP, or TLS with a certificate of its own.
        from distributed.security import Security

        for attempt, security in ((address.replace("tls://", "tcp://"), None), (address, Security.temporary())):
            with pytest.raises((OSError, TimeoutError)):
                Client(attempt, security=security, timeout="3s")
        # The credentials are held in the workers' memory, not in their environment.
        envs = client.run(_no_env_secret)
        assert envs and all(secret not in str(env) for env in envs.values()), envs
        held = client.run(_held)
        assert all(h.get("secret") == secret for h in held.values())
        with open(f"/proc/{pids[1]}/environ", "rb") as fh:
            assert secret.encode() not in fh.read()
        assert all(client.run(_sigint_ignored).values())  # a terminal's Ctrl-C does not kill them


def test_a_dashboard_only_when_asked_and_on_loopback(monkeypatch):
    from flows.cluster import dashboard_address, local_cluster_kwargs

    monkeypatch.delenv("LSTM_FORECAST_DASK_DASHBOARD", raising=False)
    kwargs = local_cluster_kwargs(2, validate_config({"workers": 2}))
    assert kwargs["dashboard_address"] is None and kwargs["worker_dashboard_address"] is None
    assert kwargs["host"] == "127.0.0.1" and kwargs["protocol"] == "tls://" and kwargs["security"].require_encryption
    assert "LSTM_FORECAST_STORAGE_OPTIONS" not in kwargs["env"]
    monkeypatch.setenv("LSTM_FORECAST_DASK_DASHBOARD", "8787")
    assert dashboard_address() == "127.0.0.1:8787"
    monkeypatch.setenv("LSTM_FORECAST_DASK_DASHBOARD", ":8788")
    assert dashboard_address() == "127.0.0.1:8788"
    monkeypatch.setenv("LSTM_FORECAST_DASK_DASHBOARD", "0.0.0.0:8787")  # asked for explicitly
    assert dashboard_address() == "0.0.0.0:8787"


def test_a_run_on_the_local_cluster_reaches_storage_with_the_credentials_held_in_memory(
        s3_bucket, s3_endpoint, tmp_path, monkeypatch):
    """End to end: the only credentials are the config file's; the process (so the workers' inherited
    environment) has none. Workers read their shards and write outputs with the ones held in memory."""
    from flows.batch_forecast import batch_forecast
    from tests.conftest import make_frame
    from tests.reliability.conftest import FAST, direct_fs, put_frame

    put_frame(direct_fs(s3_endpoint), f"{s3_bucket}/in/series.parquet", make_frame(n_series=4, length=100))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "LSTM_FORECAST_STORAGE_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "job.yaml"
    config.write_text(f"storage_options:\n  key: AKIAHELD0123\n  secret: held-secret-{uuid.uuid4().hex}\n"
                      f"  endpoint_url: {s3_endpoint}\n")
    manifest = batch_forecast(config_path=str(config), settings={
        **FAST, "input_url": f"{s3_bucket}/in/series.parquet", "output_url": f"{s3_bucket}/out", "workers": 1,
        "shard_size": 2, "run_id": "held"})
    assert manifest["status"] == "succeeded" and manifest["execution"]["cluster"] == "LocalCluster"
    assert manifest["shards"]["count"] == 2 and manifest["counts"]["series_forecast"] == 4
