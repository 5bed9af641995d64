"""One redaction for every URL setting: user-info with or without a scheme, and credential query parameters."""
from __future__ import annotations

import json

import pytest

from lstm_core.config import ConfigError, ForecastConfig, validate_config
from lstm_core.secrets import ScrubFilter, scrub, secret_values, url_credentials


@pytest.mark.parametrize("text, expected", [
    # the clean-up warning of the issue: s3fs quotes the path without its scheme
    ("could not remove the run's scratch files: bob:hunter2-long@lake/_scratch/run=r1: denied",
     "could not remove the run's scratch files: ***@lake/_scratch/run=r1: denied"),
    ("'user:p4ss@bucket/key' not found", "'***@bucket/key' not found"),
    ("s3://u:p@bucket/x", "s3://***@bucket/x"),
    ("https://h/o.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA1%2F2026%2Fus-east-1"
     "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=0a1b2c",
     "https://h/o.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
     "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=***"),
    ("https://h/o?AWSAccessKeyId=AKIA2&Signature=c2ln%3D&Expires=1", "https://h/o?AWSAccessKeyId=***&Signature=***&Expires=1"),
    ("https://acct.blob.core.windows.net/c/b.parquet?sv=2022-11-02&se=2026-01-01&sr=b&sp=r&sig=abc%2Bdef%3D",
     "https://acct.blob.core.windows.net/c/b.parquet?sv=2022-11-02&se=2026-01-01&sr=b&sp=r&sig=***"),
    ("https://storage.googleapis.com/b/o?X-Goog-Credential=svc%40p&X-Goog-Signature=ff00",
     "https://storage.googleapis.com/b/o?X-Goog-Credential=***&X-Goog-Signature=***"),
    ("https://h/x?token=t0k3n&access_token=a1&code=c0de&page=2", "https://h/x?token=***&access_token=***&code=***&page=2"),
    # ordinary text stays readable
    ("run r1 (sched-20260301T010000Z-3f2a9c1b7d4e): 10:30 done, mail ops@example.com",
     "run r1 (sched-20260301T010000Z-3f2a9c1b7d4e): 10:30 done, mail ops@example.com"),
    ("tcp://scheduler:8786 and s3://lake/forecasts?versionId=3", "tcp://scheduler:8786 and s3://lake/forecasts?versionId=3"),
])
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_url_credentials_are_collected_encoded_and_decoded():
    found = url_credentials("https://bob:pw-123456@h/x?X-Amz-Credential=AKIA9%2F2026&X-Amz-Signature=beef&a=1")
    assert set(found) == {"bob", "pw-123456", "AKIA9%2F2026", "AKIA9/2026", "beef"}
    assert secret_values({}, ["https://h/x?sig=abcdefgh12345"], environ={}) == {"abcdefgh12345"}


def test_every_url_setting_is_redacted_in_the_public_config():
    assert set(ForecastConfig.url_settings()) >= {"input_url", "output_url", "scratch_url"}
    cfg = validate_config({
        "input_url": "https://iu:ip-secret@h/in.parquet?X-Amz-Signature=in-sig-1234",
        "output_url": "s3://ou:op-secret@lake/out?token=out-token-1234",
        "scratch_url": "s3://su:sp-secret@lake/scratch?sig=scr-sig-1234",
    })
    public = json.dumps(cfg.public_dict())
    for secret in ("ip-secret", "in-sig-1234", "op-secret", "out-token-1234", "sp-secret", "scr-sig-1234"):
        assert secret not in public
    for url in cfg.urls():
        assert set(url_credentials(url)) <= secret_values({}, cfg.urls(), environ={}) | {"iu", "ou", "su"}


@pytest.mark.parametrize("url_setting", ["input_url", "output_url", "scratch_url"])
@pytest.mark.parametrize("runner", [{"workers": 2}, {"dask_address": "tcp://sched:8786"}])
def test_credentialed_urls_are_refused_on_dask(url_setting, runner):
    with pytest.raises(ConfigError, match=f"setting 'config'.*{url_setting} carries credentials"):
        validate_config({url_setting: "s3://u:p@lake/x", **runner})
    with pytest.raises(ConfigError, match=f"{url_setting} carries credentials"):
        validate_config({url_setting: "https://h/x?X-Amz-Signature=abc", **runner})
    validate_config({url_setting: "s3://lake/x", **runner})


def test_log_filter_scrubs_bare_user_info_and_query_strings():
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubFilter())
    log = logging.getLogger("test-redaction")
    log.addHandler(handler)
    try:
        log.warning("could not remove %s", "bob:hunter2-long@lake/_scratch")
        log.warning("reading %s", "https://h/x?X-Amz-Signature=deadbeef")
    finally:
        log.removeHandler(handler)
    assert "hunter2" not in stream.getvalue() and "deadbeef" not in stream.getvalue()


def test_cli_keeps_every_credentialed_url_out_of_the_flow_parameters(monkeypatch):
    import os

    from flows import cli
    from flows.handoff import run_parameters

    names = ("LSTM_FORECAST_SCRATCH_URL", "LSTM_FORECAST_INPUT_URL", "LSTM_FORECAST_OUTPUT_URL",
             "LSTM_FORECAST_STORAGE_OPTIONS")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    scratch = "s3://su:sp-secret@lake/scratch"
    signed = "https://h/in.parquet?X-Amz-Signature=sig-secret"
    config = cli._resolve(None, {"input_url": signed, "output_url": "s3://lake/out"}, [f"scratch_url={scratch}"])
    resolved = run_parameters(config, None)["settings"]  # what the CLI calls the flow with
    assert "scratch_url" not in resolved and "input_url" not in resolved
    assert resolved["output_url"] == "s3://lake/out"
    # They reach the flow in the configuration object it is handed (flows/handoff.py), never through the
    # process environment.
    assert config.scratch_url == scratch and config.input_url == signed
    assert not [name for name in names if name in os.environ]
