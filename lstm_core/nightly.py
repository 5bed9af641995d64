"""Night after night: where a run stands among the committed runs (its slot, the slots it catches up on, the
run its forecast is compared with) and the plot of the forecast's health night by night.

The flow calls `plan_night` once, before it takes the run's lease: a superseded run stops there, having
written nothing (lstm_core.catchup). The plan then gives the manifest's `schedule` and the run that
`revisions/` compares with (lstm_core.revisions); `health_plot` draws realised accuracy and revision size.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import JsonValue

from lstm_core.as_of import as_utc
from lstm_core.catchup import CatchUp, CommittedRun, committed_history, decide
from lstm_core.layout import OutputLayout
from lstm_core.location import Location
from lstm_core.records import RevisionsEntry, ScheduleEntry
from lstm_core.revisions import RevisionRows, previous_run, revision_stats

__all__ = ["NightPlan", "health_plot", "plan_night", "realised_by_night", "revisions_entry"]

PLOT_NIGHTS = 60  # nights shown in nightly.png (the newest)


@dataclass(frozen=True)
class NightPlan:
    """A run's place among the committed runs."""

    catch_up: CatchUp
    moment: datetime  # as_of, else the slot, else the start (UTC)
    previous_run_id: str | None  # the committed run revisions compare with
    history: tuple[CommittedRun, ...]

    @property
    def superseded(self) -> bool:
        """The catch-up decision says a newer slot does this run's work."""
        return self.catch_up.superseded

    def superseded_reason(self) -> str:
        """One line for the log, the CLI and the flow's result."""
        c = self.catch_up
        return (f"its slot {c.slot.isoformat()} is a whole schedule_interval ({c.interval}) late: the newer slot "
                f"{c.superseded_by.isoformat()} is due, and its run forecasts the newest data and lists this slot "
                f"as skipped" if c.slot and c.superseded_by else "superseded")

    def superseded_result(self, run_id: str) -> dict[str, JsonValue]:
        """What the flow returns for a superseded run (it writes nothing)."""
        c = self.catch_up
        return {"run_id": run_id, "status": "superseded", "reason": self.superseded_reason(),
                "scheduled_start": c.slot.isoformat() if c.slot else None,
                "superseded_by": c.superseded_by.isoformat() if c.superseded_by else None}

    def schedule_entry(self) -> ScheduleEntry:
        """The manifest's `schedule`."""
        c = self.catch_up
        return ScheduleEntry(slot=c.slot, interval=c.interval, previous_slot=c.previous_slot,
                             previous_run_id=c.previous_run_id, skipped_slots=list(c.skipped_slots),
                             skipped_count=c.skipped_count)


def plan_night(output: Location, run_id: str, *, as_of: datetime | None, slot: datetime | None,
               interval, rerun: bool, now: datetime | None = None) -> NightPlan:
    """The catch-up decision and the previous run of run `run_id` (see lstm_core.catchup, lstm_core.revisions).

    `slot`: the scheduled start Prefect gave the run (None for a manual run); `rerun`: `run_id` already
    committed once. The run's clock is `as_of` when set (a replay), else `now`.
    """
    now = as_utc(now or datetime.now(UTC))
    history = tuple(committed_history(output, exclude=run_id))
    own_slot = slot if slot is not None else as_of
    clock = as_utc(as_of) if as_of is not None else now
    catch_up = decide(own_slot, clock, interval, history, scheduled=slot is not None, rerun=rerun)
    moment = as_utc(as_of) if as_of is not None else as_utc(slot) if slot is not None else now
    return NightPlan(catch_up, moment, previous_run(history, moment), history)


def revisions_entry(previous_run_id: str | None, parts: Sequence[RevisionRows]) -> RevisionsEntry:
    """The manifest's `revisions` from the shards' parts (none: no previous run, or nothing to compare)."""
    return RevisionsEntry.model_validate({"previous_run_id": previous_run_id, **revision_stats(list(parts))})


