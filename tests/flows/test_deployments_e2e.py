"""End to end, as it runs in production: `prefect server start`, a moto S3 server, and `lstm-forecast serve`
with a cron of every minute, all real processes. A scheduled run happens on its own; the same slot is re-run;
the manual deployment is triggered with `prefect deployment run`; the artifacts are read back from the API.
"""
from __future__ import annotations

import io
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import s3fs

from tests.conftest import free_port, make_frame

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
N_SERIES, H = 4, 12
SERVE_FLAGS = [
    "--freq", "h", "--horizon", str(H), "--season", "24", "--cron", "* * * * *", "--timezone", "UTC",
    "--set", "window=24", "--set", "model.units=[8]", "--set", "training.epochs=2",
    "--set", "training.patience=1", "--set", "training.windows_per_series=8", "--set", "training.batch_size=64",
]
TERMINAL_BAD = {"FAILED", "CRASHED", "CANCELLED"}


class Proc:
    """A background process in its own process group, with its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.log = name, log_dir / f"{name}.log"
        self.fh = open(self.log, "wb")
        self.popen = subprocess.Popen(args, env=env, stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole group (flow-run children included), then SIGKILL if it lingers."""
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # leftovers of the group (a flow-run process whose parent already exited)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.fh.close()


def _wait(what: str, check, timeout: float, interval: float = 2.0, diagnostics=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint, request):
    """Prefect server + S3 input + `lstm-forecast serve` (every minute); everything stopped by PID at the end."""
    import s3fs as _s3fs

    tmp = tmp_path_factory.mktemp("deployments")
    bucket = f"e2e-serve-{os.getpid()}"
    fs = _s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)
    frame = make_frame(n_series=N_SERIES, length=150)
    with fs.open(f"{bucket}/input/series.parquet", "wb") as fh:
        frame.to_parquet(fh, index=False)

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base_env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2",
                     "PYTHONUNBUFFERED": "1"})
    procs: list[Proc] = []
    request.addfinalizer(lambda: [p.stop() for p in reversed(procs)])

    server_env = {**base_env, "PREFECT_HOME": str(tmp / "server-home"), "PREFECT_SERVER_UI_ENABLED": "false",
                  "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                  "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"}
    server = Proc("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                     "--port", str(port)], server_env, tmp)
    procs.append(server)

    def healthy():
        assert server.popen.poll() is None, f"prefect server exited:\n{server.tail()}"
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("the Prefect server's /api/health", healthy, timeout=180, interval=1, diagnostics=server.tail)

    client_env = {**base_env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp / "client-home"),
                  "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    output = f"s3://{bucket}/output"
    serve = Proc("serve", [str(BIN / "lstm-forecast"), "serve", "--input", f"s3://{bucket}/input/series.parquet",
                           "--output", output, *SERVE_FLAGS], client_env, tmp)
    procs.append(serve)

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield {"api": api, "env": client_env, "server": server, "serve": serve, "fs": fs, "bucket": bucket,
               "output": output, "frame": frame, "state": {}}


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _diagnostics(stack) -> str:
    return f"--- serve log ---\n{stack['serve'].tail()}\n--- server log ---\n{stack['server'].tail(1500)}"


def _deployment(stack, name: str):
    def find():
        assert stack["serve"].popen.poll() is None, f"lstm-forecast serve exited:\n{_diagnostics(stack)}"
        with _client() as client:
            try:
                return client.read_deployment_by_name(f"batch-forecast/{name}")
            except Exception:  # noqa: BLE001 - not registered yet
                return None
    return _wait(f"deployment batch-forecast/{name}", find, timeout=240, diagnostics=lambda: _diagnostics(stack))


def _runs(deployment_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with _client() as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))


def _manifest(stack, run_id: str) -> dict:
    stack["fs"].invalidate_cache()
    return json.loads(stack["fs"].cat(f"{stack['output']}/runs/{run_id}/manifest.json"))


def _rows_of(stack, table: str, run_id: str) -> pd.DataFrame:
    """Every row of `table` that carries `run_id`, read across all partitions (what a reader would see)."""
    fs = stack["fs"]
    fs.invalidate_cache()
    frames = []
    for path in fs.glob(f"{stack['output']}/{table}/run=*/*.parquet"):
        with fs.open(path, "rb") as fh:
            frames.append(pd.read_parquet(io.BytesIO(fh.read())))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"run_id": []})
    return rows[rows["run_id"] == run_id]


def _scheduled_run(stack):
    """The first scheduled run, waited for until it completes on its own (cached for the later tests)."""
    if "scheduled" in stack["state"]:
        return stack["state"]["scheduled"]
    deployment = _deployment(stack, "scheduled")

    def completed():
        runs = _runs(deployment.id)
        bad = [r for r in runs if r.state_type and r.state_type.value in TERMINAL_BAD]
        assert not bad, f"scheduled run ended {bad[0].state_type.value}: {bad[0].state}\n{_diagnostics(stack)}"
        done = [r for r in runs if r.state_type and r.state_type.value == "COMPLETED"]
        return done[0] if done else None

    run = _wait("a scheduled run to complete", completed, timeout=420, interval=3,
                diagnostics=lambda: _diagnostics(stack))
    with _client() as client:  # no more slots: the remaining tests run one flow at a time
        client.pause_deployment(deployment.id)
    stack["state"]["scheduled"] = (deployment, run)
    return deployment, run


