"""Real processes: a run SIGKILLed while it writes, and runs at once on the same output location.

The CLI runs as a user runs it (a subprocess) against moto S3 and the Prefect test server. To
stop a run at a chosen point without a hook in the product, the fault proxy holds one of its
PUT requests (the metrics partition): the process is then frozen mid-write, after its
predictions partition and before its manifest. The held process gets a long read timeout
(a storage option), or botocore would time out and retry the held PUT past the hold by itself.
"""
from __future__ import annotations

import json

import pytest

from lstm_core.outputs import committed_runs, read_committed
from tests.conftest import make_frame
from tests.faultproxy import Rule
from tests.reliability.conftest import (FAST_FLAGS, H, cli_env, direct_fs, error_lines, keys_under, kill, put_frame,
                                        read_parquet, run_cli, start_cli, wait_for)

pytestmark = pytest.mark.slow
N_SERIES = 4
HELD = ("--set", "storage_options.config_kwargs.read_timeout=900")


@pytest.fixture
def s3_input(s3_bucket, s3_endpoint):
    return put_frame(direct_fs(s3_endpoint), f"{s3_bucket}/in/series.parquet",
                     make_frame(n_series=N_SERIES, length=100))


def _assert_one_complete_copy(fs, out: str, run_id: str, opts: dict) -> None:
    preds = read_committed(out, "predictions", opts)
    preds = preds[preds["run_id"] == run_id]
    assert len(preds) == N_SERIES * H, len(preds)
    assert not preds.duplicated(["series_id", "step"]).any()
    assert sorted(preds.groupby("series_id")["step"].apply(sorted).iloc[0]) == list(range(1, H + 1))
    metrics = read_committed(out, "metrics", opts)
    metrics = metrics[metrics["run_id"] == run_id]
    metrics = metrics[metrics["backtest_window"].isna() & metrics["metric"].isin(["mae", "rmse", "smape", "mase"])]  # over all windows
    # 4 point metrics per series and pooled of each model: the network, the two naive candidates and the served
    # forecast (the statistical models are not fitted to these long series)
    assert set(metrics["model"]) == {"lstm", "seasonal_naive", "naive", "served"}
    assert len(metrics) == 4 * 4 * (N_SERIES + 1) and not metrics.duplicated(["series_id", "metric", "model"]).any()
    manifest = json.loads(fs.cat_file(f"{out}/runs/{run_id}/manifest.json"))
    assert manifest["status"] == "succeeded" and manifest["counts"]["prediction_rows"] == N_SERIES * H


def test_sigkill_while_writing_outputs_then_rerun_leaves_exactly_one_copy(s3_input, s3_bucket, s3_endpoint,
                                                                          make_proxy, prefect_api_url):
    fs = direct_fs(s3_endpoint)
    out = f"{s3_bucket}/out"
    opts = {"endpoint_url": s3_endpoint}
    proxy = make_proxy(rules=[Rule("hold", method="PUT", path=r"/metrics/run=nightly/")])
    args = ("run", "--input", s3_input, "--output", out, *FAST_FLAGS, "--set", "run_id=nightly")
    proc = start_cli(*args, *HELD, env=cli_env(prefect_api_url, AWS_ENDPOINT_URL=proxy.url))
    try:
        wait_for(proxy.held.is_set, 300, "the run to write its metrics", proc)
        # Frozen mid-write: predictions written, metrics in flight, no manifest.
        assert fs.exists(f"{out}/predictions/run=nightly/part-0.parquet")
        assert not fs.exists(f"{out}/runs/nightly/manifest.json")
        kill(proc)  # SIGKILL: no exception handler, no finally, no failure manifest
    finally:
        kill(proc)
        proxy.release()  # the held PUT is dropped, never forwarded
    assert proc.returncode == -9
    # Readers trust nothing of the killed attempt; its lease stays behind.
    assert committed_runs(out, opts) == []
    assert fs.exists(f"{out}/runs/nightly/lease.json")

    # The same run id again, in a new process on this machine: it takes over the dead lease.
    rerun = run_cli(*args, env=cli_env(prefect_api_url))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "took over a stale lease" in rerun.stderr and "no longer runs" in rerun.stderr
    assert committed_runs(out, opts) == ["nightly"]
    _assert_one_complete_copy(fs, out, "nightly", opts)
    # Exactly the contract's objects: one part per table, the manifest, no lease, no temp files.
    keys = [k.removeprefix(f"{out.removeprefix('s3://')}/") for k in keys_under(fs, out)]
    outputs = sorted(k for k in keys if not k.startswith("models/"))
    assert outputs == ["backtest/run=nightly/part-0.parquet", "metrics/run=nightly/part-0.parquet",
                       "predictions/run=nightly/part-0.parquet", "quarantine/run=nightly/part-0.parquet",
                       "runs/nightly/manifest.json", "runs/nightly/plots/backtest.png",
                       "runs/nightly/plots/error_distribution.png", "runs/nightly/plots/forecast_intervals.png",
                       "runs/nightly/plots/holdout.png",
                       "runs/nightly/plots/loss.png"]


def test_runs_at_once_commit_distinct_complete_runs_and_the_same_run_id_is_refused(
        s3_input, s3_bucket, s3_endpoint, make_proxy, prefect_api_url):
    fs = direct_fs(s3_endpoint)
    out = f"{s3_bucket}/out"
    opts = {"endpoint_url": s3_endpoint}
    proxy = make_proxy(rules=[Rule("hold", method="PUT", path=r"/metrics/run=run-a/", times=1)])
    common = ("run", "--input", s3_input, "--output", out, *FAST_FLAGS)
    # A and C start together on the same output location; A is frozen mid-write while C runs.
    a = start_cli(*common, "--set", "run_id=run-a", *HELD, env=cli_env(prefect_api_url, AWS_ENDPOINT_URL=proxy.url))
    c = start_cli(*common, "--set", "run_id=run-c", env=cli_env(prefect_api_url))
    try:
        wait_for(proxy.held.is_set, 300, "run-a to write its metrics", a)
        before = fs.info(f"{out}/predictions/run=run-a/part-0.parquet")["ETag"]
        # B: the same run id as A, while A runs. Refused before any work, touching nothing.
        b = run_cli(*common, "--set", "run_id=run-a", env=cli_env(prefect_api_url))
        assert b.returncode == 3, b.stderr[-3000:]
        lines = error_lines(b.stderr)
        assert len(lines) == 1 and "run run-a is already running" in lines[0] and f"pid {a.pid}" in lines[0], lines
        assert "Traceback" not in b.stderr
        assert fs.info(f"{out}/predictions/run=run-a/part-0.parquet")["ETag"] == before
        assert not fs.exists(f"{out}/runs/run-a/manifest.json")

        c_out, c_err = c.communicate(timeout=300)
        assert c.returncode == 0, c_err[-3000:]
        proxy.release()  # A's held PUT is dropped; its retry goes through and A finishes
        a_out, a_err = a.communicate(timeout=300)
        assert a.returncode == 0, a_err[-3000:]
    finally:
        proxy.release()
        kill(a)
        kill(c)
    assert committed_runs(out, opts) == ["run-a", "run-c"]
    for run_id in ("run-a", "run-c"):
        _assert_one_complete_copy(fs, out, run_id, opts)
        part = read_parquet(fs, f"{out}/predictions/run={run_id}/part-0.parquet")
        assert (part["run_id"] == run_id).all()
    assert not [k for k in keys_under(fs, out) if k.endswith("lease.json")]
