"""What people see of a run: plots written beside its outputs, and Prefect artifacts in the UI."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from lstm_core import plots
from lstm_core.backtest import history_frame
from lstm_core.config import ForecastConfig
from lstm_core.frequency import dates_after
from lstm_core.layout import TABLES, OutputLayout
from lstm_core.metrics import METRICS
from tasks.data import Prepared
from tasks.modelling import Forecasts, ModelChoice, Scored

METRICS_KEY = "batch-forecast-metrics"
SUMMARY_KEY = "batch-forecast-summary"
FAILURE_KEY = "batch-forecast-failure"
TIMINGS_KEY = "batch-forecast-timings"
PLOT_TITLES = {
    "loss.png": "training and validation loss by epoch",
    "holdout.png": "forecast vs actual on the holdout: best, median and worst series by MASE",
    "error_distribution.png": "per-series MASE, LSTM against seasonal naive",
    "forecast_intervals.png": "published forecast with its prediction intervals: best, median and worst series "
                              "by backtest MASE",
    "backtest.png": "backtest windows against the actuals: best, median and worst series by backtest MASE",
    "nightly.png": "forecast health night by night: realised MASE and the size of each night's revisions",
}
MAX_SKIPPED_LISTED = 50


@dataclass
class RunPlots:
    """A run's plots drawn in memory (file name -> PNG bytes), and a note for each left out or worth reading."""

    files: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    notes: dict[str, str] = field(default_factory=dict)  # file name -> why it is missing or how to read it


def _series_mase(evaluation: Scored, model: str, window: int | None = None) -> np.ndarray:
    """Per-series MASE of `model` (its label in the metrics table: `lstm`, `seasonal_naive`): over all
    backtest windows (None) or in one window."""
    m = evaluation.metrics
    rows = m[(m["model"] == model) & (m["metric"] == "mase") & m["series_id"].notna()]
    rows = rows[rows["backtest_window"].isna()] if window is None else rows[rows["backtest_window"] == window]
    by_id = dict(zip(rows["series_id"].astype(str), rows["value"].astype(float), strict=True))
    return np.array([by_id.get(str(s), np.nan) for s in evaluation.series_ids], dtype=float)


def _loss_plot(choice: ModelChoice, config: ForecastConfig, out: RunPlots) -> None:
    training = choice.forecaster.training or {}
    members = training.get("members") or []
    histories = [m.get("history") or {} for m in members]
    if not any(h.get("loss") for h in histories):
        reason = ("mode 'per_series' trains one small model per series; their curves are not drawn"
                  if config.mode == "per_series" else "the model carries no training history")
        out.notes["loss.png"] = f"no loss plot: {reason}"
        return
    decision = choice.decision
    if decision.action == "load" or (decision.action == "warm" and not decision.promoted):  # the champion serves
        created = (choice.decision.loaded.metadata.get("created_at", "?") if choice.decision.loaded else "?")
        title = f"model {choice.version} (loaded, not trained in this run)"
        note = f"curves from the training that made this model ({created[:19]})"
        out.notes["loss.png"] = f"the model was loaded, so the curves are those of its training on {created[:19]}"
    else:
        stopped = ", ".join(str(m.get("stopped_by")) for m in members)
        title = f"model {choice.version} trained in this run" + (
            f" (warm start from {decision.parent_version})" if decision.action == "warm" else "")
        note = f"stopped by: {stopped}" + ("; the final model was then refit on all data" if config.refit else "")
    out.files["loss.png"] = plots.loss_curves(histories, title=title, loss_name=config.training.loss,
                                              best_epochs=[int(m.get("best_epoch", 0)) for m in members], note=note)


def _resolved(config: ForecastConfig) -> tuple[str, int, int]:
    """(freq, window, season_length) of the run's configuration; ValueError (the plot is left out with the
    reason) if it was not resolved, which a run always does before it trains."""
    freq, window, season_length = config.freq, config.window, config.season_length
    if freq is None or window is None or season_length is None:
        raise ValueError("the configuration is not resolved (freq, window or season_length unset)")
    return freq, window, season_length