def test_scheduled_run_completes_on_its_own_and_commits_to_s3(stack):
    from lstm_core.config import load_config
    from lstm_core.outputs import slot_run_id

    deployment, run = _scheduled_run(stack)
    assert run.auto_scheduled
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert deployment.parameters["settings"]["horizon"] == H
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "* * * * *" and schedule.active

    # The run id is the slot's: its scheduled start in UTC and the hash of the configuration.
    config = load_config(deployment.parameters["config_path"], overrides=deployment.parameters["settings"])
    run_id = slot_run_id(run.expected_start_time, config.config_hash())
    manifest = _manifest(stack, run_id)
    assert manifest["status"] == "succeeded", manifest
    assert manifest["run_id_source"] == "schedule" and manifest["flow_run_id"] == str(run.id)
    assert manifest["counts"]["series_forecast"] == N_SERIES
    preds = _rows_of(stack, "predictions", run_id)
    assert len(preds) == N_SERIES * H and np.isfinite(preds["yhat"]).all()
    # Not a terminal: the served process logs no progress line.
    assert "\x1b[K" not in stack["serve"].tail(10**6)
    # It said when the schedule fires next (every minute: a whole minute, in UTC).
    assert re.search(r"next scheduled run \d{4}-\d\d-\d\dT\d\d:\d\d:00\+00:00 \('\* \* \* \* \*', UTC\)",
                     stack["serve"].tail(10**6))
    stack["state"]["scheduled_run_id"] = run_id


def test_artifacts_hold_the_metrics_of_the_metrics_parquet(stack):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tasks.reporting import METRICS_KEY, SUMMARY_KEY

    _, run = _scheduled_run(stack)
    run_id = stack["state"].get("scheduled_run_id") or pytest.skip("needs the scheduled run's id")
    with _client() as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    by_key = {a.key: a for a in artifacts}
    assert {METRICS_KEY, SUMMARY_KEY} <= set(by_key), [a.key for a in artifacts]

    table = by_key[METRICS_KEY].data
    table = json.loads(table) if isinstance(table, str) else table
    metrics = _rows_of(stack, "metrics", run_id)
    overall = metrics[metrics["series_id"].isna() & metrics["backtest_window"].isna()]  # pooled over the backtest
    # One artifact row per model of the metrics table, side by side: on these long series the network, the two
    # naive candidates and the served forecast (the statistical models are not fitted to long series).
    models = {"lstm", "seasonal_naive", "naive", "served"}
    assert set(overall["model"]) == models
    assert len(table) == len(models) and {r["model"] for r in table} == models
    for row in table:  # the artifact keys the LSTM by its version, the table by its label beside `model_version`
        expected = overall[overall["model"] == row["model"]].set_index("metric")["value"]
        assert set(overall.loc[overall["model"] == row["model"], "model_version"].dropna()) == \
            ({row["version"]} if row["model"] == "lstm" else set())
        assert row["model"] == "lstm" or row["version"] == row["model"], row
        # the LSTM's and the served forecast's coverage and MSIS too
        assert len(expected) == (8 if row["model"] in ("lstm", "served") else 4), row
        for metric, value in expected.items():
            assert row[metric] == pytest.approx(value, rel=1e-9), (row["model"], metric)

    markdown = by_key[SUMMARY_KEY].data
    manifest = _manifest(stack, run_id)
    assert manifest["retrain"]["reason"] in markdown and f"**{manifest['retrain']['action']}**" in markdown
    assert f"{stack['output']}/predictions/run={run_id}/" in markdown
    for name, path in manifest["outputs"]["plots"].items():
        assert f"{stack['output']}/runs/{run_id}/plots/{name}" in markdown
        assert stack["fs"].cat(path)[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(manifest["outputs"]["plots"]) == {"loss.png", "holdout.png", "error_distribution.png",
                                                 "forecast_intervals.png", "backtest.png"}


def test_rerunning_the_same_slot_leaves_one_set_of_rows(stack):
    from prefect.states import Scheduled

    _, run = _scheduled_run(stack)
    run_id = stack["state"].get("scheduled_run_id") or pytest.skip("needs the scheduled run's id")
    before = _manifest(stack, run_id)
    with _client() as client:
        client.set_flow_run_state(run.id, Scheduled(), force=True)  # what "re-run" does to a finished run

    def rerun_done():
        with _client() as client:
            current = client.read_flow_run(run.id)
        state = current.state_type.value if current.state_type else ""
        assert state not in TERMINAL_BAD, f"re-run ended {state}\n{_diagnostics(stack)}"
        return current if state == "COMPLETED" and current.run_count >= 2 else None

    again = _wait("the re-run of the slot to complete", rerun_done, timeout=300, interval=3,
                  diagnostics=lambda: _diagnostics(stack))
    assert again.expected_start_time == run.expected_start_time
    after = _manifest(stack, run_id)
    assert after["status"] == "succeeded" and after["started_at"] != before["started_at"]
    preds = _rows_of(stack, "predictions", run_id)
    assert len(preds) == N_SERIES * H
    assert not preds.duplicated(["series_id", "step"]).any()
    metrics = _rows_of(stack, "metrics", run_id)
    metrics = metrics[metrics["backtest_window"].isna() & metrics["metric"].isin(["mae", "rmse", "smape", "mase"])]
    # 4 point metrics of each model per series and pooled: the network, the two naive candidates and the served
    # forecast (no statistical model on these long series), and no duplicate
    assert set(metrics["model"]) == {"lstm", "seasonal_naive", "naive", "served"}
    assert len(metrics) == 4 * 4 * (N_SERIES + 1)
    assert not metrics.duplicated(["series_id", "metric", "model"]).any()
    stack["fs"].invalidate_cache()
    assert stack["fs"].ls(f"{stack['output']}/predictions/run={run_id}", detail=False) == [
        f"{stack['bucket']}/output/predictions/run={run_id}/part-0.parquet"]


def test_manual_deployment_runs_from_the_prefect_cli(stack):
    _scheduled_run(stack)  # one run at a time: the manual run comes after the scheduled one
    _deployment(stack, "manual")
    settings = json.dumps({"run_id": "manual-e2e", "training": {"epochs": 1}})
    out = subprocess.run([str(BIN / "prefect"), "deployment", "run", "batch-forecast/manual",
                          "--param", f"settings={settings}", "--watch", "--watch-timeout", "300"],
                         env=stack["env"], capture_output=True, text=True, timeout=360)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:], _diagnostics(stack))
    assert "Completed" in out.stdout
    manifest = _manifest(stack, "manual-e2e")
    assert manifest["status"] == "succeeded" and manifest["run_id_source"] == "configured"
    # The run passed only what changed; input, output and the rest came from the deployment.
    assert manifest["config"]["training"]["epochs"] == 1 and manifest["config"]["horizon"] == H
    assert manifest["config"]["model"]["units"] == [8]
    assert len(_rows_of(stack, "predictions", "manual-e2e")) == N_SERIES * H


