"""A run's manifest assembled from what its shards and models report: a pure function of typed records (no
Prefect, no storage), so the flow's commit step shows the graph and the assembly is tested on its own.

    assembled = assemble_manifest(draft, summaries, models, config, RunShape(shards=3, split=True, in_flight=2),
                                  partitions=store.partitions(run_id, TABLES), timings_s=...)
    assembled.manifest        # the `Manifest` to commit, status `succeeded`
    assembled.draft           # the draft with every section set (what a commit that fails records)
    assembled.overall_rows    # a sharded run's overall metric rows (`metrics/run=<id>/part-overall`); else None
    assembled.realised_rows   # a sharded run's overall realised-accuracy rows; None for one shard or none scored

The sections: `counts` and `serving` summed over the shards, `models` (one per group, or per shard with
`mode: per_series`) with the run's `model_version` / `model_key` / `retrain` / `training` when there is one
model, `overall_metrics` pooled over every series, shard and backtest window, `backtest`, `shards`, `skipped`
(the first 1,000) and `outputs`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from lstm_core.backtest import metrics_table
from lstm_core.config import ForecastConfig
from lstm_core.realised import realised_overall
from lstm_core.records import (
    BacktestEntry,
    BandCoverage,
    Counts,
    Decision,
    Manifest,
    ManifestDraft,
    ModelEntry,
    Outputs,
    Serving,
    ShardsEntry,
    ShardSummary,
    TrainingSummary,
)

if TYPE_CHECKING:
    from lstm_core.model_store import ModelRef  # (not at run time: model_store loads TensorFlow)

SKIPPED_IN_SUMMARY = 1000  # skipped series listed per shard in the manifest (all are in quarantine/)

# Whose model: a group's value (None without group_column), or a shard's index in mode per_series.
ModelOwner = str | int | None


@dataclass(frozen=True)
class RunShape:
    """How the run was cut and where it ran: what the manifest says beyond its shards' and models' records."""

    shards: int  # shards planned (1: the run's outputs are that shard's part files)
    split: bool  # the input was split into scratch files
    in_flight: int  # shards run at a time (the task runner's worker threads)
    earlier_runs_scored: int = 0  # earlier committed runs whose predictions realised accuracy scored


@dataclass(frozen=True)
class AssembledRun:
    """The manifest of a run that succeeded, and the overall rows a sharded run commits beside it."""

    draft: ManifestDraft  # the run's draft with every section set
    manifest: Manifest  # that draft finished: status `succeeded`, timings, finished_at
    overall_rows: pd.DataFrame | None  # metrics over all series per backtest window and pooled (sharded runs)
    realised_rows: pd.DataFrame | None  # realised accuracy over all series (sharded runs that scored any)


def assemble_manifest(draft: ManifestDraft, summaries: Sequence[ShardSummary], models: Mapping[ModelOwner, ModelRef],
                      config: ForecastConfig, shape: RunShape, partitions: Mapping[str, str] | None = None,
                      timings_s: Mapping[str, float] | None = None, finished_at: datetime | None = None
                      ) -> AssembledRun:
    """The manifest of a run whose shards all wrote their outputs, from their summaries and the models used.

    Args:
        draft: what the run knew before its shards ran (run id, config, plan...); not changed.
        summaries: every shard's summary, in any order (they are read in shard order).
        models: the models the run used, by owner: a group's value, or a shard's index with `mode: per_series`
            (empty when every series was served by the statistical fallback).
        config: the run's resolved configuration (levels, backtest settings, mode, shard size).
        shape: the number of shards, whether the input was split, shards in flight, earlier runs scored.
        partitions: table -> this run's partition of it (`OutputStore.partitions(run_id, TABLES)`): the
            `outputs` of a sharded run; a run of one shard points at that shard's part files instead.
        timings_s: the manifest's `timings_s` (seconds per task name and `wall_<phase>`).
        finished_at: when the run committed (default now, UTC).

    Raises ValueError when no shard forecast any series (that run fails: `NoValidSeriesError`) or a sharded
    run has no `partitions`.
    """
    from lstm_core.modelling import candidates_of  # (here: modelling loads TensorFlow)

    summaries = sorted(summaries, key=lambda s: s.shard)
    forecast_total = sum(s.series_forecast for s in summaries)
    if forecast_total == 0:
        raise ValueError("assemble_manifest: no shard forecast any series (the run fails with NoValidSeriesError)")
    single = shape.shards == 1
    if not single and partitions is None:
        raise ValueError("assemble_manifest: a sharded run's outputs need its partitions")
    manifest = draft.model_copy(deep=True)
    skipped = [s for summary in summaries for s in summary.skipped]
    overall = overall_metrics(summaries, {c.version for c in models.values() if c is not None})
    realised = None if single else realised_overall_rows(summaries)
    counts = Counts(
        series_read=sum(s.series_read for s in summaries),
        rows_read=sum(s.rows_read for s in summaries),
        series_forecast=forecast_total,
        series_skipped=sum(s.series_skipped for s in summaries),
        prediction_rows=sum(s.prediction_rows for s in summaries),
        points_filled=sum(s.points_filled for s in summaries),
    )
    serving = serving_entry(summaries, [float(v) for v in config.levels], candidates_of(config))
    counts.series_by_model = serving.series_by_model
    manifest.serving = serving
    fingerprints = [s.fingerprint for s in summaries]
    per_series = config.mode == "per_series"
    entries = [_model_entry(key, ref, per_series) for key, ref in sorted(models.items(), key=lambda kv: str(kv[0]))]
    one = entries[0] if len(entries) == 1 else None
    if not entries:  # no series was long enough for the network: every series was served by the fallback
        manifest.retrain = Decision(action="train", reason="no series is long enough for the network: every "
                                    "series is served by the statistical fallback")
    manifest.input_fingerprint = fingerprints[0] if single else \
        hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:32]
    manifest.model_version = one.model_version if one else None
    manifest.model_key = one.model_key if one else None
    if entries:
        manifest.retrain = one.retrain if one else _retrain_summary(entries)
    manifest.training = one.training if one else None
    manifest.models = entries
    manifest.counts = counts
    manifest.skipped = skipped[:SKIPPED_IN_SUMMARY]
    # over all backtest windows (the per-window rows are in the metrics table)
    # keyed as before (output schema 1): the LSTM by its model version, a baseline by its name
    runs = overall[overall["backtest_window"].isna()]
    key = runs["model_version"].astype(object).where(runs["model_version"].notna(), runs["model"].astype(object))
    manifest.overall_metrics = {model: dict(zip(g["metric"], g["value"].astype(float), strict=True))
                                for model, g in runs.groupby(key, sort=False)}
    manifest.backtest = _backtest_entry(summaries, models, config, shape.earlier_runs_scored)
    manifest.shards = ShardsEntry(count=shape.shards, shard_size=config.shard_size, split=shape.split,
                                  in_flight=shape.in_flight, items=[s.entry() for s in summaries])
    if len(skipped) > SKIPPED_IN_SUMMARY or counts.series_skipped > len(skipped):
        manifest.skipped_truncated = True  # the quarantine table lists every one
    if single:
        manifest.outputs = Outputs(**summaries[0].outputs)
    else:
        assert partitions is not None
        tables = ("predictions", "metrics", "quarantine", "backtest", *(("realised",) if realised is not None else ()))
        manifest.outputs = Outputs(**{t: partitions[t] for t in tables})
    done = manifest.finish(status="succeeded", timings_s=dict(timings_s or {}),
                           finished_at=finished_at or datetime.now(UTC))
    return AssembledRun(manifest, done, None if single else overall, realised)


def _backtest_entry(summaries: Sequence[ShardSummary], models: Mapping[ModelOwner, ModelRef], config: ForecastConfig,
                   earlier_runs_scored: int) -> BacktestEntry:
    """The manifest's `backtest`: its settings, cost and where the intervals came from."""
    seconds = sum(s.backtest_seconds for s in summaries)
    sources = sorted({s.intervals for s in summaries})
    return BacktestEntry(
        windows=config.backtest.windows, step=config.backtest_step, refit=config.backtest.refit,
        first_window=max((int(c.first_window) for c in models.values()), default=0),
        rows=sum(s.backtest_rows for s in summaries),
        skipped_windows=sum(s.backtest_skipped_windows for s in summaries),
        seconds=round(seconds, 3),
        levels=[float(v) for v in config.levels], interval_method=config.interval_method,
        # "model": saved beside the model version; "run": calibrated on this run's backtest
        intervals=sources[0] if len(sources) == 1 else "mixed",
        earlier_runs_scored=earlier_runs_scored,
    )


