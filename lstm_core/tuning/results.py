"""What a study writes and reports: `trials.parquet` (one row per trial), `best.yaml` (a configuration file of
the best settings), `best.json` (`BestRecord`: what `tuned: latest` applies), `objective.png`, and the tune
summary (`TuneSummary`) of one call.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import yaml

from lstm_core.config import ForecastConfig, merge_settings, redact_url
from lstm_core.tuning.journal import save_journal
from lstm_core.tuning.paths import study_fs, study_url, write_root
from lstm_core.tuning.records import (
    BEST_METRIC,
    BestRecord,
    BestTrial,
    Settings,
    TuneSummary,
)
from lstm_core.tuning.space import LAYERS, Dimension, apply_settings, settings_of

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

TRIAL_COLUMNS = ("study", "number", "state", "objective", "seconds", "started_at", "finished_at", "pruned_epoch",
                 "stopped_by", "seasonal_naive_mase", "error")
# Data settings a best.yaml carries besides the tuned ones, so `run --config best.yaml` forecasts as tuned.
DATA_SETTINGS = ("freq", "horizon", "season_length", "extra_season_lengths", "scaler", "target_transform", "mode",
                 "historic_covariates", "future_covariates", "static_covariates", "calendar_features", "seed")


def trials_frame(trials: Sequence[FrozenTrial], study: str) -> pd.DataFrame:
    """One row per trial: `TRIAL_COLUMNS` then one column per tuned setting (its dotted name).

    objective: the pooled backtest MASE (null for pruned and failed trials); seconds: the trial's wall time;
    pruned_epoch: the epoch a pruned trial stopped at.
    """
    rows = []
    names: list[str] = []
    for t in trials:
        for k in t.params:
            if k not in names:
                names.append(k)
    for t in trials:
        state = t.state.name.lower()
        rows.append({
            "study": study, "number": int(t.number), "state": state,
            "objective": float(t.value) if state == "complete" and t.value is not None else np.nan,
            "seconds": float(t.user_attrs.get("seconds", np.nan)),
            "started_at": t.datetime_start, "finished_at": t.datetime_complete,
            "pruned_epoch": (max(t.intermediate_values) if state == "pruned" and t.intermediate_values else pd.NA),
            "stopped_by": t.user_attrs.get("stopped_by") or t.user_attrs.get("pruned") or None,
            "seasonal_naive_mase": float(t.user_attrs.get("seasonal_naive_mase", np.nan)),
            "error": t.user_attrs.get("error"),
            **{k: t.params.get(k) for k in names},
        })
    frame = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *names])
    frame["study"] = frame["study"].astype("string")
    frame["number"] = frame["number"].astype("int64")
    frame["state"] = frame["state"].astype("string")
    for c in ("objective", "seconds", "seasonal_naive_mase"):
        frame[c] = frame[c].astype("float64")
    frame["pruned_epoch"] = frame["pruned_epoch"].astype("Int64")
    for c in ("stopped_by", "error"):
        frame[c] = frame[c].astype("string")
    for c in ("started_at", "finished_at"):
        frame[c] = pd.to_datetime(frame[c]).astype("datetime64[us]")
    for c in names:  # a setting whose choices mix kinds (numbers and words) is written as text
        kinds = {type(v) for v in frame[c] if v is not None and not (isinstance(v, float) and np.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[c] = frame[c].astype("string")
    return frame


def best_settings(trial: FrozenTrial, config: ForecastConfig) -> Settings:
    """The nested settings a best.yaml holds: the trial's tuned settings, its window and chunk as resolved,
    and the data settings it was tuned for (frequency, horizon, seasons, covariates...)."""
    tuned = settings_of(trial.params, config)
    cfg = apply_settings(config, tuned)
    out: dict[str, Any] = {k: v for k, v in cfg.model_dump(mode="json").items() if k in DATA_SETTINGS}
    out = merge_settings(out, tuned)
    out["window"] = int(cast(int, cfg.window))  # resolved: set
    out = merge_settings(out, {"model": {"chunk": int(cfg.chunk_length)}})
    if cfg.tuning.study != "default":
        out["tuning"] = {"study": cfg.tuning.study}
    return out


def tuned_keys(trial: FrozenTrial) -> list[str]:
    """The dotted settings a best.json names as tuned: the trial's (its layers as `model.units`) and `window`."""
    return sorted({"window", *(k if k != LAYERS else "model.units" for k in trial.params)})


