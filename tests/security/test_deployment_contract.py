"""Parameters as a contract, nothing secret pickled to Dask, and a compose stack that is closed by default
(issue 16, point 3). The end-to-end refusal through a real Prefect server is in
tests/flows/test_deployments_e2e.py; the scheduler-memory check in test_dask_credentials.py."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from flows.parameters import _FORM_DESCRIPTIONS, PROTECTED, RunSettings, check_overrides, overrides_list, settings_dict
from lstm_core.config import ConfigError, ForecastConfig, ModelConfig, TrainingConfig, validate_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DEPLOYMENT = {"config_path": "/etc/job.yaml", "allow_overrides": [],
              "settings": {"output_url": "s3://lake/forecasts", "horizon": 24}}


# --- parameters ----------------------------------------------------------------------------------
def test_every_setting_is_a_typed_documented_parameter_field():
    from flows.batch_forecast import batch_forecast

    schema = batch_forecast.parameters.model_dump()
    assert list(schema["properties"]) == ["config_path", "settings", "allow_overrides"]
    assert all(schema["properties"][p].get("description") for p in schema["properties"])
    assert schema["properties"]["allow_overrides"]["anyOf"][0]["items"]["enum"] == list(PROTECTED)
    sections = [(f.annotation, f.annotation.__name__.replace("Config", "Settings"))
                for f in ForecastConfig.model_fields.values()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]
    assert {ModelConfig, TrainingConfig} <= {model for model, _ in sections}
    for model, name in [(ForecastConfig, "RunSettings"), *sections]:
        definition = schema["definitions"][name]
        assert definition["additionalProperties"] is False
        assert set(definition["properties"]) == set(model.model_fields)
        for field, info in model.model_fields.items():
            expected = _FORM_DESCRIPTIONS.get(field, info.description) if model is ForecastConfig else info.description
            assert definition["properties"][field]["description"] == expected, field
    horizon = schema["definitions"]["RunSettings"]["properties"]["horizon"]["anyOf"][0]
    assert horizon == {"minimum": 1, "maximum": 100_000, "type": "integer"}


def test_protected_settings_follow_the_configuration():
    assert set(PROTECTED) == {"config_path", *ForecastConfig.url_settings(), "dask_address", "storage_options"}
    assert {"input_url", "output_url", "scratch_url"} <= set(PROTECTED)


@pytest.mark.parametrize("settings, message", [
    ({"horizn": 3}, "Extra inputs are not permitted"),
    ({"training": {"epoch": 3}}, "Extra inputs are not permitted"),
    ({"horizon": 0}, "greater than or equal to 1"),
    ({"storage_options": {"secret": "s3cr3t-value"}}, "storage_options.secret looks like a secret"),
    ({"storage_options": {"client_kwargs": {"aws_session_token": "t0k"}}},
     "storage_options.client_kwargs.aws_session_token looks like a secret"),
])
def test_run_settings_refuse_unknown_bad_and_secret_values(settings, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        RunSettings.model_validate(settings)


def test_bad_parameters_fail_as_configuration_errors_naming_the_setting():
    # Checked in the flow's body (not by Prefect), so a run fails as for a bad setting in the file.
    with pytest.raises(ConfigError, match=r"^invalid configuration: setting 'training.epoch': unknown setting$"):
        settings_dict({"training": {"epoch": 3}})
    with pytest.raises(ConfigError, match="setting 'storage_options': .*storage_options.token looks like a secret"):
        settings_dict({"storage_options": {"token": "t0k3n-value"}})
    with pytest.raises(ConfigError, match="parameter 'allow_overrides': each item must be one of config_path"):
        overrides_list(["horizon"])
    assert overrides_list(None) == [] and overrides_list(["input_url"]) == ["input_url"]


def test_only_what_a_run_sets_is_passed_on():
    given = RunSettings.model_validate({"training": {"epochs": 1}, "horizon": None})
    assert settings_dict(given) == {"training": {"epochs": 1}, "horizon": None}


@pytest.mark.parametrize("run, refused", [
    ({"settings": {"output_url": "s3://attacker/x"}}, "setting 'output_url'"),
    ({"settings": {"input_url": "s3://other/in"}}, "setting 'input_url'"),
    ({"settings": {"scratch_url": "s3://attacker/scratch"}}, "setting 'scratch_url'"),
    ({"settings": {"dask_address": "tcp://203.0.113.9:8786"}}, "setting 'dask_address'"),
    ({"settings": {"storage_options": {"endpoint_url": "http://attacker:9000"}}}, "setting 'storage_options'"),
    ({"settings": {"output_url": None}}, "setting 'output_url'"),
    ({"config_path": "/tmp/attacker.yaml"}, "parameter 'config_path'"),
    ({"allow_overrides": ["output_url"]}, "parameter 'allow_overrides'"),
])
def test_a_run_changing_a_protected_setting_is_refused_naming_it(run, refused):
    given = {"config_path": DEPLOYMENT["config_path"], "settings": {}, "allow_overrides": [], **run}
    with pytest.raises(ConfigError, match=f"^{re.escape(refused)}: fixed by the deployment batch-forecast/manual"):
        check_overrides("batch-forecast/manual", DEPLOYMENT, given)


@pytest.mark.parametrize("run", [
    {"settings": {"horizon": 48, "training": {"epochs": 2}, "run_id": "again"}},  # ordinary settings
    {"settings": {"output_url": "s3://lake/forecasts"}},  # the deployment's own value
    {},  # nothing: the deployment's parameters as they are
])
def test_runs_that_keep_protected_settings_pass(run):
    given = {"config_path": DEPLOYMENT["config_path"], "settings": {}, "allow_overrides": [], **run}
    check_overrides("batch-forecast/manual", DEPLOYMENT, given)


def test_a_deployment_opts_in_per_setting():
    fixed = {**DEPLOYMENT, "allow_overrides": ["input_url", "config_path"]}
    given = {"config_path": "/etc/other.yaml", "allow_overrides": ["input_url", "config_path"],
             "settings": {"input_url": "s3://lake/other/"}}
    check_overrides("batch-forecast/manual", fixed, given)
    with pytest.raises(ConfigError, match="setting 'output_url'"):
        check_overrides("batch-forecast/manual", fixed, {**given, "settings": {"output_url": "s3://x/y"}})


def _serve_parameters(*flags: str) -> dict:
    """The deployments' parameters `lstm-forecast serve` builds from these flags (as cmd_serve does)."""
    from flows.cli import build_parser, settings_from_args
    from flows.serve import serve_parameters

    args = build_parser().parse_args(["serve", "--input", "s3://lake/in", "--output", "s3://lake/out", *flags])
    return serve_parameters(args.config, settings_from_args(args), args.sets, args.allow_overrides)