def _holdout_plot(choice: ModelChoice, scored: Scored, prepared: Prepared, config: ForecastConfig,
                  out: RunPlots) -> None:
    freq, window, season_length = _resolved(config)
    last = config.backtest.windows - 1  # the last backtest window is the holdout
    lstm_mase = _series_mase(scored, "lstm", last)
    naive_mase = _series_mase(scored, "seasonal_naive", last)
    evaluation = scored.holdout
    picks = plots.pick_examples(lstm_mase)
    h = config.horizon
    history = prepared.panel.drop_upto(h)  # a series of H points or fewer keeps its first
    holdout_ds = dates_after(history.last_ds, freq, h)
    context = max(window, 2 * season_length, 2 * h)
    examples = []
    for label, i in picks.items():
        start, end = history.offsets[i], history.offsets[i + 1]
        k = int(min(context, end - start))
        ds = pd.date_range(end=pd.Timestamp(history.last_ds[i]), periods=k, freq=freq)
        examples.append(plots.SeriesExample(
            label=label, series_id=str(history.series_ids[i]), history_ds=ds.to_numpy(),
            history_y=history.values[end - k:end, 0], holdout_ds=pd.DatetimeIndex(holdout_ds[i]).to_numpy(),
            actual=evaluation.actual[i],
            forecasts={"LSTM": evaluation.forecasts[choice.version][i],
                       "seasonal naive": evaluation.forecasts["seasonal_naive"][i]},
            mase={"LSTM": float(lstm_mase[i]), "naive": float(naive_mase[i])},
        ))
    if not examples:
        out.notes["holdout.png"] = "no holdout plot: no series has a finite MASE"
        return
    out.files["holdout.png"] = plots.holdout_examples(examples)
    out.files["error_distribution.png"] = plots.error_distribution(lstm_mase, naive_mase)


def _interval_plots(choice: ModelChoice, scored: Scored, forecasts: Forecasts, prepared: Prepared,
                    config: ForecastConfig, out: RunPlots) -> None:
    """The published forecast with its intervals after the last weeks of history, and the backtest
    windows against the actuals, for the best, median and worst series by pooled backtest MASE."""
    mase = pd.Series(_series_mase(scored, "lstm"), index=[str(s) for s in scored.series_ids], dtype=float)
    mase = mase[np.isfinite(mase.to_numpy())]
    if mase.empty:
        out.notes["forecast_intervals.png"] = "no interval plots: no series has a finite backtest MASE"
        return
    history = history_frame(prepared.panel)
    history = history.assign(series_id=history["series_id"].astype(str))
    predictions = forecasts.future.assign(series_id=forecasts.future["series_id"].astype(str))
    context = max(2 * _resolved(config)[2], 3 * config.horizon)
    out.files["forecast_intervals.png"] = plots.forecast_intervals(
        plots.interval_examples(history, predictions, mase, history_points=context))
    frame = forecasts.backtest.frame
    out.files["backtest.png"] = plots.backtest_windows(
        plots.backtest_examples(frame.assign(series_id=frame["series_id"].astype(str)), history, mase,
                                history_points=config.horizon))


@task(name="render_plots", cache_policy=NO_CACHE)
def render_plots(choice: ModelChoice, evaluation: Scored, prepared: Prepared, config: ForecastConfig,
                 forecasts: Forecasts | None = None) -> RunPlots:
    """Draw the run's plots in memory; `commit_run` stores them with the run, before the manifest.

    A plot that cannot be drawn is left out with the reason; it never fails the run.
    """
    logger = get_run_logger()
    out = RunPlots()
    draws = [("loss.png", lambda: _loss_plot(choice, config, out)),
             ("holdout.png", lambda: _holdout_plot(choice, evaluation, prepared, config, out))]
    if forecasts is not None:
        draws.append(("forecast_intervals.png",
                      lambda: _interval_plots(choice, evaluation, forecasts, prepared, config, out)))
    for name, draw in draws:
        try:
            draw()
        except Exception as exc:  # noqa: BLE001 - plots are a view of the run, not part of its result
            out.notes[name] = f"could not draw {name}: {type(exc).__name__}: {exc}"
            logger.warning(out.notes[name])
    logger.info("drew %d plots: %s", len(out.files), ", ".join(out.files) or "none")
    return out


def _columns(overall: dict[str, dict[str, float]]) -> list[str]:
    """The point metrics, then each interval metric some model has (coverage_80, msis_80, ...)."""
    extra = sorted({k for values in overall.values() for k in values if k not in METRICS},
                   key=lambda k: (float(k.split("_", 1)[1]), k))
    return [*METRICS, *extra]


