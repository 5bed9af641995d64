"""The configuration is built once (issue 15): `lstm-forecast run` / `tune` build and check it, and the flow they
call in their process runs with that very object (flows/handoff.py); nothing of it goes through the process
environment, and the flow run's recorded parameters are its public settings. A deployment run has no handed
configuration: it re-reads `config_path` at every run, with the deployment's settings merged.

Real parts only: CLI processes (an audit hook counts the opens of the config file, nothing is replaced), moto's
S3 server, the Prefect test server, deployment flow runs executed as a worker executes them
(`python -m prefect.engine <flow run id>`), models really trained.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from flows.handoff import handing, public_settings, run_parameters
from flows.parameters import RunSettings, settings_dict
from lstm_core.config import load_config, validate_config
from tests.conftest import make_frame
from tests.reliability.conftest import direct_fs, put_frame

ROOT = Path(__file__).resolve().parents[2]
# Tiny settings as a config file would hold them; `horizon` is the file's, 12 (the default is 24).
FILE_SETTINGS = {"freq": "h", "horizon": 12, "season_length": 24, "window": 24, "backtest": {"windows": 1},
                 "model": {"units": [8]},
                 "training": {"epochs": 2, "patience": 1, "windows_per_series": 16, "batch_size": 64,
                              "snapshots": 1}}
TUNING = {"trials": 1, "space": {"model.units": [4, 8], "model.layers": None, "training.ensemble_size": None,
                                 "training.batch_size": None, "model.deseasonalize": None, "model.chunk": None,
                                 "window": None}}


def _flow_run(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id))


def _flow_runs_with_config_path(flow_name: str, config_path: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), limit=200)
    return [r for r in runs if r.parameters.get("config_path") == config_path]


# --- the parameters are the public part of the configuration ---------------------------------------------
def test_the_run_parameters_are_the_public_settings_of_the_configuration():
    secret, key = f"param-secret-{uuid.uuid4().hex}", f"AKIAPARAM{uuid.uuid4().hex[:10].upper()}"
    signed = f"https://h/in.parquet?X-Amz-Signature=sig-{uuid.uuid4().hex}"
    config = validate_config({
        "input_url": signed, "output_url": "s3://lake/out", "scratch_url": "s3://u:p-secret-123@lake/scratch",
        "storage_options": {"key": key, "secret": secret, "endpoint_url": "http://minio:9000"},
        "horizon": 24,  # set, though it is the default: recorded, so a file's other value cannot come back
        "training": {"epochs": 3}})
    params = run_parameters(config, "/etc/job.yaml")
    assert params["config_path"] == "/etc/job.yaml"
    settings = params["settings"]
    text = json.dumps(params)
    assert secret not in text and key not in text and "sig-" not in text and "p-secret-123" not in text
    assert "storage_options" not in settings and "input_url" not in settings and "scratch_url" not in settings
    assert settings["horizon"] == 24 and settings["output_url"] == "s3://lake/out"
    assert settings["training"] == {"epochs": 3}  # what was set, not every default of the section
    RunSettings.model_validate(settings)  # a valid parameter, as the flow checks it
    # The parameters describe the configuration: rebuilt from them (with what may not be a parameter), it is equal.
    rebuilt = validate_config({**settings_dict(settings), "input_url": signed, "scratch_url": config.scratch_url,
                               "storage_options": config.storage_options})
    assert rebuilt == config
    assert public_settings(validate_config({})) == {}


# --- the CLI: built once, handed over in process, nothing in the environment --------------------------------
# The console script's own `main`, in a fresh process as the `lstm-forecast` script runs it, with a Python audit
# hook (sys.addaudithook: it observes, it replaces nothing) counting the opens of the config file. Afterwards
# the process reports its exit code, those opens and its LSTM_FORECAST_* environment.
OBSERVED_CLI = """
import json, os, sys
config_file, argv = sys.argv[1], sys.argv[2:]
opens = []
def audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]) == config_file:
        opens.append(event)
