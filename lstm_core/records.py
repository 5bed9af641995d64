"""Typed run records: what a written shard reports to the flow (`ShardSummary`), and the run's manifest
(`Manifest`, `runs/<run_id>/manifest.json`, the commit marker readers trust).

A record's JSON holds exactly the fields the run set: an optional field left unset is absent (a failed run
that stopped before planning has no `plan`), while one set to None is written as null (`model_version` of a
run with several models). `Manifest.model_dump(mode="json")` is what `RunWriter.commit` writes; readers may
validate a manifest with `Manifest.model_validate_json(text)` or with the JSON Schema published in
`docs/manifest.schema.json` (regenerate it with `python -m lstm_core.records`).
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    model_serializer,
)

from lstm_core.metrics import MetricTotals

SCHEMA_PATH = Path("docs") / "manifest.schema.json"  # from the repository root, where it is published

# Written as `datetime.isoformat()` (e.g. 2026-11-30T09:56:09.784855+00:00), as the manifest always had them.
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


class Record(BaseModel):
    """A record whose JSON holds exactly the fields that were set (an unset optional field is absent)."""

    # forbid: a misspelt field fails where the record is built; constants: NaN metrics stay NaN in the JSON
    model_config = ConfigDict(extra="forbid", validate_assignment=True, ser_json_inf_nan="constants")

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler):
        data = handler(self)
        fields = type(self).model_fields
        return {k: v for k, v in data.items()
                if k not in fields or k in self.model_fields_set or fields[k].is_required()}


# --- shared parts -----------------------------------------------------------------------------------
class SkippedEntry(Record):
    """A series validation skipped (all of them are also in the quarantine table)."""

    series_id: str = Field(description="the series' id")
    field: str = Field(description="the input field at fault (`y`, `ds`, a covariate...)")
    reason: str = Field(description="why it was skipped, in words")

    @classmethod
    def of(cls, skipped: Any) -> "SkippedEntry":
        """From a `lstm_core.validation.SkippedSeries` (or anything with those three attributes)."""
        return cls(series_id=str(skipped.series_id), field=skipped.field, reason=skipped.reason)


IntervalSource = Literal["model", "run", "none"]


class ShardEntry(Record):
    """What one shard read and wrote: the manifest's `shards.items` entry."""

    shard: int = Field(description="shard index: its outputs are `part-<shard>.parquet`")
    group: str | None = Field(description="its model group's value (null without `group_column`)")
    source: str = Field(description="what it read: its scratch file, or `input` (the input URL itself)")
    series_planned: int = Field(description="series the plan assigned to it")
    rows_read: int = Field(description="input rows read")
    series_read: int = Field(description="series read")
    series_forecast: int = Field(description="series that passed validation and were forecast")
    series_skipped: int = Field(description="series skipped by validation")
    points_filled: int = Field(description="missing time steps filled (`gap_policy: fill`)")
    prediction_rows: int = Field(description="rows written to `predictions/`")
    fingerprint: str = Field(description="content hash of the shard's valid series (ids, lengths, values)")
    backtest_rows: int = Field(description="rows written to `backtest/`")
    backtest_seconds: float = Field(description="seconds spent forecasting (and refitting) the backtest windows")
    backtest_skipped_windows: int = Field(description="backtest windows skipped (series too short for them)")
    series_by_model: dict[str, int] = Field(default_factory=dict, description="series per serving model: the "
                                            "`model` value of their `predictions/` rows")
    intervals: IntervalSource = Field(description="where its intervals came from: `model` (saved beside the model "
                                                  "version), `run` (calibrated on its backtest) or `none`")