def metrics_table(overall: dict[str, dict[str, float]],
                  model_version: str | None) -> list[dict[str, str | float | None]]:
    """One row per model: its overall backtest metrics (mean over series and windows), with the
    interval coverage and MSIS of the model that has intervals (None for the others).

    Each row: `model` and `version` (text), then each metric column (a float, or None)."""
    rows: list[dict[str, str | float | None]] = []
    columns = _columns(overall)
    for model, values in sorted(overall.items(), key=lambda kv: kv[0] != model_version):
        rows.append({"model": "lstm" if model == model_version else model, "version": model,
                     **{m: values.get(m) for m in columns}})
    return rows


# What lets text become a link, an image, an autolink, HTML, a table cell, emphasis or code (`(` alone cannot).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]!|<>~:&])")


def md_text(value: Any) -> str:
    """Untrusted text (series ids, reasons, column names: they come from the input) as literal Markdown text:
    on one line, every character Markdown or HTML would act on backslash-escaped, so no link, image, table
    cell or tag can be made from it."""
    one_line = _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    # a block marker where the text starts a line (a list item, heading, numbered item) stays literal too
    return re.sub(r"^(\d+)([.)])", r"\1\\\2", re.sub(r"^([-+#=])", r"\\\1", one_line))


def md_code(value: Any, cell: bool = False) -> str:
    """Untrusted text as an inline code span: fenced by more backticks than any run inside it (CommonMark),
    on one line, so nothing in it is interpreted and it cannot close the span early. `cell`: inside a table
    row, where a `|` would end the cell even within the span (GFM), so it is escaped."""
    text = " ".join(str(value).split())
    if cell:
        text = text.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _figure(value: str | float | None) -> str:
    """A metric in a table cell: 4 significant digits, `n/a` when there is none or it is not finite."""
    return f"{value:.4g}" if isinstance(value, (int, float)) and np.isfinite(value) else "n/a"


def night_lines(manifest: dict[str, Any]) -> list[str]:
    """The summary's night-after-night section: as_of, the slots caught up on, the revisions' p50 and p95."""
    schedule, revisions = manifest.get("schedule") or {}, manifest.get("revisions") or {}
    lines = ["## Night after night"]
    if manifest.get("as_of"):
        lines.append(f"- as of {md_code(manifest['as_of'])}: only rows up to it were read")
    skipped = schedule.get("skipped_slots") or []
    lines.append(f"- caught up on {schedule.get('skipped_count', len(skipped))} missed slot(s): "
                 + ", ".join(md_code(s) for s in skipped) if skipped else "- no missed slot since the previous run")
    if revisions.get("p50") is not None:
        lines.append(f"- revisions against run {md_code(revisions.get('previous_run_id'))} "
                     f"({revisions.get('rows')} points): |revision| median {revisions['p50']:.4g}, 95th percentile "
                     f"{revisions['p95']:.4g} (in units of each series' seasonal naive MAE)")
    else:
        lines.append("- no revisions: no earlier committed run forecast the same dates")
    return [*lines, ""]