def test_serve_puts_the_opt_ins_in_the_deployment_parameters_and_refuses_secrets():
    params = _serve_parameters("--allow-override", "input_url")
    assert params["allow_overrides"] == ["input_url"] and params["settings"]["output_url"] == "s3://lake/out"
    with pytest.raises(ConfigError, match="--allow-override 'horizon': not a protected setting"):
        _serve_parameters("--allow-override", "horizon")
    with pytest.raises(ConfigError, match="--set storage_options.secret: a credential on the command line") as err:
        _serve_parameters("--set", "storage_options.secret=s3cr3t-value")
    assert "s3cr3t-value" not in str(err.value)
    with pytest.raises(ConfigError, match="setting 'input_url': .*its URL carries credentials"):
        _serve_parameters("--input", "https://h/in.parquet?X-Amz-Signature=abc")


# --- nothing secret pickled -------------------------------------------------------------------------
def test_configuration_and_writer_pickle_without_credentials(s3_bucket, s3_endpoint, monkeypatch):
    from lstm_core.outputs import RunWriter

    secret, key = "pickled-secret-0123456789", "AKIAPICKLED0123"
    options = {"key": key, "secret": secret, "endpoint_url": s3_endpoint}
    config = validate_config({"output_url": f"{s3_bucket}/out", "storage_options": options})
    writer = RunWriter.open(config.location(config.output_url), "r1")
    monkeypatch.delenv("LSTM_FORECAST_STORAGE_OPTIONS", raising=False)
    for obj in (config, writer):
        blob = pickle.dumps(obj)
        assert secret.encode() not in blob and key.encode() not in blob, type(obj).__name__
        assert s3_endpoint.encode() in blob or obj is writer  # what is not secret travels
    # The receiving process takes them from its own environment.
    monkeypatch.setenv("LSTM_FORECAST_STORAGE_OPTIONS", json.dumps({"key": key, "secret": secret}))
    copy = pickle.loads(pickle.dumps(config))
    assert copy.storage_options == options and copy == config
    remote = pickle.loads(pickle.dumps(writer))
    path = remote.write_file("probe.txt", b"written by a copy")
    assert writer.fs.cat_file(path) == b"written by a copy"


