"""Credentials never appear in what a run prints, logs or writes.

Runs the CLI with known, unique credentials (moto accepts any) from the environment, a config
file, a --set flag and a URL, then searches stdout/stderr, every object under the bucket (model
archives unpacked), and everything the Prefect server holds (flow run parameters, states, logs).
"""
from __future__ import annotations

import io
import json
import logging
import sys
import uuid
import zipfile

import pytest

from lstm_core.config import ForecastConfig, redact
from lstm_core.secrets import ScrubFilter, scrub, secret_values
from tests.conftest import make_frame
from tests.reliability.conftest import (FAST_FLAGS, cli_env, direct_fs, error_lines, keys_under, put_frame, run_cli)


def _unique(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex}"


def test_secret_values_and_scrub():
    opts = {"key": "AKIAEXAMPLE123", "secret": "s3cr3t-value-xyz", "endpoint_url": "http://u:pw-123456@host:9000",
            "client_kwargs": {"aws_session_token": "tok-abcdefgh"}, "anon": False}
    env = {"AWS_SECRET_ACCESS_KEY": "env-secret-1234", "AWS_REGION": "us-east-1", "HOME": "/root",
           "PREFECT_API_KEY": "pnu_abcdefghij"}
    found = secret_values(opts, ["sftp://bob:hunter2-long@h/x"], environ=env)
    assert found == {"AKIAEXAMPLE123", "s3cr3t-value-xyz", "pw-123456", "tok-abcdefgh", "env-secret-1234",
                     "pnu_abcdefghij", "hunter2-long"}
    text = "failed https://bob:hunter2-long@h/x with s3cr3t-value-xyz and env-secret-1234 in us-east-1"
    assert scrub(text, found) == "failed https://***@h/x with *** and *** in us-east-1"
    assert redact(opts) == {"key": "***", "secret": "***", "endpoint_url": "http://***@host:9000",
                            "client_kwargs": {"aws_session_token": "***"}, "anon": False}
    public = ForecastConfig(input_url="ftp://bob:hunter2-long@h/in.parquet", storage_options=opts).public_dict()
    assert "hunter2-long" not in json.dumps(public) and "s3cr3t" not in json.dumps(public)


def test_log_filter_scrubs_messages_arguments_and_tracebacks():
    filt = ScrubFilter()
    filt.values.add("s3cr3t-value-xyz")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(filt)
    log = logging.getLogger("test-scrub")
    log.addHandler(handler)
    try:
        log.warning("reading %s", "s3://bkt/x?token=s3cr3t-value-xyz")
        try:
            raise OSError("denied for s3cr3t-value-xyz")
        except OSError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "s3cr3t" not in out and "token=***" in out and "OSError: denied for ***" in out


def _everything_stored(fs, bucket: str) -> list[tuple[str, bytes]]:
    """Every object under the bucket, and every member of every zip (.keras) archive."""
    out = []
    for key in keys_under(fs, f"s3://{bucket}"):
        data = fs.cat_file(key)
        out.append((key, data))
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                out.extend((f"{key}!{name}", z.read(name)) for name in z.namelist())
    return out


def _everything_prefect_holds() -> str:
    """Flow runs (parameters, states), task runs and logs on the Prefect test server, as text."""
    from prefect.client.orchestration import get_client

    parts = []
    with get_client(sync_client=True) as client:
        for reader in (client.read_flow_runs, client.read_task_runs, client.read_logs):
            offset = 0
            while True:
                page = reader(limit=200, offset=offset)
                parts.extend(item.model_dump_json() for item in page)
                if len(page) < 200:
                    break
                offset += 200
    return "\n".join(parts)


@pytest.mark.slow
def test_known_credentials_appear_nowhere(s3_bucket, s3_endpoint, prefect_api_url, tmp_path):
    fs = direct_fs(s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=3, length=100))
    secrets = {
        "env key id": _unique("AKIAENV"), "env secret": _unique("envsecret"), "env token": _unique("envtoken"),
        "config key": _unique("AKIACFG"), "config secret": _unique("cfgsecret"), "flag token": _unique("settoken"),
        "url user": _unique("urluser"), "url password": _unique("urlpass"),
    }
    # (a credential given with --set is refused: it would be visible in `ps`; the same token through the
    # environment's storage options instead)
    env = cli_env(prefect_api_url, AWS_ACCESS_KEY_ID=secrets["env key id"],
                  AWS_SECRET_ACCESS_KEY=secrets["env secret"], AWS_SESSION_TOKEN=secrets["env token"],
                  LSTM_FORECAST_STORAGE_OPTIONS=json.dumps({"token": secrets["flag token"]}))
    config = tmp_path / "job.yaml"
    config.write_text(f"storage_options:\n  key: {secrets['config key']}\n  secret: {secrets['config secret']}\n")
    common = ("--config", str(config), *FAST_FLAGS)
    flag = run_cli("run", "--input", f"{s3_bucket}/in/series.parquet", "--output", f"{s3_bucket}/out", *common,
                   "--set", f"storage_options.token={secrets['flag token']}", env=env)
    assert flag.returncode == 2 and "--set storage_options.token: a credential on the command line" in flag.stderr

    ok = run_cli("run", "--input", f"{s3_bucket}/in/series.parquet", "--output", f"{s3_bucket}/out", *common,
                 "--set", "run_id=sec-ok", env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    # A failing run whose input URL carries credentials: the error must not repeat them.
    bad_url = f"s3://{secrets['url user']}:{secrets['url password']}@{bucket}/in/series.parquet"
    bad = run_cli("run", "--input", bad_url, "--output", f"{s3_bucket}/out", *common, "--set", "run_id=sec-bad",
                  env=env)
    assert bad.returncode != 0
    assert len(error_lines(bad.stderr)) == 1 and "Traceback" not in bad.stderr, bad.stderr[-3000:]

    manifest = json.loads(fs.cat_file(f"{s3_bucket}/out/runs/sec-ok/manifest.json"))
    assert manifest["status"] == "succeeded" and manifest["config"]["storage_options"]["secret"] == "***"
    # the credentialed input URL is refused by the CLI's input check, before a run (and its manifest) exists
    assert not fs.exists(f"{s3_bucket}/out/runs/sec-bad/manifest.json")

    printed = {"ok stdout": ok.stdout, "ok stderr": ok.stderr, "bad stdout": bad.stdout, "bad stderr": bad.stderr,
               "flag stdout": flag.stdout, "flag stderr": flag.stderr}
    stored = _everything_stored(fs, bucket)
    assert any(k.endswith("metadata.json") for k, _ in stored) and any("!" in k for k, _ in stored)
    prefect_text = _everything_prefect_holds()
    assert "sec-ok" in prefect_text  # the runs are there to be searched
    for name, value in secrets.items():
        for where, text in printed.items():
            assert value not in text, f"{name} printed on {where}"
        for key, data in stored:
            assert value.encode() not in data, f"{name} written to {key}"
        assert value not in prefect_text, f"{name} stored by the Prefect server"
    print(bad.stderr.splitlines()[-2:], file=sys.stderr)