sys.addaudithook(audit)
from flows.cli import main
code = main(argv)
env = {k: v for k, v in os.environ.items() if k.startswith("LSTM_FORECAST_")}
print("OBSERVED " + json.dumps({"code": code, "opens": len(opens), "env": env}), flush=True)
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "tune"])
def test_a_cli_run_builds_the_configuration_once_and_puts_no_secret_in_its_environment(
        command, s3_bucket, s3_endpoint, prefect_api_url, tmp_path):
    fs = direct_fs(s3_endpoint)
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=3, length=200))
    key, secret = f"AKIAHAND{uuid.uuid4().hex[:10].upper()}", f"handed-secret-{uuid.uuid4().hex}"
    config_file = tmp_path / "job.yaml"
    # The endpoint is only in the file's storage options: the run reaches moto only if they reach the flow.
    config_file.write_text(yaml.safe_dump({
        **FILE_SETTINGS, "storage_options": {"key": key, "secret": secret, "endpoint_url": s3_endpoint},
        **({"tuning": TUNING} if command == "tune" else {})}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LSTM_FORECAST_", "AWS_ACCESS", "AWS_SECRET", "AWS_SESSION", "AWS_ENDPOINT"))}
    env.update({"PREFECT_API_URL": prefect_api_url, "PYTHONUNBUFFERED": "1", "AWS_DEFAULT_REGION": "us-east-1"})
    run_id = f"handed-{uuid.uuid4().hex[:8]}"
    # --horizon 24 sets the default back over the file's 12: a value only the CLI's configuration holds.
    flags = ["--config", str(config_file), "--input", f"{s3_bucket}/in/series.parquet", "--output",
             f"{s3_bucket}/out", "--horizon", "24",
             *(["--set", f"run_id={run_id}"] if command == "run" else ["--study", run_id])]
    out = subprocess.run([sys.executable, "-c", OBSERVED_CLI, str(config_file), command, *flags], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("OBSERVED ")]
    observed = json.loads(line.removeprefix("OBSERVED "))
    assert observed["code"] == 0
    assert observed["opens"] == 1, "the config file is read once, by the CLI; the flow runs with its object"
    assert observed["env"] == {}, "the CLI put settings or secrets into its own environment"

    [flow_run] = _flow_runs_with_config_path("batch-forecast" if command == "run" else "tune", str(config_file))
    assert flow_run.state.is_completed()
    recorded = flow_run.parameters
    assert secret not in json.dumps(recorded) and key not in json.dumps(recorded)
    assert "storage_options" not in recorded["settings"]
    assert recorded["settings"]["horizon"] == 24 and recorded["settings"]["window"] == 24
    if command == "run":
        manifest = json.loads(fs.cat_file(f"{s3_bucket}/out/runs/{run_id}/manifest.json"))
        assert manifest["status"] == "succeeded" and manifest["flow_run_id"] == str(flow_run.id)
        assert manifest["config"]["horizon"] == 24  # the CLI's value, not the file's 12
        assert manifest["config"]["storage_options"] == {"key": "***", "secret": "***", "endpoint_url": s3_endpoint}
        assert manifest["counts"]["prediction_rows"] == 3 * 24
    else:
        assert f"study {run_id}: 1 trials" in out.stdout
        assert fs.exists(f"{s3_bucket}/out/tuning/study={run_id}/trials.parquet")


# --- the handoff itself, in this process -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_flow_runs_with_the_handed_configuration_and_never_rereads_the_file(tmp_path):
    from flows.batch_forecast import batch_forecast

    make_frame(n_series=3, length=200).to_parquet(tmp_path / "in.parquet", index=False)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump({**FILE_SETTINGS, "input_url": str(tmp_path / "in.parquet"),
                                           "output_url": str(tmp_path / "out")}))
    config = load_config(config_file, sets=["run_id=handed"])
    config_file.unlink()  # a flow that re-read it would stop: "config file ... does not exist"
    with handing(config, str(config_file)) as parameters:
        manifest = batch_forecast(**parameters)
        # Called with parameters that do not describe the handed configuration: refused, nothing run.
        with pytest.raises(RuntimeError, match="parameters other than those of the configuration handed"):
            batch_forecast(config_path=str(config_file), settings={**parameters["settings"], "horizon": 6})
    assert manifest["status"] == "succeeded" and manifest["run_id"] == "handed"
    assert manifest["config"] == config.public_dict()
    recorded = _flow_run(manifest["flow_run_id"]).parameters
    assert recorded["config_path"] == str(config_file) and settings_dict(recorded["settings"]) == \
        settings_dict(parameters["settings"])
    # Outside the block nothing is handed: the flow builds its configuration again (and the file is gone).
    with pytest.raises(Exception, match="does not exist"):
        batch_forecast(**parameters)


# --- deployment runs: config_path re-read at every run ------------------------------------------------------
@pytest.mark.slow
def test_a_deployment_run_rereads_its_config_file_at_every_run(prefect_api_url, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.batch_forecast import batch_forecast

    make_frame(n_series=3, length=200).to_parquet(tmp_path / "in.parquet", index=False)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump({**FILE_SETTINGS, "horizon": 6}))
    out = tmp_path / "out"
    deployment = batch_forecast.to_deployment(
        f"reread-{uuid.uuid4().hex[:8]}",
        parameters={"config_path": str(config_file), "allow_overrides": [],
                    "settings": {"input_url": str(tmp_path / "in.parquet"), "output_url": str(out)}})
    deployment_id = deployment.apply()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_FORECAST_")}
    env.update({"PREFECT_API_URL": prefect_api_url, "PYTHONUNBUFFERED": "1"})

    def run(horizon: int, run_id: str) -> dict:
        config_file.write_text(yaml.safe_dump({**FILE_SETTINGS, "horizon": horizon}))  # changed after deploying
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters={"settings": {"run_id": run_id}})
        # As a worker or `serve` executes it: a fresh process that has only the flow run's id.
        done = subprocess.run([sys.executable, "-m", "prefect.engine", str(flow_run.id)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert _flow_run(str(flow_run.id)).state.is_completed()
        return json.loads((out / "runs" / run_id / "manifest.json").read_text())

    first, second = run(8, "deployed-1"), run(10, "deployed-2")
    # Each run took the file as it was when the run started, and the deployment's settings merged over it.
    assert (first["config"]["horizon"], second["config"]["horizon"]) == (8, 10)
    assert first["input_url"] == str(tmp_path / "in.parquet") and first["config"]["output_url"] == str(out)
    assert first["counts"]["prediction_rows"] == 3 * 8 and second["counts"]["prediction_rows"] == 3 * 10