def test_a_local_cluster_gets_no_credential_in_its_workers_environment():
    # (they reach the workers in memory, over the cluster's TLS: tests/security/test_local_cluster.py)
    from flows.cluster import worker_env

    config = validate_config({"workers": 2, "storage_options": {"key": "k-123456789", "secret": "s-123456789"}})
    env = worker_env(2, config)
    assert "LSTM_FORECAST_STORAGE_OPTIONS" not in env and "s-123456789" not in json.dumps(env)


# --- compose ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    return dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                if line and not line.startswith("#"))


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (enough for these files)."""
    def one(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"{name}: {arg}")
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def test_published_ports_are_loopback_by_default(compose):
    published = {name: [_interpolate(p, {}) for p in svc.get("ports", [])] for name, svc in compose["services"].items()}
    assert published["prefect-server"] == ["127.0.0.1:4200:4200"]
    assert published["minio"] == ["127.0.0.1:9000:9000", "127.0.0.1:9001:9001"]
    assert [name for name, ports in published.items() if ports] == ["prefect-server", "minio"]


def test_only_minio_and_its_set_up_know_the_root_account_and_the_worker_has_a_scoped_key(compose):
    services = compose["services"]
    for name, svc in services.items():
        text = json.dumps({k: svc.get(k) for k in ("environment", "env_file", "command")})
        knows_root = "MINIO_ROOT_PASSWORD" in text
        assert knows_root == (name in {"check-secrets", "minio", "create-bucket"}), name
        assert all((e if isinstance(e, str) else e["path"]) not in (".env", ".env.example")
                   for e in svc.get("env_file", [])), name  # .env holds the root password
    for name in ("prefect-server", "register"):
        assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(services[name].get("environment")), name
    for name in ("worker", "seed-data"):
        env = services[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"].startswith("${LAKE_ACCESS_KEY") and "PREFECT_API_URL" in env


def test_every_service_waits_for_the_secret_check(compose):
    services = compose["services"]

    def waits(name: str) -> bool:
        deps = services[name].get("depends_on") or {}
        return "check-secrets" in deps or any(waits(d) for d in deps)

    assert all(waits(name) for name in services if name != "check-secrets")
    assert services["check-secrets"]["restart"] == "no" and not services["check-secrets"].get("depends_on")


def _check_secrets(compose, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The check-secrets service's own script, run by /bin/sh with the service's environment."""
    service = compose["services"]["check-secrets"]
    script = service["command"][0].replace("$$", "$")
    service_env = {k: _interpolate(v, env) for k, v in service["environment"].items()}
    return subprocess.run(["/bin/sh", "-c", script], env={"PATH": os.environ["PATH"], **service_env},
                          capture_output=True, text=True, timeout=30)


GOOD = {"MINIO_ROOT_USER": "root-admin", "MINIO_ROOT_PASSWORD": "a-long-root-password-1",
        "LAKE_ACCESS_KEY": "lstm-forecast", "LAKE_SECRET_KEY": "a-long-job-secret-22"}


@pytest.mark.parametrize("change, message", [
    ({"MINIO_ROOT_PASSWORD": _env_example()["MINIO_ROOT_PASSWORD"]},
     "MINIO_ROOT_PASSWORD is the example value of infra/.env.example"),
    ({"LAKE_SECRET_KEY": _env_example()["LAKE_SECRET_KEY"]}, "LAKE_SECRET_KEY is the example value"),
    ({"MINIO_ROOT_PASSWORD": "short"}, "MINIO_ROOT_PASSWORD must be at least 12 characters"),
    ({"LAKE_ACCESS_KEY": "root-admin"}, "LAKE_ACCESS_KEY must not be MinIO's root user"),
    ({"LAKE_SECRET_KEY": GOOD["MINIO_ROOT_PASSWORD"]}, "LAKE_SECRET_KEY must differ from MINIO_ROOT_PASSWORD"),
])
def test_the_stack_refuses_to_start_with_example_or_weak_secrets(compose, change, message):
    out = _check_secrets(compose, {**GOOD, **change})
    assert out.returncode == 1 and f"refusing to start: {message}" in out.stderr, (out.stdout, out.stderr)