class RealisedScores(BaseModel):
    """A shard's realised accuracy of earlier runs' predictions (in memory only): its rows of the `realised/`
    table, and the sums that pool over shards."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    table: pd.DataFrame = Field(description="rows of the `realised/` table (per series and over the shard's series)")
    totals: MetricTotals = Field(description="metric sums by forecast run, model version and cutoff")
    points: pd.DataFrame = Field(description="forecast points scored by forecast run, model version, cutoff and "
                                             "model")


class RealisedTotals(BaseModel):
    """A shard's realised accuracy of earlier runs, as sums that pool over shards (in memory only)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    totals: MetricTotals = Field(description="metric sums by forecast run, model version and cutoff")
    points: pd.DataFrame = Field(description="forecast points scored by forecast run, model version, cutoff and "
                                             "model")
    rows: int = Field(description="rows written to `realised/`")


class ShardTotals(BaseModel):
    """The sums behind a shard's metrics: they merge over shards by addition (in memory only)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    pooled: MetricTotals = Field(description="over every series and backtest window, by model and metric")
    window: MetricTotals = Field(description="by backtest window, model and metric")
    window_cutoffs: dict[int, Any] = Field(description="backtest window -> its latest cutoff (a pandas Timestamp)")


class ShardSummary(ShardEntry):
    """What the flow keeps of a written shard: its manifest entry, plus its skipped series, metric totals
    and output paths. Never written to disk as it is (the totals are in-memory sums)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    skipped: list[SkippedEntry] = Field(description="its skipped series (the first 1,000)")
    totals: ShardTotals = Field(description="the sums behind its pooled and per-window metrics")
    realised: RealisedTotals | None = Field(description="its realised accuracy of earlier runs; null when none")
    outputs: dict[str, str] = Field(description="table -> the part file it wrote")
    coverage: list[dict[str, Any]] = Field(default_factory=list, description="served interval hits per history "
                                           "band (`combination.coverage_sums` rows): they add over shards")
    statistical_seconds: float = Field(0.0, description="seconds fitting the statistical models and combining")

    def entry(self) -> ShardEntry:
        """Its entry in the manifest's `shards.items`."""
        return ShardEntry(**{name: getattr(self, name) for name in ShardEntry.model_fields})


# --- manifest parts ---------------------------------------------------------------------------------
class Execution(Record):
    """Where the run's tasks ran."""

    runner: Literal["in-process", "dask"] = Field(description="`in-process` (the flow's own process) or `dask`")
    address: str | None = Field(None, description="the Dask scheduler's address (`dask_address`); absent for a "
                                                  "local cluster")
    cluster: str | None = Field(None, description="`LocalCluster` when the run started its own Dask cluster")
    workers: int | None = Field(None, description="Dask workers")
    threads: int | None = Field(None, description="Dask worker threads: shards in flight at a time")


class Frequency(Record):
    """The frequency and seasons the run used."""

    freq: str = Field(description="pandas frequency alias (`h`, `D`, `W-SUN`...)")
    source: Literal["configured", "inferred"] = Field(description="set by `freq`, or inferred from the data")
    season_lengths: list[int] = Field(description="season lengths in steps, the main one (`season_length`) first")


class PlanGroup(Record):
    """One model group of the shard plan."""

    group: str | None = Field(description="the group's value (null without `group_column`)")
    series: int = Field(description="series in the group")
    shards: int = Field(description="hash buckets (shards) of the group, some possibly empty")
    train_series: int = Field(description="series its model trains on (a bounded sample)")
    train_data: Literal["shard", "scratch", "input"] = Field(
        description="where its training sample was read: its only shard, a scratch file, or the input")


class PlanSummary(Record):
    """How the input was cut into shards."""

    series: int = Field(description="series in the input (after filters)")
    rows: int = Field(description="rows in the input (after filters)")
    bytes: int = Field(description="bytes the shards read, uncompressed (estimated from the Parquet metadata)")
    shard_size: int = Field(description="series per shard (`shard_size`)")
    shards: int = Field(description="shards planned")
    split: bool = Field(description="the input was split into scratch files (false: shards read it directly)")
    group_column: str | None = Field(description="the column whose values get a model each; null: one model")
    groups: list[PlanGroup] = Field(description="the model groups")