@dataclass
class TuneResult:
    """What a tune call did: the study (all its trials), this call's trial numbers and why it stopped."""

    study: optuna.Study
    new_trials: list[int]
    stopped_by: str  # trials | minutes | no trials left
    seconds: float
    space: dict[str, Dimension]
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def trials(self) -> pd.DataFrame:
        """The study's trials as `trials_frame` writes them."""
        return trials_frame(self.study.get_trials(deepcopy=False), self.study.study_name)

    @property
    def best(self) -> FrozenTrial | None:
        """The best complete trial (lowest objective, then lowest number), or None."""
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        return min(done, key=lambda t: (t.value, t.number)) if done else None


def write_results(result: TuneResult, config: ForecastConfig) -> dict[str, str]:
    """Write trials.parquet, objective.png and, when a trial completed, best.yaml and best.json (written last,
    so a best.json always points at a best.yaml of its own trial). Returns the URLs written by name
    (`journal`, `trials`, `plot`, `best_yaml`, `best_json`), also set on `result.urls`."""
    from lstm_core.atomic import parquet_bytes, put_bytes, write_json
    from lstm_core.location import join

    fs, name = study_fs(config), result.study.study_name
    root = write_root(config)
    base = study_url(config, name)
    frame = result.trials
    urls = {"journal": save_journal(result.study, config)}
    put_bytes(fs, join(base, "trials.parquet"), parquet_bytes(frame), root=root)  # microsecond timestamps
    urls["trials"] = join(base, "trials.parquet")
    put_bytes(fs, join(base, "objective.png"), objective_plot(frame, name), root=root)
    urls["plot"] = join(base, "objective.png")
    best = result.best
    if best is not None and best.value is not None:
        settings = best_settings(best, config)
        header = (f"# best settings of tuning study {name!r}: trial {best.number}, pooled backtest MASE "
                  f"{best.value:.4f}\n# written {datetime.now(UTC).isoformat()}; use it as a tuning result: "
                  "lstm-forecast run --config best.yaml --input ... --output ...\n# (a file named best.yaml gives "
                  "only tuned and data settings: inputs, outputs, storage and Dask come from the run)\n")
        put_bytes(fs, join(base, "best.yaml"), (header + yaml.safe_dump(settings, sort_keys=True)).encode(), root=root)
        urls["best_yaml"] = join(base, "best.yaml")
        record = BestRecord(study=name, trial=int(best.number), objective=float(best.value), metric=BEST_METRIC,
                            settings=settings, tuned=tuned_keys(best), written_at=datetime.now(UTC).isoformat(),
                            trials=len(frame), series=best.user_attrs.get("series"))
        write_json(fs, join(base, "best.json"), record.to_json(), root=root)
        urls["best_json"] = join(base, "best.json")
    result.urls = urls
    return urls


def summarize(result: TuneResult, config: ForecastConfig, frame: pd.DataFrame | None = None) -> TuneSummary:
    """The summary of a tune call (URLs without credentials). `frame`: `result.trials` when already built."""
    frame = result.trials if frame is None else frame
    best = result.best
    return TuneSummary(
        study=config.tuning.study,
        trials=len(frame),
        new_trials=list(result.new_trials),
        states={str(k): int(v) for k, v in frame["state"].value_counts().items()},
        stopped_by=result.stopped_by,
        seconds=round(result.seconds, 1),
        best=None if best is None or best.value is None else BestTrial(
            trial=int(best.number), objective=float(best.value), params=dict(best.params)),
        urls={k: redact_url(v) for k, v in result.urls.items()},
    )


def objective_plot(frame: pd.DataFrame, study: str) -> bytes:
    """PNG: each trial's objective by trial number (pruned and failed trials marked on the axis), and the
    best so far."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    done = frame[frame["state"] == "complete"]
    if len(done):
        ax.plot(done["number"], done["objective"], "o", color="tab:blue", label="complete")
        best = done.sort_values("number")["objective"].cummin()
        ax.step(done.sort_values("number")["number"], best, where="post", color="tab:green", label="best so far")
        floor = float(done["objective"].min())
    else:
        floor = 0.0
    for state, marker, color in (("pruned", "x", "tab:orange"), ("fail", "v", "tab:red")):
        part = frame[frame["state"] == state]
        if len(part):
            ax.plot(part["number"], np.full(len(part), floor), marker, color=color, label=state)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
    ax.set_xlabel("trial")
    ax.set_ylabel("pooled backtest MASE")
    ax.set_title(f"tuning study {study!r}: {len(frame)} trials")
    if len(frame):
        ax.legend(loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
