"""Catch-up after missed nights: one run for the newest data, not one per missed slot.

Prefect 3 has no catch-up switch (Airflow's `catchup=False`): its scheduler creates the runs of the coming
slots ahead of time, a run not started on time is marked Late, and a worker that comes back after an outage
starts every Late run, oldest first (the deployment's `concurrency_limit` of 1 with ENQUEUE only keeps them
from overlapping). So the flow decides, from its slot and the committed runs:

- A *slot* is when a run is due: the scheduled start Prefect gives an auto-scheduled run, else `as_of`
  (a replay or a manual backfill of one night), else none (a manual run of the newest data).
- A scheduled run that starts a whole `schedule_interval` (or more) after its slot, when a newer slot is
  due, is *superseded*: the newer slot's run (queued behind it) does the work on the newest data. It
  writes nothing and exits 0. A re-run of a slot that already committed is never superseded (a re-run
  replaces its own outputs), nor is a run with `as_of` (its clock is `as_of` itself).
- The run that does run lists the slots missed since the previous committed run's slot
  (`previous + k * schedule_interval`, before its own slot) in the manifest's `schedule.skipped_slots`.

`schedule_interval` must match the deployment's schedule (`infra/prefect.yaml`: cron `0 2 * * *`, 1 day).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lstm_core.as_of import as_utc
from lstm_core.atomic import read_json
from lstm_core.layout import OutputLayout
from lstm_core.location import Location, is_local

__all__ = ["MAX_LISTED", "CatchUp", "CommittedRun", "committed_history", "committed_manifests", "decide", "run_moment"]

MAX_LISTED = 1_000  # skipped slots listed in the manifest at most (`skipped_count` counts them all)


@dataclass(frozen=True)
class CommittedRun:
    """A committed run's place in time, as its manifest records it (all UTC, aware)."""

    run_id: str
    slot: datetime | None  # its scheduled slot, else its as_of; None for a manual run of the newest data
    moment: datetime  # as_of, else the slot, else when it started: the order of runs night after night
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(str(value)))  # Python 3.11 reads a trailing Z
    except ValueError:
        return None


def run_moment(manifest: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """(slot, moment) of a run from its manifest (see `CommittedRun`); (None, None) when it names no time."""
    as_of = _instant(manifest.get("as_of") or (manifest.get("config") or {}).get("as_of"))
    scheduled = _instant(manifest.get("scheduled_start"))
    slot = scheduled or as_of
    return slot, as_of or slot or _instant(manifest.get("started_at"))


def committed_manifests(output: Location) -> list[tuple[str, dict[str, object]]]:
    """(run id, manifest) of every committed run under `output` (manifest status `succeeded`), in listing order.

    A manifest that is absent, not a JSON object, or (locally) a link is no committed run: a run replaces a
    planted link, never reads through it. The one reader of committed runs (`outputs.committed_runs` too)."""
    fs, layout = output.fs, OutputLayout(output.path)
    base = layout.runs()
    fs.invalidate_cache(base)
    try:
        entries = fs.ls(base, detail=False)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        rid = entry.rstrip("/").rsplit("/", 1)[-1]
        if is_local(fs) and os.path.islink(layout.manifest(rid)):
            continue
        try:
            manifest = read_json(fs, layout.manifest(rid))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):  # ValueError: not JSON
            continue
        if isinstance(manifest, dict) and manifest.get("status") == "succeeded":
            found.append((rid, manifest))
    return found


def committed_history(output: Location, exclude: str | None = None) -> list[CommittedRun]:
    """Every committed run under `output` (`committed_manifests`) but `exclude`, oldest moment first."""
    runs = []
    for rid, manifest in committed_manifests(output):
        if rid == exclude:
            continue
        slot, moment = run_moment(manifest)
        if moment is not None:
            runs.append(CommittedRun(rid, slot, moment, manifest))
    return sorted(runs, key=lambda r: (r.moment, r.run_id))


@dataclass(frozen=True)
class CatchUp:
    """What the schedule says of one run: whether it runs, and the slots it catches up on."""

    slot: datetime | None
    interval: timedelta | None
    previous_slot: datetime | None = None
    previous_run_id: str | None = None
    skipped_slots: tuple[datetime, ...] = ()
    skipped_count: int = 0
    superseded_by: datetime | None = None  # the newest due slot, when this run is superseded

    @property
    def superseded(self) -> bool:
        """A newer slot is due: this run writes nothing."""
        return self.superseded_by is not None


def decide(slot: datetime | None, clock: datetime, interval: timedelta | None, history: Sequence[CommittedRun],
           *, scheduled: bool, rerun: bool = False) -> CatchUp:
    """The catch-up decision of a run whose slot is `slot` (None: no slot), at `clock` (now; `as_of` for a
    replay), with the deployment's `interval` (None: no catch-up) and the other committed runs `history`.

    `scheduled`: the scheduler created the run (only such a run can be superseded). `rerun`: this slot's
    run id already committed once (a re-run replaces it; never superseded).
    Superseded when `clock >= slot + interval`: then `superseded_by` is the newest due slot
    `slot + k * interval <= clock`. Skipped slots: `previous + k * interval` (k >= 1) earlier than
    `slot - interval / 2` (half an interval of slack for a slot a little off the grid), where `previous` is
    the newest committed slot before `slot`; at most MAX_LISTED listed, `skipped_count` counts all.
    """
    if slot is None or interval is None:
        return CatchUp(slot, interval)
    slot, clock = as_utc(slot), as_utc(clock)
    if scheduled and not rerun and clock >= slot + interval:
        k = (clock - slot) // interval
        return CatchUp(slot, interval, superseded_by=slot + k * interval)
    earlier = [r for r in history if r.slot is not None and r.slot < slot]
    if not earlier:
        return CatchUp(slot, interval)
    previous = max(earlier, key=lambda r: (r.slot, r.run_id))
    start: datetime = previous.slot  # type: ignore[assignment]  # not None: filtered above
    limit = slot - interval / 2
    count = max(0, -(-(limit - start) // interval) - 1)  # k = 1 .. count give start + k*i < limit
    listed = tuple(start + k * interval for k in range(1, min(count, MAX_LISTED) + 1))
    return CatchUp(slot, interval, start, previous.run_id, listed, count)