class Decision(Record):
    """The retrain decision: train a model, warm-start the champion, or load a saved one; and why.

    The one decision type: `lstm_core.retrain` makes it, the model's metadata (`decision`) and the manifest
    (`retrain`, per model and at the top) record it. The gate's fields (README "Retrain or load") are set only
    where they apply: absent (not null) otherwise, so a manifest of a load keeps the shape it always had.
    The loaded model rides along in memory (`loaded`), never in the JSON.
    """

    action: Literal["train", "warm", "load", "mixed"] = Field(
        description="`train` (a full training), `warm` (the champion fine-tuned, then gated) or `load`; `mixed` "
                    "at the top level when the groups' models decided differently")
    reason: str = Field(description="why, in words (per group, `group: reason; ...`, when `mixed`)")
    model_version: str | None = Field(None, description="the loaded model version; absent when trained")
    champion_version: str | None = Field(None, description="the champion the decision started from (absent: none)")
    champion_score: float | None = Field(None, description="the champion's gate score (mean MASE over the newest "
                                                           "backtest windows); absent when it was not scored")
    challenger_score: float | None = Field(None, description="the fine-tuned (or fully retrained) challenger's gate "
                                                             "score on the same windows; absent without a challenger")
    promoted: bool | None = Field(None, description="the model trained in this run became the champion (absent: "
                                                    "nothing was trained, or a run with other training settings)")
    parent_version: str | None = Field(None, description="the version a warm start began from (null: a full "
                                                         "training)")
    warm_starts: int | None = Field(None, description="warm starts since the last full training, this one included")
    training_seconds: float | None = Field(None, description="seconds spent training in this run (0 for a load, "
                                                             "the discarded challenger's when rejected)")

    _loaded: Any = PrivateAttr(default=None)
    _role: str = PrivateAttr(default="champion")

    @property
    def role(self) -> str:
        """`champion` (the run follows the champion: may replace or gate it) or `own` (other training
        settings, a pinned model, 'never': never changes it); in memory only."""
        return self._role

    def with_role(self, role: str) -> "Decision":
        """This decision with `role` set; returns self."""
        self._role = role
        return self

    @property
    def loaded(self) -> Any:
        """The `artifacts.LoadedModel` a `load` (or a warm start) read, or None."""
        return self._loaded

    def with_loaded(self, loaded: Any) -> "Decision":
        """This decision holding `loaded` (in memory only); returns self."""
        self._loaded = loaded
        return self

    def as_dict(self) -> dict[str, Any]:
        """The JSON the manifest and the model's metadata record (the set fields only)."""
        return self.model_dump(mode="json")


class TrainingSummary(Record):
    """How a model was trained (as recorded when it was trained, for a loaded one)."""

    device: str | None = Field(description="`CPU` or `GPU (<names>)`")
    cudnn: bool | None = Field(description="the cuDNN LSTM kernel was used")
    seconds: float | None = Field(description="training seconds (all ensemble members)")
    best_val_loss: float | None = Field(description="best validation loss, in the training loss' units (mean over "
                                                    "ensemble members)")
    series: int | None = Field(description="series trained on")
    epochs: list[int | None] = Field(description="epochs run, per ensemble member")
    stopped_by: list[str | None] = Field(description="what stopped each member: `early_stopping`, `time_budget` "
                                                     "or `max_epochs`")


class ModelEntry(Record):
    """One model the run used: of a group, or of a shard in `mode: per_series`."""

    group: str | None = Field(description="its group's value (null without `group_column`, and per series)")
    shard: int | None = Field(None, description="its shard (`mode: per_series` only; absent otherwise)")
    model_key: str | None = Field(description="the model store key it is saved under (null per series)")
    model_version: str = Field(description="its version")
    retrain: Decision = Field(description="train or load, and why")
    training: TrainingSummary = Field(description="how it was trained")


