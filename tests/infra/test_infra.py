"""infra/: what can be checked without Docker. The YAML parses, names the deployments the README and CLI
promise with an entrypoint that imports, and every file the compose stack and the images use exists."""
from __future__ import annotations

import inspect
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
ENTRYPOINT = "flows/batch_forecast.py:batch_forecast"


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _deployments(prefect_yaml) -> dict[str, dict]:
    """The batch-forecast deployments (the tune flow's has its own test)."""
    return {d["name"]: d for d in prefect_yaml["deployments"] if d["entrypoint"] == ENTRYPOINT}


def test_prefect_yaml_is_valid_for_prefect_deploy(prefect_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml)  # the model `prefect deploy` reads the file with
    assert {d.name for d in model.deployments} == {"scheduled", "manual", "weekly"}
    for d in (d for d in model.deployments if d.name != "weekly"):
        assert d.entrypoint == ENTRYPOINT
        assert d.work_pool.name == "forecast-pool" and d.work_pool.work_queue_name == "batch-forecast"
        assert d.concurrency_limit.limit == 1
        assert d.tags and "lstm-forecast" in d.tags


def test_schedules_concurrency_and_version(prefect_yaml):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    deployments = _deployments(prefect_yaml)
    [schedule] = deployments["scheduled"]["schedules"]
    assert schedule["active"] is True
    Cron(schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron or time zone
    assert not deployments["manual"].get("schedules")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for d in deployments.values():
        assert d["version"] == version
        assert ConcurrencyLimitStrategy(d["concurrency_limit"]["collision_strategy"]) == ConcurrencyLimitStrategy.ENQUEUE
    text = (INFRA / "prefect.yaml").read_text()
    assert "ENQUEUE, not CANCEL_NEW" in text  # the collision strategy is explained where it is set
    for pool in ("Docker pool", "Kubernetes pool", "Process pool"):
        assert pool in text


def test_entrypoint_imports_as_the_flow_with_the_parameters_given(prefect_yaml, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    from lstm_core.config import load_config

    monkeypatch.chdir(ROOT)  # workers resolve the entrypoint from the directory `prefect deploy` ran in
    flow = load_flow_from_entrypoint(ENTRYPOINT)
    assert flow.name == "batch-forecast"
    accepted = set(inspect.signature(flow.fn).parameters)
    for d in _deployments(prefect_yaml).values():
        params = d["parameters"]
        assert set(params) <= accepted
        config = load_config(params["config_path"], overrides=params["settings"], environ={})
        assert config.input_url.startswith("s3://") and config.storage_options == {}  # no secrets in the file


def test_the_tune_flow_has_a_weekly_deployment_on_its_own_queue(prefect_yaml, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    from lstm_core.config import load_config

    [tune] = [d for d in prefect_yaml["deployments"] if d["name"] == "weekly"]
    assert tune["entrypoint"] == "flows/tune.py:tune"
    [schedule] = tune["schedules"]
    Cron(schedule["cron"], timezone=schedule["timezone"])
    assert tune["work_pool"]["name"] == "forecast-pool" and tune["work_pool"]["work_queue_name"] == "tuning"
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(tune["entrypoint"])
    assert flow.name == "tune" and set(tune["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    config = load_config(tune["parameters"]["config_path"], overrides=tune["parameters"]["settings"], environ={})
    assert config.tuning.minutes == 120 and config.tuning.trials is None


def test_compose_services_reference_files_that_exist(compose):
    services = compose["services"]
    assert {"prefect-server", "worker", "minio", "create-bucket", "register"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (INFRA / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).is_file(), name
        for env_file in svc.get("env_file", []):
            entry = env_file if isinstance(env_file, dict) else {"path": env_file}
            if entry.get("required", True):
                assert (INFRA / entry["path"]).is_file(), (name, entry)
    register = " ".join(services["register"]["command"]) if isinstance(services["register"]["command"], list) \
        else services["register"]["command"]
    assert "--prefect-file infra/prefect.yaml" in register and "forecast-pool" in register
    assert "--limit 1" in register
    # Deployments registered from /app run from /app: where infra/Dockerfile puts the code.
    assert services["register"]["working_dir"] == services["worker"]["working_dir"] == "/app"
    assert "WORKDIR /app" in (INFRA / "Dockerfile").read_text()
    assert "--pool forecast-pool" in services["worker"]["command"]
    assert services["worker"]["depends_on"]["register"]["condition"] == "service_completed_successfully"
    seed = services["seed-data"]["command"]
    assert seed.startswith("python -m flows.demo_data ") and (ROOT / "flows/demo_data.py").is_file()


def test_env_example_matches_the_job_and_the_bucket(compose):
    env = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "LAKE_ACCESS_KEY", "LAKE_SECRET_KEY",
                "AWS_ENDPOINT_URL", "LAKE_BUCKET"):
        assert env.get(key), key
    job = yaml.safe_load((INFRA / "job.yaml").read_text())
    assert job["input_url"].startswith(f"s3://{env['LAKE_BUCKET']}/")
    assert job["output_url"].startswith(f"s3://{env['LAKE_BUCKET']}/")
    # The defaults work together: the worker's key is the user create-bucket makes for the bucket.
    worker = compose["services"]["worker"]["environment"]
    assert worker["AWS_ACCESS_KEY_ID"].startswith("${LAKE_ACCESS_KEY")
    assert worker["AWS_SECRET_ACCESS_KEY"].startswith("${LAKE_SECRET_KEY")
    create = compose["services"]["create-bucket"]["command"][0]
    assert 'mc admin user add local "$$LAKE_ACCESS_KEY" "$$LAKE_SECRET_KEY"' in create
    assert 'mc mb --ignore-existing "local/$$LAKE_BUCKET"' in create


@pytest.mark.parametrize("dockerfile, extra", [("Dockerfile", "cpu"), ("Dockerfile.gpu", "gpu")])
def test_dockerfiles_install_from_the_lock_and_copy_files_that_exist(dockerfile, extra):
    text = (INFRA / dockerfile).read_text()
    syncs = re.findall(r"uv sync [^\n]*", text)
    assert syncs and all("--locked" in s and f"--extra {extra}" in s and "--no-dev" in s for s in syncs)
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), (dockerfile, src)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "infra/.env" in ignored
    assert os.access(ROOT / "uv.lock", os.R_OK)
