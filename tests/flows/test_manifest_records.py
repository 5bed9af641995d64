"""Real runs' manifests are `Manifest` records: they validate against the model and the published JSON Schema,
and round-trip through it unchanged (the model describes every key a run writes, succeeded or failed)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from flows.batch_forecast import batch_forecast
from lstm_core.errors import DataValidationError, NoValidSeriesError
from lstm_core.records import Manifest
from tests.conftest import fast_config, make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
FAST = fast_config().model_dump(mode="json", include={"freq", "horizon", "season_length", "window", "model",
                                                       "training"})


def _record(out: Path, run_id: str) -> tuple[str, Manifest]:
    """The manifest's text as written, checked: schema, model, and a round trip that changes nothing."""
    text = (out / "runs" / run_id / "manifest.json").read_text()
    jsonschema.validate(json.loads(text), SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    manifest = Manifest.model_validate_json(text)
    assert manifest.model_dump(mode="json") == json.loads(text)
    return text, manifest


def test_a_succeeded_run_s_manifest_validates_and_round_trips(tmp_path):
    frame = pd.concat([make_frame(n_series=4, length=150),
                       make_frame(n_series=1, length=20).assign(series_id="empty", y=np.nan)], ignore_index=True)
    frame.astype({"series_id": "string"}).to_parquet(tmp_path / "series.parquet", index=False)
    out = tmp_path / "out"
    returned = batch_forecast(settings={**FAST, "input_url": str(tmp_path / "series.parquet"), "output_url": str(out),
                                        "run_id": "ok"})
    text, m = _record(out, "ok")
    assert returned == json.loads(text)  # the flow returns the manifest as written
    assert m.status == "succeeded" and "error" not in json.loads(text)
    assert m.counts.series_forecast == 4 and m.counts.series_skipped == 1 and m.counts.rows_read == 4 * 150 + 20
    assert [s.series_id for s in m.skipped] == ["empty"] and m.skipped[0].field == "y"
    assert m.shards.count == 1 and m.shards.items[0].series_read == 5 and m.shards.items[0].intervals == "run"
    assert m.models[0].model_version == m.model_version and m.retrain.action == "train"
    # the gate's fields the nightly benchmark reads (issue 23), per model and at the top with one model
    gate = json.loads(text)["models"][0]["retrain"]
    assert gate["promoted"] is True and gate["parent_version"] is None and gate["warm_starts"] == 0
    assert gate["challenger_score"] > 0 and gate["training_seconds"] > 0 and "champion_score" not in gate
    assert json.loads(text)["retrain"] == gate
    assert {m.model_version, "seasonal_naive"} <= set(m.overall_metrics)  # and the statistical models (issue 22)
    assert m.outputs.predictions.endswith("predictions/run=ok/part-0.parquet") and "loss.png" in m.outputs.plots
    assert m.frequency.source == "configured" and m.plan.series == 5 and m.execution.runner == "in-process"
    # every top-level key the README's output contract names, no more
    assert set(json.loads(text)) == {
        "run_id", "run_id_source", "scheduled_start", "input_url", "output_url", "config", "started_at", "versions",
        "flow_run_id", "tuned", "execution", "frequency", "ignored_columns", "plan", "input_fingerprint",
        "model_version", "model_key", "retrain", "training", "models", "counts", "skipped", "overall_metrics",
        "backtest", "shards", "outputs", "timings_s", "finished_at", "status", "output_schema_version", "serving",
        "as_of", "schedule", "revisions"}


@pytest.mark.parametrize("shard_size", [5000, 1], ids=["one shard", "sharded"])
def test_a_run_with_no_valid_series_leaves_a_failed_manifest_that_validates(tmp_path, shard_size):
    make_frame(n_series=3, length=20).assign(y=np.nan).to_parquet(tmp_path / "short.parquet", index=False)
    out = tmp_path / "out"
    with pytest.raises(NoValidSeriesError):
        batch_forecast(settings={**FAST, "input_url": str(tmp_path / "short.parquet"), "output_url": str(out),
                                 "run_id": "none", "shard_size": shard_size})
    text, m = _record(out, "none")
    assert m.status == "failed" and m.error.startswith("NoValidSeriesError: no valid series left to forecast")
    assert json.loads(text)["counts"] == {"series_read": 3, "series_forecast": 0, "series_skipped": 3}
    assert sorted(s.series_id for s in m.skipped) == ["s00", "s01", "s02"]
    assert m.plan.series == 3 and m.plan.split == (shard_size == 1) and (m.plan.shards > 1) == (shard_size == 1)
    assert m.outputs.quarantine and m.outputs.predictions is None  # only the quarantine table was written
    assert m.models is None and "models" not in json.loads(text)


def test_a_run_failing_before_planning_leaves_a_failed_manifest_without_a_plan(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataValidationError):
        batch_forecast(settings={**FAST, "input_url": str(tmp_path / "missing.parquet"), "output_url": str(out),
                                 "run_id": "early"})
    text, m = _record(out, "early")
    assert m.status == "failed" and "input path does not exist" in m.error
    assert m.reason == "error"  # not stopped by a signal (that is `interrupted`: tests/flows/test_interrupt.py)
    assert not {"plan", "frequency", "counts", "outputs", "skipped"} & set(json.loads(text))
    assert m.execution.runner == "in-process" and m.timings_s is not None and m.started_at <= m.finished_at
