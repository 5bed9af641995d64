"""Settings from places others can write, and text from the input, kept in their lane (issue 26, findings 8
and 10).

- best.yaml (in the shared output store): read as a configuration, only the settings a tune writes are
  taken (tuned and data settings); a planted `dask_address`, URL, storage option... is refused naming it.
- Numeric settings have upper bounds: a horizon of 1e8 is refused at once; a planted best.json cannot set
  epochs to 1e9 or units to 1e6.
- `--set` refuses credentials (visible in `ps`, kept in shell history).
- The Prefect parameter form: no "(secrets allowed)"; its schema refuses secret-named storage options and
  credentialed URLs, so a server enforcing it never creates (stores) such a run.
- Markdown injection through a series id (an image and a link) into the summary artifact: escaped.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from flows.parameters import RunSettings
from lstm_core.config import (
    TUNED_FILE_TOP,
    ConfigError,
    ForecastConfig,
    load_config,
    parse_sets,
    validate_config,
)
from lstm_core.tuning import apply_tuned
from tasks.reporting import failure_markdown, md_code, md_text, summary_markdown

# --- best.yaml ------------------------------------------------------------------------------------------------
TUNE_WROTE = {"freq": "h", "horizon": 12, "season_length": 24, "window": 48, "scaler": "naive", "seed": 42,
              "model": {"units": [32, 32], "dropout": 0.1, "chunk": 6}, "training": {"loss": "huber"},
              "tuning": {"study": "nightly"}}
# Every top-level setting a tune never writes, with a value of its type (the refusal comes before validation).
NOT_WRITTEN = {name: ("tcp://203.0.113.9:8786" if name == "dask_address" else {"endpoint_url": "http://x"}
                      if name == "storage_options" else 1)
               for name in ForecastConfig.model_fields
               if name not in TUNED_FILE_TOP and name not in ("model", "training", "tuning")}


def _best_yaml(tmp_path, settings: dict) -> str:
    folder = tmp_path / "out" / "tuning" / "study=nightly"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best.yaml"
    path.write_text("# best settings of tuning study 'nightly'\n" + yaml.safe_dump(settings))
    return str(path)


def test_best_yaml_as_a_tune_writes_it_loads(tmp_path):
    config = load_config(_best_yaml(tmp_path, TUNE_WROTE), overrides={"input_url": "in", "output_url": "out"})
    assert config.window == 48 and config.model.units == [32, 32] and config.training.loss == "huber"
    assert (config.input_url, config.output_url) == ("in", "out")  # where data goes: the run's own


@pytest.mark.parametrize("name", sorted(NOT_WRITTEN))
def test_best_yaml_with_any_other_setting_is_refused_naming_it(tmp_path, name):
    path = _best_yaml(tmp_path, {**TUNE_WROTE, name: NOT_WRITTEN[name]})
    with pytest.raises(ConfigError, match=rf"is a tuning result \(best.yaml\): setting '{name}[.']"):
        load_config(path)


@pytest.mark.parametrize("dotted", ["training.max_series", "training.max_train_minutes", "tuning.space",
                                    "tuning.trials", "storage_options.key"])
def test_best_yaml_budgets_and_nested_settings_are_refused(tmp_path, dotted):
    section, leaf = dotted.split(".")
    path = _best_yaml(tmp_path, {**TUNE_WROTE, section: {**TUNE_WROTE.get(section, {}), leaf: {"low": 1} if
                                                          leaf == "space" else 5}})
    with pytest.raises(ConfigError, match=f"setting '{dotted}"):
        load_config(path)


@pytest.mark.parametrize("change, setting", [
    ({"training": {"epochs": 10**9}}, "training.epochs"),
    ({"model": {"units": [10**6]}}, "model.units"),
    ({"window": 10**9}, "window"),
])
def test_best_yaml_values_are_bounded(tmp_path, change, setting):
    path = _best_yaml(tmp_path, {**TUNE_WROTE, **change})
    with pytest.raises(ConfigError, match=f"setting '{setting}'"):
        load_config(path)


# --- best.json (tuned: latest) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, tuned, setting", [
    ({"training": {"epochs": 10**9}}, ["training.epochs"], "training.epochs"),
    ({"model": {"units": [10**6]}}, ["model.units"], "model.units"),
    ({"training": {"batch_size": 10**9}}, ["training.batch_size"], "training.batch_size"),
])
def test_a_planted_best_json_cannot_set_huge_values(tmp_path, settings, tuned, setting):
    study = tmp_path / "out" / "tuning" / "study=default"
    study.mkdir(parents=True)
    (study / "best.json").write_text(json.dumps({
        "study": "default", "trial": 1, "objective": 0.5, "metric": "pooled backtest MASE", "settings": settings,
        "tuned": tuned, "written_at": datetime.now(UTC).isoformat()}))
    config = validate_config({"output_url": str(tmp_path / "out"), "tuned": "latest", "freq": "h"})
    with pytest.raises(ConfigError, match=f"setting '{setting}'"):
        apply_tuned(config)


# --- upper bounds ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, setting", [
    ({"horizon": 10**8}, "horizon"), ({"horizon": 10**8, "freq": "h"}, "horizon"),
    ({"season_length": 10**8, "freq": "h"}, "season_length"), ({"window": 10**8}, "window"),
    ({"training": {"epochs": 10**9}}, "training.epochs"), ({"model": {"units": [10**6]}}, "model.units"),
    ({"model": {"units": [8] * 17}}, "model.units"), ({"model": {"chunk": 10**7}}, "model.chunk"),
    ({"training": {"batch_size": 2**21}}, "training.batch_size"),
    ({"training": {"windows_per_series": 10**7}}, "training.windows_per_series"),
    ({"training": {"ensemble_size": 1000}}, "training.ensemble_size"),
    ({"backtest": {"windows": 10**6}}, "backtest.windows"), ({"tuning": {"trials": 10**7}}, "tuning.trials"),
    ({"max_gap": 10**7}, "max_gap"), ({"workers": 10**5}, "workers"),
])
def test_numeric_settings_have_upper_bounds_checked_at_once(settings, setting):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"setting '{setting}'"):
        validate_config(settings)
    assert time.perf_counter() - t0 < 0.5  # a horizon of 1e8 took 4.4 s to validate


@settings(max_examples=40, deadline=None)
@given(horizon=st.integers(min_value=1, max_value=10**12))
def test_any_horizon_validates_quickly_and_only_up_to_the_bound(horizon):
    t0 = time.perf_counter()
    try:
        config = validate_config({"horizon": horizon, "freq": "h"})
    except ConfigError as exc:
        assert horizon > 100_000 and "setting 'horizon'" in str(exc)
    else:
        assert horizon <= 100_000 and config.window >= 3 * horizon
    assert time.perf_counter() - t0 < 0.5


# --- --set -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("item", ["storage_options.secret=s3cr3t-value-1", "storage_options.key=AKIAFLAG12345",
                                  "storage_options.client_kwargs.aws_secret_access_key=s3cr3t-value-2",
                                  "storage_options.token=s3cr3t-value-3"])
def test_set_refuses_credentials_without_repeating_them(item):
    with pytest.raises(ConfigError, match="a credential on the command line") as err:
        parse_sets([item])
    assert "s3cr3t" not in str(err.value) and "AKIAFLAG" not in str(err.value)


def test_set_takes_what_is_not_a_credential():
    assert parse_sets(["storage_options.endpoint_url=http://minio:9000", "storage_options.config_kwargs.read_timeout=9",
                       "input_url=s3://bucket/in"]) == {
        "storage_options": {"endpoint_url": "http://minio:9000", "config_kwargs": {"read_timeout": 9}},
        "input_url": "s3://bucket/in"}


# --- the parameter form ----------------------------------------------------------------------------------------
def _form_schema() -> dict:
    from flows.batch_forecast import batch_forecast

    return batch_forecast.parameters.model_dump()


def test_the_form_does_not_invite_secrets():
    text = json.dumps(_form_schema())
    assert "secrets allowed" not in text
    described = _form_schema()["definitions"]["RunSettings"]["properties"]["storage_options"]["description"]
    assert "without credentials" in described and "refused" in described


@pytest.mark.parametrize("settings, ok", [
    ({"storage_options": {"secret": "s"}}, False), ({"storage_options": {"AWS_Secret_Access_Key": "s"}}, False),
    ({"storage_options": {"token": "t"}}, False), ({"storage_options": {"endpoint_url": "http://m:9000"}}, True),
    ({"output_url": "s3://user:pw@bucket/out"}, False), ({"input_url": "https://h/in.parquet?X-Amz-Signature=a"}, False),
    ({"input_url": "https://h/in.parquet?sig=abc"}, False), ({"input_url": "s3://bucket/in?version=3"}, True),
    ({"output_url": "s3://bucket/out"}, True),
])
def test_the_form_schema_refuses_what_the_flow_refuses(settings, ok):
    """What the Prefect UI validates a form against, and what a server enforcing the schema checks before it
    creates (stores) a run; the flow's own check agrees."""
    schema = _form_schema()
    params = {"settings": settings}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(params))
    assert (not errors) == ok, errors
    if ok:
        RunSettings.model_validate(settings)
    else:
        with pytest.raises(Exception):
            RunSettings.model_validate(settings)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_server_never_creates_a_run_with_a_secret_typed_into_the_form():
    from prefect.client.orchestration import get_client

    from flows.batch_forecast import batch_forecast

    secret = f"typed-secret-{uuid.uuid4().hex}"
    deployment_id = batch_forecast.to_deployment(f"form-{uuid.uuid4().hex[:8]}", parameters={
        "config_path": None, "settings": {}, "allow_overrides": []}).apply()
    with get_client(sync_client=True) as client:
        for settings in ({"storage_options": {"secret": secret}}, {"output_url": f"s3://u:{secret}@b/out"}):
            with pytest.raises(Exception, match="(?i)validation"):
                client.create_flow_run_from_deployment(deployment_id, parameters={"settings": settings})
        runs = client.read_flow_runs(limit=200)
    assert all(secret not in json.dumps(r.parameters) for r in runs)