def _model_entry(owner: ModelOwner, ref: ModelRef, per_series: bool = False) -> ModelEntry:
    """One model's entry in the manifest's `models`: of a group (`owner` its value), or of a shard (`owner` its
    index) in `mode: per_series`, whose models are not stored under a key."""
    done = {"model_version": ref.version, "retrain": Decision(**ref.decision),
            "training": _training_summary(ref.training)}
    if per_series:
        assert isinstance(owner, int), owner
        return ModelEntry(group=None, shard=owner, model_key=None, **done)
    assert not isinstance(owner, int), owner
    # a pinned model may come from another key: the ref names the one it was saved under
    return ModelEntry(group=owner, model_key=ref.model_key, **done)


def _retrain_summary(models: Sequence[ModelEntry]) -> Decision:
    """The run's `retrain` over several models: their action when they agree, else `mixed`; every reason."""
    actions = {m.retrain.action for m in models}
    # (per-series entries have group None: their reasons read "None: ...", as manifests always had them)
    return Decision(action=actions.pop() if len(actions) == 1 else "mixed",
                    reason="; ".join(f"{m.group}: {m.retrain.reason}" for m in models))


def _training_summary(training: Mapping[str, Any] | None) -> TrainingSummary:
    """A model's `training` entry from the training record saved with its version (members' epochs and stops)."""
    t = training or {}
    return TrainingSummary(
        **{k: t.get(k) for k in ("device", "cudnn", "seconds", "best_val_loss", "series")},
        epochs=[m.get("epochs_run") for m in t.get("members", [])],
        stopped_by=[m.get("stopped_by") for m in t.get("members", [])],
    )


