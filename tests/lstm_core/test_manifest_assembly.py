"""The manifest assembled from typed records alone (lstm_core.manifest: no Prefect, no storage, no run): small
shard summaries and model records in, a `Manifest` out that validates against docs/manifest.schema.json, with
its counts, serving, models, metrics, backtest, shards and outputs sections worked out by hand here."""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from lstm_core.config import ForecastConfig
from lstm_core.manifest import SKIPPED_IN_SUMMARY, RunShape, assemble_manifest
from lstm_core.metrics import MetricTotals
from lstm_core.model_store import ModelRef
from lstm_core.modelling import candidates_of
from lstm_core.records import Manifest, ManifestDraft, ShardSummary, ShardTotals, SkippedEntry

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
STARTED = datetime(2026, 12, 1, 2, 0, 0, tzinfo=UTC)
FINISHED = datetime(2026, 12, 1, 2, 5, 0, tzinfo=UTC)
CONFIG = ForecastConfig(horizon=4, freq="h", season_length=24, output_url="out")
PARTITIONS = {t: f"out/{t}/run=r1" for t in ("predictions", "metrics", "quarantine", "backtest", "realised")}


def _validates(record: dict) -> None:
    jsonschema.validate(record, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert Manifest.model_validate_json(json.dumps(record)).model_dump(mode="json") == record


def _draft() -> ManifestDraft:
    return ManifestDraft(run_id="r1", run_id_source="configured", scheduled_start=None, input_url="in.parquet",
                         output_url="out", config={"horizon": 4}, started_at=STARTED, versions={"pandas": "3"},
                         flow_run_id=None, tuned=None)


def _totals(pooled: dict[str, tuple[float, int]], windows: dict[tuple[int, str], tuple[float, int]]) -> ShardTotals:
    """Metric sums of one shard: model -> (total MAE, count) pooled, and (window, model) -> (total, count)."""
    pooled_frame = pd.DataFrame([{"model": m, "metric": "mae", "total": t, "count": n} for m, (t, n) in pooled.items()])
    window_frame = pd.DataFrame([{"window": w, "model": m, "metric": "mae", "total": t, "count": n}
                                 for (w, m), (t, n) in windows.items()])
    return ShardTotals(pooled=MetricTotals(pooled_frame, ()), window=MetricTotals(window_frame, ("window",)),
                       window_cutoffs={w: pd.Timestamp("2026-11-30") + pd.Timedelta(hours=4 * w) for w, _ in windows})


def _summary(shard: int, group: str | None, forecast: int, skipped: int, version: str = "v1", *,
             mae: tuple[float, int] = (6.0, 3), intervals: str = "run", by_model: dict[str, int] | None = None,
             coverage: list[dict] | None = None) -> ShardSummary:
    """A shard that forecast `forecast` series and skipped `skipped` (each listed), with LSTM MAE sums `mae`
    (model `version`) and seasonal naive ones twice as large, in backtest window 0 only."""
    totals = _totals({version: mae, "seasonal_naive": (2 * mae[0], mae[1])},
                     {(0, version): mae, (0, "seasonal_naive"): (2 * mae[0], mae[1])})
    return ShardSummary(
        shard=shard, group=group, source="input", series_planned=forecast + skipped,
        rows_read=100 * (forecast + skipped), series_read=forecast + skipped, series_forecast=forecast,
        series_skipped=skipped, points_filled=shard,
        prediction_rows=4 * forecast, fingerprint=f"fp{shard}", backtest_rows=12 * forecast, backtest_seconds=0.25,
        backtest_skipped_windows=0, intervals=intervals, series_by_model=by_model or {"lstm": forecast},
        skipped=[SkippedEntry(series_id=f"s{shard}-{i}", field="y", reason="constant") for i in range(skipped)],
        totals=totals, realised=None, outputs={t: f"out/{t}/run=r1/part-{shard}.parquet"
                                              for t in ("predictions", "metrics", "quarantine", "backtest")},
        coverage=coverage or [], statistical_seconds=0.5)


def _ref(version: str, group: str | None, action: str = "train", first_window: int = 0) -> ModelRef:
    return ModelRef(model_key=f"key-{group}", version=version, group=group, first_window=first_window,
                    decision={"action": action, "reason": f"{action} for {group}"},
                    training={"device": "CPU", "cudnn": False, "seconds": 1.5, "best_val_loss": 0.25, "series": 3,
                              "members": [{"epochs_run": 7, "stopped_by": "early_stopping"},
                                          {"epochs_run": 9, "stopped_by": "max_epochs"}]})


def test_a_run_of_one_shard_and_one_model():
    coverage = [{"band": "3-7", "series_windows": 4, "points": 16, "n_80": 16, "hits_80": 12, "n_95": 16,
                 "hits_95": 15}]
    summary = _summary(0, None, forecast=3, skipped=1, coverage=coverage, by_model={"lstm": 2, "autoets": 1})
    draft = _draft()
    run = assemble_manifest(draft, [summary], {None: _ref("v1", None, first_window=1)}, CONFIG,
                            RunShape(shards=1, split=False, in_flight=1, earlier_runs_scored=2),
                            timings_s={"wall_total": 3.5}, finished_at=FINISHED)
    record = run.manifest.model_dump(mode="json")
    _validates(record)
    assert record["status"] == "succeeded" and record["finished_at"] == FINISHED.isoformat()
    assert record["timings_s"] == {"wall_total": 3.5}
    assert record["counts"] == {"series_read": 4, "rows_read": 400, "series_forecast": 3, "series_skipped": 1,
                                "series_by_model": {"autoets": 1, "lstm": 2}, "prediction_rows": 12,
                                "points_filled": 0}
    assert record["serving"]["candidates"] == candidates_of(CONFIG)
    assert record["serving"]["series_by_model"] == {"autoets": 1, "lstm": 2}
    assert record["serving"]["statistical_seconds"] == 0.5
    assert record["serving"]["coverage_by_history"] == [{"band": "3-7", "series_windows": 4, "points": 16,
                                                         "coverage": {"80": 0.75, "95": 0.9375},
                                                         "scored_points": {"80": 16, "95": 16}}]
    # one model: the run's own model fields are that model's
    assert record["model_version"] == "v1" and record["model_key"] == "key-None"
    assert record["retrain"] == {"action": "train", "reason": "train for None"}
    assert record["training"] == {"device": "CPU", "cudnn": False, "seconds": 1.5, "best_val_loss": 0.25,
                                  "series": 3, "epochs": [7, 9], "stopped_by": ["early_stopping", "max_epochs"]}
    assert [m["model_version"] for m in record["models"]] == ["v1"] and "shard" not in record["models"][0]
    # pooled over the backtest windows: MAE 6/3 for the LSTM (keyed by its version), 12/3 for seasonal naive
    assert record["overall_metrics"] == {"v1": {"mae": 2.0}, "seasonal_naive": {"mae": 4.0}}
    assert record["backtest"] == {"windows": 3, "step": 4, "refit": False, "first_window": 1, "rows": 36,
                                  "skipped_windows": 0, "seconds": 0.25, "levels": [80.0, 95.0],
                                  "interval_method": "conformal", "intervals": "run", "earlier_runs_scored": 2}
    assert record["shards"]["count"] == 1 and record["shards"]["items"] == [summary.entry().model_dump(mode="json")]
    assert record["input_fingerprint"] == "fp0"
    assert record["skipped"] == [{"series_id": "s0-0", "field": "y", "reason": "constant"}]
    assert "skipped_truncated" not in record
    assert record["outputs"] == summary.outputs  # the shard's own part files
    assert run.overall_rows is None and run.realised_rows is None  # a run of one shard wrote its overall rows
    # the draft given is left as it was; the assembled one holds every section
    assert "counts" not in draft.model_fields_set and run.draft.counts == run.manifest.counts


def test_a_sharded_run_of_two_groups_sums_its_shards_in_shard_order():
    summaries = [_summary(2, "b", forecast=2, skipped=0, version="vb", mae=(4.0, 2), intervals="model"),
                 _summary(0, "a", forecast=3, skipped=2, version="va", mae=(3.0, 3)),
                 _summary(1, "a", forecast=1, skipped=0, version="va", mae=(5.0, 1))]
    models = {"b": _ref("vb", "b", action="load"), "a": _ref("va", "a", first_window=2)}
    run = assemble_manifest(_draft(), summaries, models, CONFIG, RunShape(shards=3, split=True, in_flight=2),
                            partitions=PARTITIONS, finished_at=FINISHED)
    record = run.manifest.model_dump(mode="json")
    _validates(record)
    assert record["counts"]["series_forecast"] == 6 and record["counts"]["series_skipped"] == 2
    assert record["counts"]["series_read"] == 8 and record["counts"]["points_filled"] == 0 + 1 + 2
    assert [item["shard"] for item in record["shards"]["items"]] == [0, 1, 2]
    assert record["shards"] | {"items": None} == {"count": 3, "shard_size": 5000, "split": True, "in_flight": 2,
                                                  "items": None}
    assert record["input_fingerprint"] == hashlib.sha256(b"fp0fp1fp2").hexdigest()[:32]
    # several models: listed by group, none is the run's own, the decisions joined
    assert [(m["group"], m["model_version"]) for m in record["models"]] == [("a", "va"), ("b", "vb")]
    assert record["model_version"] is None and record["model_key"] is None and record["training"] is None
    assert record["retrain"] == {"action": "mixed", "reason": "a: train for a; b: load for b"}
    # pooled over shards by their sums, each group's LSTM under its own version
    assert record["overall_metrics"] == {"va": {"mae": 2.0}, "vb": {"mae": 2.0}, "seasonal_naive": {"mae": 4.0}}
    assert record["backtest"]["intervals"] == "mixed" and record["backtest"]["first_window"] == 2
    assert record["backtest"]["rows"] == 12 * 6 and record["backtest"]["seconds"] == 0.75
    assert record["outputs"] == {t: PARTITIONS[t] for t in ("predictions", "metrics", "quarantine", "backtest")}
    # the overall rows the commit writes as part-overall: per window and pooled, the LSTM labelled `lstm`
    rows = run.overall_rows
    pooled = rows[rows["backtest_window"].isna()]
    assert set(zip(pooled["model"], pooled["model_version"].fillna("-"), strict=True)) == \
        {("lstm", "va"), ("lstm", "vb"), ("seasonal_naive", "-")}
    assert (rows["series_id"].isna()).all() and set(rows["backtest_window"].dropna()) == {0}
    assert run.realised_rows is None  # no shard scored earlier runs


def test_skipped_series_beyond_the_summary_are_flagged_as_truncated():
    summary = _summary(0, None, forecast=1, skipped=2)
    summary.series_skipped = SKIPPED_IN_SUMMARY + 5  # a shard lists only its first ones
    run = assemble_manifest(_draft(), [summary], {None: _ref("v1", None)}, CONFIG,
                            RunShape(shards=1, split=False, in_flight=1))
    record = run.manifest.model_dump(mode="json")
    _validates(record)
    assert record["skipped_truncated"] is True and len(record["skipped"]) == 2


def test_a_run_served_by_the_fallback_alone_has_no_model():
    summary = _summary(0, None, forecast=2, skipped=0, by_model={"autoets": 2})
    run = assemble_manifest(_draft(), [summary], {}, CONFIG, RunShape(shards=1, split=False, in_flight=1))
    record = run.manifest.model_dump(mode="json")
    _validates(record)
    assert record["models"] == [] and record["model_version"] is None and record["training"] is None
    assert record["retrain"]["action"] == "train" and "statistical fallback" in record["retrain"]["reason"]
    assert record["backtest"]["first_window"] == 0


def test_per_series_models_are_listed_by_shard_without_a_key():
    config = ForecastConfig(horizon=4, freq="h", season_length=24, mode="per_series")
    summaries = [_summary(0, None, forecast=1, skipped=0, version="p0"), _summary(1, None, forecast=1, skipped=0,
                                                                                  version="p1")]
    models = {1: _ref("p1", None), 0: _ref("p0", None, action="load")}
    run = assemble_manifest(_draft(), summaries, models, config, RunShape(shards=2, split=True, in_flight=1),
                            partitions=PARTITIONS)
    record = run.manifest.model_dump(mode="json")
    _validates(record)
    assert [(m["shard"], m["group"], m["model_key"]) for m in record["models"]] == [(0, None, None), (1, None, None)]
    assert record["retrain"] == {"action": "mixed", "reason": "None: load for None; None: train for None"}


def test_what_cannot_be_assembled_is_refused():
    empty = _summary(0, None, forecast=0, skipped=3)
    with pytest.raises(ValueError, match="no shard forecast any series"):
        assemble_manifest(_draft(), [empty], {}, CONFIG, RunShape(shards=1, split=False, in_flight=1))
    with pytest.raises(ValueError, match="partitions"):
        assemble_manifest(_draft(), [_summary(0, None, 1, 0), _summary(1, None, 1, 0)], {None: _ref("v1", None)},
                          CONFIG, RunShape(shards=2, split=True, in_flight=1))