class BandCoverage(Record):
    """Coverage of the served forecast's intervals on its held-out backtest windows, for one band of
    history length (points before the cutoff)."""

    band: str = Field(description="history-length band in points, in multiples of the horizon: `1-2`, "
                                  "`3-<2H-1>`, `<2H>-<4H-1>`, `<4H>-<8H-1>`, `<8H>+`")
    series_windows: int = Field(description="series x backtest windows in the band")
    points: int = Field(description="forecast points in the band")
    coverage: dict[str, float | None] = Field(description="level (e.g. `80`) -> fraction of actuals inside the "
                                                          "interval, over the points that have bounds (null: none)")
    scored_points: dict[str, int] = Field(description="level -> points with bounds (the earliest window has none)")


class Serving(Record):
    """Which model served each series and how that was decided (README "Which model serves a series")."""

    rule: str = Field(description="the rule, in words")
    candidates: list[str] = Field(description="the candidates a series may be served (`lstm`, `autoets`, "
                                              "`autotheta`, `dynamic_theta`, `seasonal_naive`, `naive`)")
    series_by_model: dict[str, int] = Field(description="series per `model` value of `predictions/` (a "
                                                        "combination is its candidates joined by `+`)")
    statistical_seconds: float = Field(description="seconds fitting the statistical models and combining, "
                                                   "summed over shards")
    coverage_by_history: list[BandCoverage] = Field(description="the served intervals' held-out coverage per "
                                                                "history-length band")


class Counts(Record):
    """What the run read and wrote, over all shards."""

    series_read: int = Field(description="series read")
    rows_read: int | None = Field(None, description="input rows read (absent when no series was valid)")
    series_forecast: int = Field(description="series forecast")
    series_skipped: int = Field(description="series skipped by validation (all are in `quarantine/`)")
    series_by_model: dict[str, int] | None = Field(None, description="series forecast per serving model (the "
                                                   "`model` value of their `predictions/` rows); absent when none")
    prediction_rows: int | None = Field(None, description="rows written to `predictions/` (absent when no series "
                                                          "was valid)")
    points_filled: int | None = Field(None, description="missing time steps filled (absent when no series was valid)")


class BacktestEntry(Record):
    """The rolling-origin backtest: its settings, cost, and where the intervals came from."""

    windows: int = Field(description="backtest windows (`backtest.windows`)")
    step: int = Field(description="time steps between consecutive cutoffs")
    refit: bool = Field(description="the model was refit at each window's cutoff (`backtest.refit`)")
    first_window: int = Field(description="the earliest window scored (earlier ones precede the end of the "
                                          "training data)")
    rows: int = Field(description="rows written to `backtest/`")
    skipped_windows: int = Field(description="windows skipped (series too short for them), over all shards")
    seconds: float = Field(description="seconds spent forecasting (and refitting) the backtest, summed over shards")
    levels: list[float] = Field(description="interval levels, in percent (`levels`)")
    interval_method: Literal["conformal", "conformal_log"] = Field(description="`interval_method`")
    intervals: Literal["model", "run", "none", "mixed"] = Field(
        description="`model`: saved beside the model version; `run`: calibrated on this run's backtest; `none`: no "
                    "levels; `mixed`: shards differed")
    earlier_runs_scored: int = Field(description="earlier committed runs whose predictions realised accuracy scored")


class ShardsEntry(Record):
    """The run's shards."""

    count: int = Field(description="shards")
    shard_size: int = Field(description="series per shard (`shard_size`)")
    split: bool = Field(description="the input was split into scratch files")
    in_flight: int = Field(description="shards run at a time")
    items: list[ShardEntry] = Field(description="what each shard read and wrote")


class Outputs(Record):
    """Where the run's outputs are: part files (a run of one shard) or partition folders (a sharded run)."""

    predictions: str | None = Field(None, description="predictions part file or partition")
    metrics: str | None = Field(None, description="metrics part file or partition")
    quarantine: str | None = Field(None, description="quarantine part file or partition")
    backtest: str | None = Field(None, description="backtest part file or partition")
    realised: str | None = Field(None, description="realised accuracy part file or partition (absent when none)")
    metrics_overall: str | None = Field(None, description="a sharded run's overall metric rows (`part-overall`)")
    realised_overall: str | None = Field(None, description="a sharded run's overall realised accuracy rows")
    plots: dict[str, str] | None = Field(None, description="plot file name -> its path (runs of one shard; "
                                        "`nightly.png` in every run that compares with an earlier one)")
    revisions: str | None = Field(None, description="revisions part file or partition (absent when there is no "
                                                    "previous committed run)")