# --- the sections summed over shards -------------------------------------------------------------
def serving_entry(summaries: Sequence[ShardSummary], levels: list[float], candidates: list[str]) -> Serving:
    """The manifest's `serving`: series per model and the served intervals' coverage per history band,
    summed over shards."""
    from lstm_core.metrics import level_label

    by_model: dict[str, int] = {}
    for s in summaries:
        for k, v in s.series_by_model.items():
            by_model[k] = by_model.get(k, 0) + int(v)
    rows = [r for s in summaries for r in s.coverage]
    bands = []
    if rows:
        frame = pd.DataFrame(rows).groupby("band", sort=False).sum(numeric_only=True)
        order = sorted(frame.index, key=lambda b: int(str(b).split("-")[0].rstrip("+")))
        for band in order:
            r = frame.loc[band]
            labels = [level_label(lv) for lv in levels]
            n = {lb: int(r.get(f"n_{lb}", 0)) for lb in labels}
            bands.append(BandCoverage(
                band=str(band), series_windows=int(r["series_windows"]), points=int(r["points"]),
                coverage={lb: (round(float(r[f"hits_{lb}"]) / n[lb], 4) if n[lb] else None) for lb in labels},
                scored_points=n))
    return Serving(rule=SERVING_RULE, candidates=candidates, series_by_model=dict(sorted(by_model.items())),
                   statistical_seconds=round(sum(s.statistical_seconds for s in summaries), 3),
                   coverage_by_history=bands)


SERVING_RULE = ("per series, the equal-weight mean of the candidates whose backtest error (mean |y - f| over the "
                "naive-error scale), shrunk toward the pool of series of the same history band, is within 10% of "
                "the best; chosen on backtest windows only; AutoETS and AutoTheta are fitted to series shorter "
                "than 8 horizons and to those the network cannot serve; series of 1-2 points get the naive ones")


def overall_metrics(summaries: Sequence[ShardSummary], lstm_versions: Collection[str]) -> pd.DataFrame:
    """Rows of the metrics table over all series (series_id null) pooled over all shards, as unsharded:
    per backtest window (`backtest_window`, `cutoff` its latest cutoff) and over all windows (both null).
    `lstm_versions`: the LSTM model versions the shards used (their rows get `model` `lstm`)."""
    pooled = [s.totals.pooled for s in summaries]
    windows = [s.totals.window for s in summaries]
    overall = pooled[0].merge(*pooled[1:]).finalize()
    per_window = windows[0].merge(*windows[1:]).finalize()
    cutoffs: dict[int, Any] = {}
    for s in summaries:
        for w, c in s.totals.window_cutoffs.items():
            cutoffs[w] = c if w not in cutoffs or pd.isna(cutoffs[w]) or c > cutoffs[w] else cutoffs[w]
    cutoff_values = [cutoffs.get(int(w)) for w in per_window["window"]] if len(per_window) else []
    tz = next((getattr(pd.Timestamp(c), "tz", None) for c in cutoffs.values() if c is not None), None)
    dtype = pd.DatetimeTZDtype("ns", tz) if tz is not None else "datetime64[ns]"
    frame = pd.concat([
        pd.DataFrame({"series_id": None, "metric": per_window["metric"], "value": per_window["value"],
                      "model": per_window["model"], "cutoff": pd.Series(cutoff_values, dtype=dtype),
                      "window": per_window["window"].astype("Int64")}),
        pd.DataFrame({"series_id": None, "metric": overall["metric"], "value": overall["value"],
                      "model": overall["model"], "cutoff": pd.Series([pd.NaT] * len(overall), dtype=dtype),
                      "window": pd.Series([pd.NA] * len(overall), dtype="Int64")}),
    ], ignore_index=True)
    frame = frame[frame["value"].notna() | frame["metric"].isin(("mae", "rmse", "smape", "mase"))]
    frame = frame.astype({"series_id": "string", "metric": "string", "value": "float64", "model": "string"})
    return metrics_table(frame.reset_index(drop=True), lstm_versions)


def realised_overall_rows(summaries: Sequence[ShardSummary]) -> pd.DataFrame | None:
    """The overall rows of the realised table pooled over shards; None when no shard scored any."""
    parts = [s.realised for s in summaries if s.realised is not None]
    if not parts:
        return None
    totals = parts[0].totals.merge(*(p.totals for p in parts[1:]))
    return realised_overall(totals, pd.concat([p.points for p in parts], ignore_index=True))
