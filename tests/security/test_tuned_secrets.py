"""A credential in a URL never reaches the Prefect database or a manifest through `tuned: latest` or the tune
flow (issue 26, finding 4).

Both flows scrub from their first line: `apply_tuned` reads the study before anything else, and the tune
flow had no scrubber at all. Real CLI runs against the Prefect test server:

- `run` with `tuned: latest` and an output URL whose user-info and query string carry credentials, on S3
  (moto): the study cannot be read, the run fails;
- `run` with `tuned: latest` on a local output whose URL carries a credential query parameter and a study
  with a best.json: the run succeeds and its manifest names best.yaml without the credential;
- `tune` with such an output URL: the run fails.

Then every flow run, task run, log and artifact the API returns, the Prefect database file itself (state
messages, logs, artifacts, events) and the manifests are searched for each secret.
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from tests.conftest import make_frame
from tests.reliability.conftest import (
    FAST_FLAGS,
    cli_env,
    direct_fs,
    error_lines,
    put_frame,
    run_cli,
)
from tests.security.test_secret_channels import (
    _prefect_api_text,
    _prefect_database_bytes,
)

pytestmark = pytest.mark.slow


def _unique(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:20]}"


def test_credentials_in_the_output_url_never_reach_prefect_or_the_manifest(s3_bucket, s3_endpoint,
                                                                            prefect_api_url, tmp_path):
    fs = direct_fs(s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=3, length=100))
    local_in = tmp_path / "in.parquet"
    make_frame(n_series=3, length=100).to_parquet(local_in, index=False)
    s = {name: _unique(name) for name in ("runuser", "runpass", "runsig", "localsig", "tuneuser", "tunepass",
                                           "tunetoken")}
    env = cli_env(prefect_api_url, AWS_ACCESS_KEY_ID="AKIAMOTO", AWS_SECRET_ACCESS_KEY="moto-accepts-any",
                  AWS_ENDPOINT_URL=s3_endpoint, AWS_DEFAULT_REGION="us-east-1")

    # A study with best settings under a local output whose URL carries a credential query parameter.
    local_out = f"{tmp_path}/out?X-Amz-Signature={s['localsig']}"
    study = tmp_path / f"out?X-Amz-Signature={s['localsig']}" / "tuning" / "study=default"
    study.mkdir(parents=True)
    (study / "best.json").write_text(json.dumps({
        "study": "default", "trial": 3, "objective": 0.9, "metric": "pooled backtest MASE",
        "settings": {"model": {"units": [8]}, "window": 24}, "tuned": ["model.units", "window"],
        "written_at": datetime.now(UTC).isoformat()}))

    runs = {
        "tuned-failed": run_cli(
            "run", "--input", f"{s3_bucket}/in/series.parquet",
            "--output", f"s3://{s['runuser']}:{s['runpass']}@{bucket}/out?sig={s['runsig']}", *FAST_FLAGS,
            "--set", "tuned=latest", "--set", "run_id=tuned-failed", env=env),
        "tuned-ok": run_cli("run", "--input", str(local_in), "--output", local_out, *FAST_FLAGS,
                            "--set", "tuned=latest", "--set", "run_id=tuned-ok", env=env),
        "tune-failed": run_cli(
            "tune", "--input", f"{s3_bucket}/in/series.parquet",
            "--output", f"s3://{s['tuneuser']}:{s['tunepass']}@{bucket}/tune?X-Amz-Security-Token={s['tunetoken']}",
            *FAST_FLAGS, "--trials", "1", env=env),
    }
    assert runs["tuned-ok"].returncode == 0, runs["tuned-ok"].stderr[-3000:]
    for name in ("tuned-failed", "tune-failed"):
        assert runs[name].returncode != 0 and error_lines(runs[name].stderr), (name, runs[name].stderr[-3000:])

    manifest_path = tmp_path / f"out?X-Amz-Signature={s['localsig']}" / "runs" / "tuned-ok" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "succeeded" and manifest["tuned"]["trial"] == 3
    # (the query value runs to the end of the path, so the mask covers the rest of it)
    assert manifest["tuned"]["best_yaml"] == f"{tmp_path}/out?X-Amz-Signature=***", manifest["tuned"]["best_yaml"]

    api = _prefect_api_text()
    assert "tuned-ok" in api and "tune" in api  # the runs are there to search
    database = _prefect_database_bytes()
    # What the manifest says of the URLs (its `outputs` are the files' storage paths: on this local disk the
    # folder's own name holds the text, which is no credential to a local filesystem).
    written = json.dumps({k: manifest[k] for k in ("tuned", "input_url", "output_url", "config", "error")
                          if k in manifest})
    for name, value in s.items():
        for run, out in runs.items():
            assert value not in out.stdout + out.stderr, f"{name} printed by {run}"
        assert value not in api, f"{name} returned by the Prefect API: " + api[max(0, api.find(value) - 1500):api.find(value) + 100]
        assert value.encode() not in database, f"{name} stored in the Prefect database"
        assert value not in written, f"{name} written to the manifest"