def test_manual_run_changing_where_data_goes_is_refused_naming_the_setting(stack):
    """`output_url` is fixed by the deployment (served without --allow-override): the run fails before any
    work, its state names the setting, and nothing is written where it pointed."""
    _scheduled_run(stack)
    deployment = _deployment(stack, "manual")
    assert deployment.parameters["allow_overrides"] == []
    elsewhere = f"s3://{stack['bucket']}/elsewhere"
    settings = {"output_url": elsewhere, "run_id": "refused"}  # the other protected settings: unit-tested
    out = subprocess.run([str(BIN / "prefect"), "deployment", "run", "batch-forecast/manual",
                          "--param", f"settings={json.dumps(settings)}", "--watch", "--watch-timeout", "300"],
                         env=stack["env"], capture_output=True, text=True, timeout=360)
    assert out.returncode != 0, (out.stdout[-2000:], _diagnostics(stack))
    state = sorted(_runs(deployment.id), key=lambda r: r.created)[-1].state
    assert state.is_failed() and "setting 'output_url': fixed by the deployment batch-forecast/manual" in \
        state.message, state.message
    stack["fs"].invalidate_cache()
    assert not stack["fs"].exists(elsewhere) and not stack["fs"].exists(f"{stack['output']}/runs/refused")


def test_infra_prefect_yaml_registers_on_the_server(stack):
    """`prefect deploy` takes infra/prefect.yaml as it is (last: it replaces the served deployments' records)."""
    root = Path(__file__).resolve().parents[2]
    steps = [
        ["work-pool", "create", "forecast-pool", "--type", "process", "--overwrite"],
        ["work-queue", "create", "batch-forecast", "--pool", "forecast-pool", "--limit", "1"],
        ["--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
    ]
    for args in steps:
        out = subprocess.run([str(BIN / "prefect"), *args], cwd=root, env=stack["env"], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[-3000:])
    scheduled, manual = _deployment(stack, "scheduled"), _deployment(stack, "manual")
    for d in (scheduled, manual):
        assert d.work_pool_name == "forecast-pool" and d.work_queue_name == "batch-forecast"
        assert d.entrypoint == "flows/batch_forecast.py:batch_forecast"
        assert d.parameters == {"config_path": "infra/job.yaml", "settings": {}, "allow_overrides": []}
        assert d.global_concurrency_limit.limit == 1
        assert d.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}]
    [schedule] = scheduled.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC" and schedule.active
    assert manual.schedules == []
