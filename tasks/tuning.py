"""Tasks of the tune flow: run the study (lstm_core.tuning) and show it in the Prefect UI."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from lstm_core.config import ForecastConfig
from lstm_core.panel import Panel
from lstm_core.secrets import scrubbing
from lstm_core.tuning.records import Scalar, TuneSummary
from lstm_core.tuning.results import summarize
from lstm_core.tuning.study import tune

if TYPE_CHECKING:
    from distributed import Client
    from optuna.trial import FrozenTrial

TRIALS_SHOWN = 500  # rows of the trials table artifact (all of them are in trials.parquet)


def artifact_key(study: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes: `tuning-<study>`."""
    return "tuning-" + re.sub(r"[^a-z0-9-]+", "-", study.lower()).strip("-")


# Not retried: a trial's training is not repeated for a storage hiccup (each result write retries below it).
@task(name="run_study", cache_policy=NO_CACHE)
def run_study(panel: Panel, config: ForecastConfig,
              client: Client | None = None) -> tuple[TuneSummary, pd.DataFrame]:
    """Run or resume the study within the configured budget; its results are written after every trial.

    The trials run in this process, or one per worker on the Dask cluster of `client`. Returns the summary
    (study, trials, new trial numbers, states, best trial and its settings, URLs, why it stopped) and the
    trials table (the first `TRIALS_SHOWN` rows of trials.parquet)."""
    with scrubbing():  # the task run's state message quotes its exception: never a credential in it
        return _run_study(panel, config, client)


def _run_study(panel: Panel, config: ForecastConfig,
               client: Client | None = None) -> tuple[TuneSummary, pd.DataFrame]:
    logger = get_run_logger()

    def on_trial(t: FrozenTrial) -> None:
        value = f"backtest MASE {t.value:.4f}" if t.value is not None and t.state.name == "COMPLETE" else ""
        logger.info("trial %d %s %s in %.0f s: %s", t.number, t.state.name.lower(), value,
                    t.user_attrs.get("seconds", math.nan), t.params)

    result = tune(panel, config, client=client, on_trial=on_trial)
    frame = result.trials
    summary = summarize(result, config, frame)
    best = summary.best
    logger.info("study %r: %d trials (%d new), stopped by the %s budget; best: %s", summary.study, summary.trials,
                len(summary.new_trials), summary.stopped_by,
                f"trial {best.trial}, backtest MASE {best.objective:.4f}" if best else "none completed")
    return summary, frame.head(TRIALS_SHOWN)


@task(name="publish_tuning", cache_policy=NO_CACHE)
def publish_tuning(summary: TuneSummary, frame: pd.DataFrame) -> dict[str, str]:
    """The trials (`frame`, rows of trials.parquet) as a table artifact and a summary page (best settings, where
    the files and the plot are). Returns the artifacts' ids (`table`, `summary`)."""
    rows: list[dict[str, Scalar]] = []
    for rec in frame.to_dict(orient="records"):
        rows.append({str(k): (None if _missing(v) else (round(v, 6) if isinstance(v, float) else str(v)
                                                    if not isinstance(v, (int, float, bool)) else v))
                     for k, v in rec.items()})
    key = artifact_key(summary.study)
    table_id = create_table_artifact(rows, key=key, description=f"Trials of tuning study {summary.study!r}: "
                                     "objective = pooled backtest MASE (lower is better)")
    best = summary.best
    urls = summary.urls
    lines = [f"# Tuning study `{summary.study}`", "",
             (f"{summary.trials} trials ({', '.join(f'{n} {s}' for s, n in summary.states.items())}); this run "
              f"added {len(summary.new_trials)} and stopped at its {summary.stopped_by} budget."), ""]
    if best:
        lines += [f"**Best**: trial {best.trial}, pooled backtest MASE {best.objective:.4f}", "",
                  "| setting | value |", "|---|---|",
                  *(f"| `{k}` | `{v}` |" for k, v in sorted(best.params.items())), "",
                  (f"Use it: `lstm-forecast run --config {urls.get('best_yaml')}`, or `tuned: latest` with "
                   f"`tuning.study: {summary.study}`.")]
    lines += ["", f"Objective over trials: `{urls.get('plot')}`", f"All trials: `{urls.get('trials')}`"]
    md_id = create_markdown_artifact("\n".join(lines), key=f"{key}-summary",
                                     description=f"Tuning study {summary.study!r}")
    return {"table": str(table_id), "summary": str(md_id)}


def _missing(v: object) -> bool:
    try:
        return v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("<NA>", "NaT")
    except (TypeError, ValueError):
        return False