def summary_markdown(manifest: dict[str, Any], plot_notes: dict[str, str] | None = None) -> str:
    """The run in a page: decision and reason, counts, skipped series, where the outputs and plots are."""
    counts = manifest.get("counts", {})
    retrain = manifest.get("retrain", {})
    outputs = manifest.get("outputs", {})
    plot_names = set(outputs.get("plots", {}))
    plot_notes = plot_notes or {}
    lines = [
        f"# Run {md_code(manifest['run_id'])}: {md_text(manifest.get('status'))}",
        "",
        f"Input {md_code(manifest.get('input_url'))} "
        f"(fingerprint {md_code(str(manifest.get('input_fingerprint'))[:16])}), "
        f"output {md_code(manifest.get('output_url'))}.",
        "",
        "## Model",
        f"- version {md_code(manifest.get('model_version'))} (key {md_code(manifest.get('model_key'))})",
        f"- decision: **{md_text(retrain.get('action'))}**: {md_text(retrain.get('reason'))}",
        "",
        "## Counts",
        "| what | count |",
        "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v} |" for k, v in counts.items()],
        "",
    ]
    overall = manifest.get("overall_metrics", {})
    if overall:
        columns = _columns(overall)
        windows = (manifest.get("backtest") or {}).get("windows", 1)
        lines += [f"## Backtest metrics (mean over series and {windows} window(s))",
                  "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for row in metrics_table(overall, manifest.get("model_version")):
            vals = " | ".join(_figure(row[m]) for m in columns)
            lines.append(f"| {row['model']} | {vals} |")
        lines.append("")
    lines += night_lines(manifest)
    skipped = manifest.get("skipped", [])
    lines.append(f"## Skipped series ({len(skipped)})")
    if skipped:
        lines += ["| series | field | reason |", "|---|---|---|"]
        for s in skipped[:MAX_SKIPPED_LISTED]:
            lines.append(f"| {md_code(s.get('series_id'), cell=True)} | {md_text(s.get('field'))} "
                         f"| {md_text(s.get('reason', ''))} |")
        if len(skipped) > MAX_SKIPPED_LISTED:
            lines.append(f"\n... and {len(skipped) - MAX_SKIPPED_LISTED} more: all are in the quarantine table.")
    else:
        lines.append("None: every series passed validation.")
    layout = OutputLayout(str(manifest.get("output_url", "")))
    run_id = manifest["run_id"]
    lines += ["", "## Outputs"]
    lines += [f"- {table}: {md_code(layout.partition(table, run_id) + '/')}" for table in TABLES if table in outputs]
    lines += [f"- manifest (the commit marker): {md_code(layout.manifest(run_id))}", "", "## Plots"]
    for name, title in PLOT_TITLES.items():
        if name in plot_names:
            url = layout.run_file(run_id, f"plots/{name}")
            # the output URL and run id are the operator's (settings, validated), not the input's
            lines.append(f"- [{title}]({url}): {md_code(url)}")
        if name in plot_notes:
            lines.append(f"- {md_text(plot_notes[name])}")
    return "\n".join(lines) + "\n"


def timings_table(timings: dict[str, float]) -> list[dict[str, str | float | None]]:
    """The manifest's `timings_s` as rows `step, seconds, share`, in the manifest's order: each task's
    seconds (summed over its runs: every shard, every group), then the flow's own wall times (`wall_*`).

    `share` is the step's seconds over the run's wall time (`wall_total`); tasks that ran in parallel on
    Dask workers add up, so their shares may sum past 1. None when the run's wall time is missing or zero.
    """
    total = timings.get("wall_total")
    rows: list[dict[str, str | float | None]] = []
    for step, seconds in timings.items():
        seconds = float(seconds)
        share = round(seconds / total, 4) if total else None
        rows.append({"step": step, "seconds": round(seconds, 3), "share": share})
    return rows


@task(name="publish_artifacts", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def publish_artifacts(manifest: dict[str, Any], plot_notes: dict[str, str]) -> dict[str, str]:
    """Table artifacts with the overall metrics of both models and the per-step timings, and a markdown
    summary of the run."""
    logger = get_run_logger()
    run_id = manifest["run_id"]
    table = metrics_table(manifest.get("overall_metrics", {}), manifest.get("model_version"))
    table_id = create_table_artifact(table, key=METRICS_KEY,
                                     description=f"Pooled backtest metrics of run {run_id}: LSTM (with interval "
                                                 "coverage and MSIS) and seasonal naive")
    timings_id = create_table_artifact(timings_table(manifest.get("timings_s") or {}), key=TIMINGS_KEY,
                                       description=f"Seconds per step of run {run_id} and their share of its wall "
                                                   "time (tasks summed over shards; on Dask they overlap)")
    md_id = create_markdown_artifact(summary_markdown(manifest, plot_notes), key=SUMMARY_KEY,
                                     description=f"Run {run_id}: decision, counts, skipped series, outputs, plots")
    logger.info("published artifacts %s, %s and %s for run %s", METRICS_KEY, TIMINGS_KEY, SUMMARY_KEY, run_id)
    return {"metrics": str(table_id), "timings": str(timings_id), "summary": str(md_id)}


def failure_markdown(flow_run_name: str, message: str | None) -> str:
    """What a person opening a failed run in the UI reads first: the reason, and where the record is."""
    reason = md_text((message or "no reason recorded").strip())
    return (f"# Run failed: {md_text(flow_run_name)}\n\n**Reason:** {reason}\n\n"
            "The run's manifest (`runs/<run_id>/manifest.json` under the output URL) says `status: failed` with "
            "the same reason, and the skipped series when none was valid; earlier committed runs are untouched.\n")


def publish_failure(flow, flow_run, state) -> None:
    """Flow `on_failure` hook: the failure's reason as a markdown artifact of the failed flow run.

    The state's message is the flow's own exception line, already scrubbed of credentials by the flow.
    """
    create_markdown_artifact(failure_markdown(flow_run.name, state.message), key=FAILURE_KEY,
                             description=f"Why flow run {flow_run.name} failed")
