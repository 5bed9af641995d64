"""The typed run records: the manifest's published JSON Schema, what its JSON holds, what it rejects."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from lstm_core.metrics import MetricTotals
from lstm_core.records import (Counts, Manifest, ManifestDraft, Outputs, ShardEntry, ShardSummary, ShardTotals,
                               SkippedEntry, manifest_schema_text)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "manifest.schema.json"
STARTED = datetime(2026, 11, 30, 9, 56, 9, 784855, tzinfo=timezone.utc)


def _draft(**fields) -> ManifestDraft:
    return ManifestDraft(run_id="r1", run_id_source="configured", scheduled_start=None, input_url="in.parquet",
                         output_url="out", config={"horizon": 12}, started_at=STARTED, versions={"pandas": "3.1.1"},
                         flow_run_id="f7b8486a-b7c0-42b5-82c7-3d2ec2754b78", tuned=None, **fields)


def _failed() -> dict:
    """A failed manifest as a run that stopped before planning writes it."""
    return _draft().finish(status="failed", error="DataValidationError: file in.parquet: input path does not exist",
                           timings_s={"plan_shards": 0.01}, finished_at=STARTED).model_dump(mode="json")


def test_the_published_schema_file_is_the_one_the_model_generates(tmp_path):
    assert SCHEMA_FILE.read_text() == manifest_schema_text(), \
        "docs/manifest.schema.json is stale: regenerate it with `python -m lstm_core.records`"
    # the command that regenerates it writes exactly that text
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, "-m", "lstm_core.records", str(out)], check=True, cwd=ROOT, capture_output=True)
    assert out.read_text() == SCHEMA_FILE.read_text()
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["status"]["enum"] == ["succeeded", "failed"]
    # every field says what it is
    for name, model in [("Manifest", schema), *schema["$defs"].items()]:
        for field, spec in model["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_unset_fields_are_absent_and_fields_set_to_none_are_null():
    draft = _draft()
    draft.model_version = None  # a run with several models: null, not absent
    record = draft.finish(status="failed", error="boom", timings_s={}, finished_at=STARTED).model_dump(mode="json")
    assert record["model_version"] is None and record["scheduled_start"] is None and record["tuned"] is None
    assert not {"plan", "counts", "outputs", "model_key", "skipped_truncated", "execution"} & set(record)
    assert record["started_at"] == "2026-11-30T09:56:09.784855+00:00"  # datetime.isoformat(), as always written
    assert Counts(series_read=3, series_forecast=0, series_skipped=3).model_dump(mode="json") == \
        {"series_read": 3, "series_forecast": 0, "series_skipped": 3}
    assert Outputs(quarantine="q").model_dump(mode="json") == {"quarantine": "q"}


def test_finish_takes_the_draft_fields_and_the_given_ones_win():
    draft = _draft(counts=Counts(series_read=1, rows_read=10, series_forecast=1, series_skipped=0,
                                 prediction_rows=12, points_filled=0))
    failed = draft.finish(status="failed", error="x", timings_s={}, finished_at=STARTED,
                          counts=Counts(series_read=2, series_forecast=0, series_skipped=2))
    assert failed.counts.model_dump(mode="json") == {"series_read": 2, "series_forecast": 0, "series_skipped": 2}
    assert failed.run_id == "r1" and draft.counts.series_read == 1  # the draft itself is unchanged


def test_nan_metrics_stay_nan_in_the_json():
    record = _draft(overall_metrics={"seasonal_naive": {"mase": float("nan"), "mae": 1.5}}).finish(
        status="succeeded", timings_s={}, finished_at=STARTED)
    text = json.dumps(record.model_dump(mode="json"), sort_keys=True)
    assert '"mase": NaN' in text
    again = Manifest.model_validate_json(text)
    assert math.isnan(again.overall_metrics["seasonal_naive"]["mase"]) and again.overall_metrics["seasonal_naive"]["mae"] == 1.5


def test_a_failed_manifest_round_trips_and_validates_against_the_schema():
    record = _failed()
    text = json.dumps(record, indent=2, sort_keys=True)
    assert Manifest.model_validate_json(text).model_dump(mode="json") == json.loads(text)
    jsonschema.validate(json.loads(text), json.loads(SCHEMA_FILE.read_text()))


@pytest.mark.parametrize("change", [
    pytest.param(lambda m: m.pop("run_id"), id="missing run_id"),
    pytest.param(lambda m: m.pop("status"), id="missing status"),
    pytest.param(lambda m: m.pop("finished_at"), id="missing finished_at"),
    pytest.param(lambda m: m.update(status="running"), id="status running"),
    pytest.param(lambda m: m.update(status="SUCCEEDED"), id="status upper case"),
    pytest.param(lambda m: m.update(run_id_source="manual"), id="unknown run_id_source"),
    pytest.param(lambda m: m.update(counts={"series_read": 3, "series_skipped": 3}), id="counts without series_forecast"),
    pytest.param(lambda m: m.update(started_at="yesterday"), id="started_at not a timestamp"),
    pytest.param(lambda m: m.update(stauts="succeeded"), id="misspelt key"),
])
def test_a_manifest_with_a_missing_or_wrong_field_is_rejected(change):
    record = _failed()
    change(record)
    with pytest.raises(ValidationError):
        Manifest.model_validate_json(json.dumps(record))
    with pytest.raises(jsonschema.ValidationError):  # and so does the published schema
        jsonschema.validate(record, json.loads(SCHEMA_FILE.read_text()),
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_a_shard_summary_s_manifest_entry_leaves_out_its_frames_and_totals():
    import pandas as pd

    totals = MetricTotals(pd.DataFrame({"model": ["m"], "metric": ["mae"], "total": [3.0], "count": [2]}), ())
    summary = ShardSummary(
        shard=2, group=None, source="input", series_planned=3, rows_read=300, series_read=3, series_forecast=2,
        series_skipped=1, points_filled=0, prediction_rows=24, fingerprint="ab", backtest_rows=72,
        backtest_seconds=0.5, backtest_skipped_windows=0, intervals="run",
        skipped=[SkippedEntry(series_id="s9", field="y", reason="constant")],
        totals=ShardTotals(pooled=totals, window=totals, window_cutoffs={0: pd.Timestamp("2026-01-02")}),
        realised=None, outputs={"predictions": "p/part-2.parquet"})
    entry = summary.entry()
    assert type(entry) is ShardEntry and entry.shard == 2 and entry.series_skipped == 1
    assert set(entry.model_dump(mode="json")) == set(ShardEntry.model_fields)
    assert not {"skipped", "totals", "realised", "outputs"} & set(entry.model_dump(mode="json"))
    with pytest.raises(ValidationError):  # a record with a misspelt count fails where it is built
        ShardEntry(**{**entry.model_dump(), "series_forcast": 2})