def night_outputs(night: NightPlan, store: Any, run_id: str, parts: Sequence[RevisionRows], single: bool,
                  logger: Any) -> tuple[RevisionsEntry, str | None, dict[str, bytes]]:
    """At commit: the manifest's `revisions`, its `outputs.revisions` (the part file of a run of one shard, else
    the partition; None when no shard compared) and `{"nightly.png": png}` (empty when there is no earlier night,
    or the plot failed for a reason other than storage: a view of the past never fails tonight's run).
    `store`: the run's lstm_core.outputs.OutputStore."""
    from lstm_core.location import is_storage_failure

    entry = revisions_entry(night.previous_run_id, parts)
    path = None if not parts else parts[0].path if single else store.partitions(run_id, ("revisions",))["revisions"]
    try:
        png = health_plot(store.location, night.history, run_id, night.moment, entry)
    except Exception as exc:
        if is_storage_failure(exc):
            raise
        logger.error("nightly health plot skipped: %s: %s", type(exc).__name__, exc)
        return entry, path, {}
    return entry, path, ({"nightly.png": png} if png is not None else {})


def realised_by_night(output: Location, runs: Sequence[CommittedRun]) -> dict[str, float]:
    """forecast_run_id -> the served forecast's realised MASE over all its series, as the newest scoring run
    measured it (the `realised/` overall rows; the points scored grow as actuals arrive)."""
    fs, layout = output.fs, OutputLayout(output.path)
    best: dict[str, tuple[int, float]] = {}
    for run in runs:
        partition = layout.partition("realised", run.run_id)
        try:
            parts = [p for p in fs.ls(partition, detail=False) if p.endswith(".parquet")]
        except FileNotFoundError:
            continue
        for path in parts:
            try:
                with fs.open(path, "rb") as fh:
                    rows = pd.read_parquet(fh, columns=["series_id", "metric", "value", "model",
                                                        "forecast_run_id", "points"])
            except Exception:  # noqa: BLE001 - a damaged earlier file leaves a gap in the plot, nothing more
                continue
            # the forecast's own rows (labelled `lstm`), not seasonal naive's beside them
            rows = rows[rows["series_id"].isna() & (rows["metric"] == "mase") & (rows["model"] != "seasonal_naive")]
            for key, g in rows.groupby("forecast_run_id"):
                rid, points, value = str(key), int(g["points"].sum()), float(g["value"].mean())
                if rid not in best or points >= best[rid][0]:
                    best[rid] = (points, value)
    return {rid: v for rid, (_, v) in best.items()}


def health_plot(output: Location, history: Sequence[CommittedRun], run_id: str, moment: datetime,
                revisions: RevisionsEntry | None) -> bytes | None:
    """`nightly.png`: per night (committed run, by its moment, this run last), the served forecast's realised
    MASE (from `realised/`, as later runs scored it) and the median and 95th percentile of |revision| (from
    each manifest's `revisions`). None when there is no earlier night to show."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nights = [r for r in history if r.moment <= moment][-(PLOT_NIGHTS - 1):]
    if not nights:
        return None
    labels = [r.run_id for r in nights] + [run_id]
    when = [r.moment for r in nights] + [moment]
    p50 = [((r.manifest.get("revisions") or {}).get("p50")) for r in nights] + [revisions.p50 if revisions else None]
    p95 = [((r.manifest.get("revisions") or {}).get("p95")) for r in nights] + [revisions.p95 if revisions else None]
    realised = realised_by_night(output, [*history, CommittedRun(run_id, None, moment)])
    mase = [realised.get(rid) for rid in labels]
    x = np.arange(len(labels))
    fig = Figure(figsize=(8.0, 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    values = np.array([np.nan if v is None else v for v in mase], dtype=float)
    top.plot(x, values, marker="o", color="#1f77b4", label="realised MASE of the night's forecast")
    top.axhline(1.0, color="grey", ls=":", lw=1)
    top.set_ylabel("realised MASE")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    for series, style, name in ((p50, "-o", "median |revision|"), (p95, "--s", "95th percentile |revision|")):
        bottom.plot(x, np.array([np.nan if v is None else v for v in series], dtype=float), style, ms=4,
                    color="#ff7f0e", label=name)
    bottom.set_ylabel("|revision| (naive MAE)")
    bottom.legend(fontsize=8, loc="upper left")
    bottom.grid(alpha=0.3)
    bottom.set_xticks(x, [pd.Timestamp(w).strftime("%Y-%m-%d %H:%M") for w in when], rotation=45, ha="right",
                      fontsize=7)
    fig.suptitle("Forecast health night by night: realised accuracy and revision size", fontsize=10)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