class Tuned(Record):
    """The tuned settings a run applied (`tuned: latest`)."""

    study: str | None = Field(description="the tuning study")
    trial: int | None = Field(description="its best trial's number")
    objective: float | None = Field(description="that trial's objective (pooled backtest MASE)")
    metric: str | None = Field(description="the objective's metric")
    written_at: str | None = Field(description="when the study's best settings were written (ISO 8601, UTC)")
    best_yaml: str = Field(description="the study's `best.yaml`")
    settings: dict[str, Any] = Field(description="dotted setting name -> the value applied")


class ScheduleEntry(Record):
    """The run's place on the schedule (lstm_core.catchup)."""

    slot: Timestamp | None = Field(description="the run's slot: its scheduled start, else its `as_of`; null for a "
                                               "manual run of the newest data")
    interval: timedelta | None = Field(description="the setting `schedule_interval` (ISO 8601 duration); null: "
                                                   "no catch-up")
    previous_slot: Timestamp | None = Field(description="the newest committed run's slot before this one")
    previous_run_id: str | None = Field(description="that run's id")
    skipped_slots: list[Timestamp] = Field(description="slots missed between the previous slot and this one (the "
                                                       "first 1,000), oldest first: this run caught up on them")
    skipped_count: int = Field(description="how many slots were missed (all of them)")


class RevisionsEntry(Record):
    """How far the forecast moved from the previous committed run's (lstm_core.revisions)."""

    previous_run_id: str | None = Field(description="the run compared with: the newest committed run before this "
                                                    "one (by as_of, else slot, else start); null: none")
    rows: int = Field(description="(series, date) pairs both runs forecast")
    series: int = Field(description="series with such a pair")
    scored: int = Field(description="rows with a revision (the series' naive scale is positive)")
    p50: float | None = Field(description="median |revision|, in units of each series' in-sample seasonal naive "
                                          "MAE; null when no row")
    p95: float | None = Field(description="95th percentile of |revision| (same units); null when no row")