def test_the_example_file_itself_is_refused_and_good_values_pass(compose):
    out = _check_secrets(compose, _env_example())
    assert out.returncode == 1 and "is the example value" in out.stderr
    out = _check_secrets(compose, GOOD)
    assert out.returncode == 0 and "secrets checked" in out.stdout, out.stderr
    with pytest.raises(KeyError, match="MINIO_ROOT_PASSWORD: set MINIO_ROOT_PASSWORD in infra/.env"):
        _check_secrets(compose, {k: v for k, v in GOOD.items() if k != "MINIO_ROOT_PASSWORD"})


def test_the_job_key_policy_allows_only_the_bucket(compose):
    service = compose["services"]["create-bucket"]
    [mount] = service["volumes"]
    template = (INFRA / mount.split(":")[0]).read_text()
    policy = json.loads(template.replace("LAKE_BUCKET", "lake"))
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::lake", "arn:aws:s3:::lake/*"}
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert actions <= {"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetObject",
                       "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
    command = service["command"][0]
    assert "mc admin policy attach local lake-rw --user" in command and "set -e" in command


# --- every deployment of infra/prefect.yaml: the same contract (issue 26, finding 2) ----------------------
def _deployments() -> list[dict]:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"]


def _flow_of(entrypoint: str):
    import importlib

    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_every_deployment_names_a_flow_that_takes_the_contract():
    """Each flow a deployment names takes `allow_overrides` (typed as the protected settings) and each
    deployment sets it; a flow added to infra/prefect.yaml without it fails here."""
    deployments = _deployments()
    assert {d["entrypoint"] for d in deployments} == {"flows/batch_forecast.py:batch_forecast", "flows/tune.py:tune"}
    for d in deployments:
        schema = _flow_of(d["entrypoint"]).parameters.model_dump()
        assert list(schema["properties"]) == ["config_path", "settings", "allow_overrides"], d["name"]
        assert schema["properties"]["allow_overrides"]["anyOf"][0]["items"]["enum"] == list(PROTECTED), d["name"]
        assert d["parameters"]["allow_overrides"] == [], d["name"]


def _refused_cases() -> list[tuple[str, dict]]:
    cases = []
    for d in _deployments():
        cases.append((d["name"], {"output_url": "ELSEWHERE"}))
        if d["entrypoint"].startswith("flows/tune.py"):  # the finding: the tune run was sent to another cluster
            cases.append((d["name"], {"dask_address": "tcp://203.0.113.9:8786"}))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("name, override", _refused_cases())
def test_a_deployment_run_changing_a_protected_setting_is_refused(name, override, prefect_api_url, tmp_path):
    """Each deployment of infra/prefect.yaml, with its own parameters, really run as a worker runs it (a fresh
    `python -m prefect.engine` process with only the flow run's id): a run that changes where data goes or
    where code runs fails before any work, its state naming the setting, and nothing is written there."""
    import sys
    import uuid

    from prefect.client.orchestration import get_client

    [d] = [d for d in _deployments() if d["name"] == name]
    flow = _flow_of(d["entrypoint"])
    elsewhere = tmp_path / "elsewhere"
    override = {k: (str(elsewhere) if v == "ELSEWHERE" else v) for k, v in override.items()}
    deployment_name = f"{name}-{uuid.uuid4().hex[:8]}"
    deployment_id = flow.to_deployment(deployment_name, parameters=d["parameters"]).apply()
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id, parameters={"settings": override})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_FORECAST_")}
    env.update({"PREFECT_API_URL": prefect_api_url, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    done = subprocess.run([sys.executable, "-m", "prefect.engine", str(flow_run.id)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    [setting] = override
    expected = f"setting {setting!r}: fixed by the deployment {flow.name}/{deployment_name}"
    assert state.is_failed() and expected in (state.message or ""), (state.message, done.stderr[-3000:])
    assert not elsewhere.exists()