# --- Markdown ---------------------------------------------------------------------------------------------------
EVIL = "s1` ![x](http://attacker.example/pixel.png) [click](http://attacker.example/) <img src=x> | `"


def _html(md: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(md)


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab ![]()<>`|*_:/.\\&\n#~-h")), max_size=40))
def test_untrusted_text_never_becomes_a_link_an_image_or_html(text):
    for rendered in (_html(f"- {md_text(text)}"), _html(f"- {md_code(text)}")):
        assert "<a " not in rendered and "<img" not in rendered
        assert rendered.count("<li>") == 1


def test_a_series_id_cannot_inject_into_the_summary_or_the_failure_page():
    manifest = {"run_id": "r1", "status": "succeeded", "input_url": "s3://lake/in", "output_url": "s3://lake/out",
                "counts": {"series_read": 1}, "outputs": {},
                "skipped": [{"series_id": EVIL, "field": f"y{EVIL}", "reason": f"too short {EVIL}"}],
                "retrain": {"action": "train", "reason": f"series {EVIL}"}}
    html = _html(summary_markdown(manifest))
    assert "attacker.example" in html  # the id is shown, as text
    assert "<img" not in html and "<a " not in html
    page = _html(failure_markdown("run-1", f"DataValidationError: series {EVIL}: bad"))
    assert "attacker.example" in page and "<img" not in page and "<a " not in page