class ManifestDraft(Record):
    """What a run knows of its manifest while it runs; `finish` turns it into the `Manifest`."""

    run_id: str = Field(description="the run id: the partition `run=<run_id>` of every table")
    run_id_source: Literal["configured", "schedule", "as_of", "new"] = Field(
        description="`configured` (`run_id`), `schedule` (the scheduled slot's id), `as_of` (`asof-<instant>-<hash>`, "
                    "a run with `as_of`) or `new`")
    scheduled_start: Timestamp | None = Field(description="the scheduled slot's start (null for a manual run)")
    input_url: str = Field(description="the input URL, credentials removed")
    output_url: str = Field(description="the output URL, credentials removed")
    config: dict[str, Any] = Field(description="the resolved configuration without secrets (the settings of the "
                                               "README's configuration table)")
    started_at: Timestamp = Field(description="when the run started (UTC)")
    versions: dict[str, str] = Field(description="package -> installed version")
    flow_run_id: str | None = Field(description="the Prefect flow run's id")
    tuned: Tuned | None = Field(description="the tuned settings applied (`tuned: latest`); null otherwise")
    output_schema_version: int | None = Field(
        None, description="the version of the output tables' columns and types (`lstm_core.layout."
                          "OUTPUT_SCHEMA_VERSION`): 2 = microsecond timestamps, the metrics' `backtest_window`, "
                          "`model` a label (`lstm`, `seasonal_naive`) beside `model_version`; absent in manifests "
                          "written before it existed (version 1: nanosecond timestamps, the metrics' `window`, "
                          "the LSTM's metric rows labelled by its version)")
    as_of: Timestamp | None = Field(None, description="the instant the run ran as of (setting `as_of`): it read "
                                                    "only rows with time <= as_of; null: all rows")
    schedule: ScheduleEntry | None = Field(None, description="the run's slot and the slots it caught up on")
    revisions: RevisionsEntry | None = Field(None, description="how far the forecast moved from the previous "
                                                               "committed run's (absent when the run failed)")
    execution: Execution | None = Field(None, description="where tasks ran (absent when the run failed before)")
    frequency: Frequency | None = Field(None, description="frequency and seasons (absent when the run failed before "
                                                          "planning)")
    ignored_columns: list[str] | None = Field(None, description="input columns no setting asks for (not read)")
    plan: PlanSummary | None = Field(None, description="the shard plan (absent when the run failed before it)")
    input_fingerprint: str | None = Field(None, description="content hash of the valid input series")
    model_version: str | None = Field(None, description="the model version; null when the run used several models")
    model_key: str | None = Field(None, description="the model store key; null when the run used several models")
    retrain: Decision | None = Field(None, description="the retrain decision and reason (`mixed` over several "
                                                       "models)")
    training: TrainingSummary | None = Field(None, description="how the model was trained; null with several models")
    models: list[ModelEntry] | None = Field(None, description="every model the run used (one per group, or per "
                                                              "shard with `mode: per_series`)")
    counts: Counts | None = Field(None, description="series and rows read and written")
    skipped: list[SkippedEntry] | None = Field(None, description="skipped series with field and reason (the first "
                                                                 "1,000; all are in `quarantine/`)")
    skipped_truncated: bool | None = Field(None, description="true when `skipped` does not list every skipped "
                                                             "series; absent otherwise")
    overall_metrics: dict[str, dict[str, float]] | None = Field(
        None, description="model (the LSTM's version, `seasonal_naive`, `autoets`, `autotheta`, `dynamic_theta`, `naive`, `served`) "
                          "-> metric -> value, pooled over every series and backtest window where the model has a "
                          "forecast: `mae`, `rmse`, `smape` (percent), `mase`, and for the LSTM and `served` "
                          "`coverage_<L>` (fraction) and `msis_<L>` per level")
    backtest: BacktestEntry | None = Field(None, description="the backtest's settings and cost")
    serving: Serving | None = Field(None, description="which model served the series, and the served intervals' "
                                                      "coverage per history band (absent when the run failed)")
    shards: ShardsEntry | None = Field(None, description="the shards and what each read")
    outputs: Outputs | None = Field(None, description="where the outputs are")

    def finish(self, **fields: Any) -> "Manifest":
        """The manifest: this draft's set fields, updated with `fields` (`status` at least)."""
        return Manifest(**({name: getattr(self, name) for name in self.model_fields_set} | fields))


class Manifest(ManifestDraft):
    """`runs/<run_id>/manifest.json`: written last; trust a run only when its `status` is `succeeded`."""

    status: Literal["succeeded", "failed"] = Field(description="`succeeded`: the run's outputs are complete; "
                                                               "`failed`: see `error`")
    error: str | None = Field(None, description="why the run failed (`<exception type>: <first line>`); absent when "
                                                "it succeeded")
    reason: Literal["interrupted", "error"] | None = Field(
        None, description="what stopped a failed run: `interrupted` (Ctrl-C or SIGTERM; `error` names the signal: "
                          "`RunInterrupted: interrupted by SIGINT`) or `error`; absent when it succeeded")
    timings_s: dict[str, float] = Field(
        description="seconds per task name (summed over its runs), and wall-clock seconds of the flow's "
                          "phases (`wall_<phase>`, `wall_total`)")
    finished_at: Timestamp = Field(description="when the run committed or failed (UTC)")


def manifest_schema_text() -> str:
    """The manifest's JSON Schema as published in `docs/manifest.schema.json`."""
    # the dialect named, so a validator does not fall back to an older draft ($defs is 2020-12 syntax)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Manifest.model_json_schema()}
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m lstm_core.records [path]`: write the manifest's JSON Schema (default docs/manifest.schema.json)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SCHEMA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest_schema_text())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
