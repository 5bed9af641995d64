"""A distinct secret in every channel appears nowhere a run prints, writes or stores (issue 16, point 4).

Channels: the environment (AWS_* and the model signing key), the config file (storage_options), a
`--set` flag, and each URL setting's user-info and query string (input: a real pre-signed URL with
user-info, read over HTTP from moto; output and scratch: credentialed URLs, whose runs fail). Three CLI
runs: one that succeeds (environment, file, flag), two that fail (output; input and scratch). Searched:
stdout and stderr of every CLI run, every object and file written (model archives unpacked), everything
the Prefect API returns (flow runs, task runs, logs, artifacts) and the Prefect database file itself.
"""
from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from lstm_core.secrets import scrub
from tests.conftest import make_frame
from tests.reliability.conftest import FAST_FLAGS, cli_env, direct_fs, error_lines, keys_under, put_frame, run_cli

pytestmark = pytest.mark.slow


def _unique(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:20]}"


def _stored_objects(fs, bucket: str) -> list[tuple[str, bytes]]:
    out = []
    for key in keys_under(fs, f"s3://{bucket}"):
        data = fs.cat_file(key)
        out.append((key, data))
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                out.extend((f"{key}!{name}", z.read(name)) for name in z.namelist())
    return out


def _prefect_api_text() -> str:
    from prefect.client.orchestration import get_client

    parts = []
    with get_client(sync_client=True) as client:
        for reader in (client.read_flow_runs, client.read_task_runs, client.read_logs, client.read_artifacts):
            offset = 0
            while True:
                page = reader(limit=200, offset=offset)
                parts.extend(item.model_dump_json() for item in page)
                if len(page) < 200:
                    break
                offset += 200
    return "\n".join(parts)


def _prefect_database_bytes() -> bytes:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    path = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]  # the db, its -wal and -shm
    assert files, path
    return b"".join(p.read_bytes() for p in files)


def test_a_secret_in_each_channel_appears_nowhere(s3_bucket, s3_endpoint, prefect_api_url, tmp_path):
    fs = direct_fs(s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=4, length=100))
    s = {name: _unique(name.replace(" ", "")) for name in (
        "env key id", "env secret", "env token", "signing key", "config key", "config secret", "flag token",
        "input user", "input password", "presign key id", "output user", "output password", "output sig",
        "scratch user", "scratch password", "scratch token")}
    env = cli_env(prefect_api_url, AWS_ACCESS_KEY_ID=s["env key id"], AWS_SECRET_ACCESS_KEY=s["env secret"],
                  AWS_SESSION_TOKEN=s["env token"], LSTM_FORECAST_MODEL_SIGNING_KEY=s["signing key"] * 2,
                  LSTM_FORECAST_SERVICE_HOST="10.96.0.1", LSTM_FORECAST_SERVICE_PORT="8080")
    # the store run's token, which a --set would have given: refused on the command line (see "flag" below)
    store_env = {**env, "LSTM_FORECAST_STORAGE_OPTIONS": json.dumps({"token": s["flag token"]})}
    config = tmp_path / "job.yaml"
    config.write_text(f"storage_options:\n  key: {s['config key']}\n  secret: {s['config secret']}\n")

    # Pre-signed (SigV4) with its own key id: the query string carries X-Amz-Credential and X-Amz-Signature.
    presigner = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=s["presign key id"],
                             aws_secret_access_key=_unique("presign"), region_name="us-east-1",
                             config=Config(signature_version="s3v4"))
    signed = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "in/series.parquet"},
                                              ExpiresIn=3600)
    signature = signed.rsplit("X-Amz-Signature=", 1)[1]
    s["presign signature"] = signature
    input_url = signed.replace("http://", f"http://{s['input user']}:{s['input password']}@", 1)

    runs = {
        # env, config file and --set credentials; a sharded run through scratch without credentials
        "store": run_cli("run", "--config", str(config), "--input", f"{s3_bucket}/in/series.parquet",
                         "--output", f"{s3_bucket}/out", *FAST_FLAGS, "--set", "run_id=sec-store",
                         "--set", "shard_size=2", env=store_env),
        # a credential with --set: refused, before any work, without repeating it
        "flag": run_cli("run", "--input", f"{s3_bucket}/in/series.parquet", "--output", f"{s3_bucket}/out",
                        "--set", f"storage_options.token={s['flag token']}", env=env),
        # the output URL's: refused by the store, the error must not repeat them
        "output": run_cli("run", "--input", f"{s3_bucket}/in/series.parquet", "--output",
                          f"s3://{s['output user']}:{s['output password']}@{bucket}/out2?sig={s['output sig']}",
                          *FAST_FLAGS, "--set", "run_id=sec-output", env=env),
        # the input URL's user-info and signed query string (really read over HTTP to plan the shards), and
        # the scratch URL's: the split fails, and so does removing the scratch folder afterwards
        "input and scratch": run_cli(
            "run", "--input", input_url, "--output", f"{s3_bucket}/out", *FAST_FLAGS, "--set", "run_id=sec-scratch",
            "--set", "shard_size=2", "--set", f"scratch_url=s3://{s['scratch user']}:{s['scratch password']}@"
            f"{bucket}/scratch?X-Amz-Security-Token={s['scratch token']}", env=env),
    }
    assert runs["store"].returncode == 0, runs["store"].stderr[-3000:]
    assert runs["flag"].returncode == 2 and "--set storage_options.token: a credential" in runs["flag"].stderr
    for name in ("output", "input and scratch"):
        assert runs[name].returncode == 2, (name, runs[name].stderr[-3000:])
        assert len(error_lines(runs[name].stderr)) == 1 and "Traceback" not in runs[name].stderr

    manifests = {rid: json.loads(fs.cat_file(f"{s3_bucket}/out/runs/{rid}/manifest.json"))
                 for rid in ("sec-store", "sec-scratch")}
    assert manifests["sec-store"]["status"] == "succeeded" and manifests["sec-store"]["shards"]["count"] >= 2
    assert manifests["sec-store"]["config"]["storage_options"]["secret"] == "***"
    scratch = manifests["sec-scratch"]
    # It failed on the scratch folder, which a run uses only after planning shards: the signed input was read.
    assert scratch["status"] == "failed" and "/scratch?X-Amz-Security-Token=***" in scratch["error"], scratch["error"]
    assert scratch["input_url"] == scrub(input_url) and "X-Amz-Signature=***" in scrub(input_url)
    assert scratch["config"]["scratch_url"].startswith("s3://***@")

    printed = {f"{n} {stream}": getattr(r, stream) for n, r in runs.items() for stream in ("stdout", "stderr")}
    stored = _stored_objects(fs, bucket)
    assert any(k.endswith("metadata.json") for k, _ in stored) and any("!config.json" in k for k, _ in stored)
    api = _prefect_api_text()
    assert "sec-store" in api and "batch-forecast-summary" in api  # runs and artifacts are there to search
    database = _prefect_database_bytes()
    assert b"sec-scratch" in database
    for name, value in s.items():
        for where, text in printed.items():
            assert value not in text, f"{name} printed on {where}"
        for key, data in stored:
            assert value.encode() not in data, f"{name} written to {key}"
        assert value not in api, f"{name} returned by the Prefect API"
        assert value.encode() not in database, f"{name} stored in the Prefect database"
