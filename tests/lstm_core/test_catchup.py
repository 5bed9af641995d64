"""Catch-up after missed slots, as of an instant, and revisions: the plain-library parts (issue 23, points 3-5)."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_core.as_of import as_of_run_id, parse_as_of, read_filters
from lstm_core.catchup import CommittedRun, committed_history, decide
from lstm_core.config import ConfigError, load_config
from lstm_core.errors import DataValidationError
from lstm_core.nightly import plan_night
from lstm_core.revisions import RevisionRows, compute_revisions, revision_stats
from lstm_core.inputs import read_series
from lstm_core.location import Location

DAY = timedelta(days=1)


def night(n: int, hour: int = 2) -> datetime:
    return datetime(2024, 3, 1, hour, tzinfo=UTC) + (n - 1) * DAY


def committed(tmp_path, run_id: str, **fields) -> None:
    folder = tmp_path / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"run_id": run_id, "status": "succeeded",
                                                      "started_at": "2024-03-01T00:00:00+00:00", **fields}))


# --- as_of -------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("2024-03-07T02:00:00Z", datetime(2024, 3, 7, 2, tzinfo=UTC)),
    ("2024-03-07T02:00+01:00", datetime(2024, 3, 7, 1, tzinfo=UTC)),
    ("2024-03-07 02:00", datetime(2024, 3, 7, 2)),
    ("2024-03-07", datetime(2024, 3, 7)),
    (date(2024, 3, 7), datetime(2024, 3, 7)),
])
def test_as_of_reads_iso_timestamps(raw, expected):
    assert load_config(overrides={"as_of": raw}).as_of == expected


@pytest.mark.parametrize("raw", ["yesterday", "07.03.2024", 1709776800, True])
def test_as_of_refuses_anything_else_naming_the_setting(raw):
    with pytest.raises(ConfigError, match="setting 'as_of'"):
        load_config(overrides={"as_of": raw})


def test_as_of_comes_from_yaml_environment_and_set_alike(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("as_of: 2024-03-07T02:00:00Z\nschedule_interval: PT6H\n")
    assert load_config(path).as_of == datetime(2024, 3, 7, 2, tzinfo=UTC)
    assert load_config(path).schedule_interval == timedelta(hours=6)
    env = load_config(environ={"LSTM_FORECAST_AS_OF": "2024-03-08T02:00:00Z"})
    assert env.as_of == datetime(2024, 3, 8, 2, tzinfo=UTC)
    assert load_config(sets=["as_of=2024-03-09"]).as_of == datetime(2024, 3, 9)
    assert load_config(sets=["schedule_interval=null"]).schedule_interval is None


def test_the_as_of_term_is_anded_into_every_filter_group():
    t = datetime(2024, 3, 7)
    assert read_filters(None, None, "ds") is None
    assert read_filters(None, t, "ds") == [["ds", "<=", t.isoformat()]]
    assert read_filters([["r", "==", "eu"]], t, "ds") == [["r", "==", "eu"], ["ds", "<=", t.isoformat()]]
    assert read_filters([[["r", "==", "eu"]], [["r", "==", "us"]]], t, "ds") == \
        [[["r", "==", "eu"], ["ds", "<=", t.isoformat()]], [["r", "==", "us"], ["ds", "<=", t.isoformat()]]]


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_rows_after_as_of_are_never_read(tmp_path, tz):
    """The reader drops them: a row after as_of that would fail validation (a duplicate, NaN) never arrives."""
    ds = pd.date_range("2024-03-01", periods=48, freq="h", tz=tz)
    frame = pd.DataFrame({"series_id": "a", "ds": ds, "y": np.arange(48.0)})
    bad = pd.DataFrame({"series_id": ["a", "a"], "ds": [ds[-1], ds[-1]], "y": [np.nan, 1e12]})
    path = tmp_path / "in.parquet"
    pd.concat([frame, bad]).to_parquet(path, index=False)
    as_of = "2024-03-02T10:00"  # on the data's clock
    out = read_series(Location(str(path)), filters=read_filters(None, parse_as_of(as_of), "ds"))
    limit = pd.Timestamp(as_of, tz=tz)
    assert len(out) == 35 and out["ds"].max() == limit and out["y"].max() == 34


def test_as_of_on_a_text_time_column_is_refused_naming_as_of(tmp_path):
    from lstm_core.as_of import explain_text_time

    path = tmp_path / "in.parquet"
    pd.DataFrame({"series_id": ["a"], "ds": ["2024-03-01"], "y": [1.0]}).to_parquet(path, index=False)
    config = load_config(overrides={"as_of": "2024-03-01"})
    with pytest.raises(DataValidationError) as info:
        read_series(Location(str(path)), filters=read_filters(None, config.as_of, "ds"))
    explained = explain_text_time(info.value, config)
    assert "setting 'as_of'" in str(explained) and "'ds'" in str(explained)


def test_as_of_run_ids_name_the_instant_and_share_the_settings_hash():
    a = as_of_run_id(datetime(2024, 3, 7, 3, tzinfo=timezone(timedelta(hours=1))), {"horizon": 24, "as_of": 1})
    b = as_of_run_id(datetime(2024, 3, 8, 2, tzinfo=UTC), {"horizon": 24, "as_of": 2})
    assert a.startswith("asof-20240307T020000Z-") and b.startswith("asof-20240308T020000Z-")
    assert a.rsplit("-", 1)[1] == b.rsplit("-", 1)[1]
    assert as_of_run_id(datetime(2024, 3, 7), {"horizon": 12}).startswith("asof-20240307T000000-")
    assert as_of_run_id(datetime(2024, 3, 7), {"horizon": 12}) != as_of_run_id(datetime(2024, 3, 7), {"horizon": 24})


# --- catch-up ----------------------------------------------------------------
def test_two_missed_slots_one_run_names_them():
    """Nights 5 and 6 missed: the late runs of slots 5 and 6 are superseded, the run of slot 7 lists them."""
    history = [CommittedRun(f"r{n}", night(n), night(n)) for n in (1, 2, 3, 4)]
    now = night(7) + timedelta(minutes=3)  # the worker is back: Prefect starts the Late runs 5, 6, 7 in order
    outcomes = [decide(night(n), now, DAY, history, scheduled=True) for n in (5, 6, 7)]
    assert [o.superseded for o in outcomes] == [True, True, False]
    assert outcomes[0].superseded_by == outcomes[1].superseded_by == night(7)
    assert outcomes[2].skipped_slots == (night(5), night(6)) and outcomes[2].skipped_count == 2
    assert outcomes[2].previous_slot == night(4) and outcomes[2].previous_run_id == "r4"


def test_a_rerun_a_replay_and_a_backfill_are_never_superseded():
    history = [CommittedRun(f"r{n}", night(n), night(n)) for n in (1, 2, 3, 4, 7)]
    late = night(10)
    assert not decide(night(4), late, DAY, history, scheduled=True, rerun=True).superseded
    # a manual backfill of night 5 (as_of: its clock is as_of): nothing missed between night 4 and night 5
    backfill = decide(night(5), night(5), DAY, history, scheduled=False)
    assert not backfill.superseded and backfill.skipped_slots == () and backfill.previous_run_id == "r4"
    # no slot (a manual run of the newest data) or no interval: nothing to decide
    assert decide(None, late, DAY, history, scheduled=False).skipped_slots == ()
    assert decide(night(9), late, None, history, scheduled=True).superseded is False


@settings(max_examples=200, deadline=None)
@given(previous=st.integers(0, 400), missed=st.integers(0, 30), late=st.integers(0, 47),
       hours=st.sampled_from([1, 6, 24, 168]), jitter=st.integers(-20, 20))
def test_catch_up_lists_exactly_the_missed_slots(previous, missed, late, hours, jitter):
    """Whatever the interval: the run of the newest slot lists exactly the slots between the previous committed
    slot and its own (a slot a few minutes off the grid too), and a run is superseded only when it is at least a
    whole interval late."""
    interval = timedelta(hours=hours)
    start = datetime(2024, 1, 1, 2, tzinfo=UTC) + previous * interval
    slot = start + (missed + 1) * interval + timedelta(minutes=jitter * hours // 24)
    clock = slot + late * interval / 24
    out = decide(slot, clock, interval, [CommittedRun("p", start, start)], scheduled=True)
    assert out.superseded == (clock >= slot + interval)
    if not out.superseded:
        assert out.skipped_slots == tuple(start + k * interval for k in range(1, missed + 1))
        assert out.skipped_count == missed


def test_plan_night_reads_the_committed_runs(tmp_path):
    committed(tmp_path, "asof-4", as_of="2024-03-04T02:00:00+00:00")
    committed(tmp_path, "sched-3", scheduled_start="2024-03-03T02:00:00+00:00")
    committed(tmp_path, "manual", started_at="2024-03-04T12:00:00+00:00")  # no slot: never a previous slot
    (tmp_path / "runs" / "failed").mkdir()
    (tmp_path / "runs" / "failed" / "manifest.json").write_text(json.dumps({
        "status": "failed", "as_of": "2024-03-06T02:00:00+00:00"}))
    (tmp_path / "runs" / "planted").mkdir()
    (tmp_path / "runs" / "planted" / "manifest.json").write_text("{not json")
    history = committed_history(Location(str(tmp_path)))
    assert [r.run_id for r in history] == ["sched-3", "asof-4", "manual"]
    plan = plan_night(Location(str(tmp_path)), "new", as_of=night(7), slot=None, interval=DAY, rerun=False)
    assert plan.catch_up.skipped_slots == (night(5), night(6)) and plan.catch_up.previous_run_id == "asof-4"
    assert plan.previous_run_id == "manual"  # revisions compare with the newest run before this one, slot or not
    late = plan_night(Location(str(tmp_path)), "sched-5", as_of=None, slot=night(5), interval=DAY, rerun=False,
                      now=night(7) + timedelta(minutes=1))
    assert late.superseded and "2024-03-07T02:00:00+00:00" in late.superseded_reason()
    replay = plan_night(Location(str(tmp_path)), "asof-3b", as_of=night(3, 12), slot=None, interval=DAY, rerun=False)
    assert replay.previous_run_id == "sched-3"  # a replay of an earlier night compares with the night before it


# --- revisions ---------------------------------------------------------------
def test_revisions_are_scaled_by_the_series_naive_error():
    ds = pd.date_range("2024-03-01", periods=4, freq="h")
    current = pd.DataFrame({"series_id": ["a"] * 3 + ["b"] * 3 + ["c"], "ds": [*ds[1:], *ds[1:], ds[0]],
                            "yhat": [10.0, 11, 12, 5, 5, 5, 1]})
    previous = pd.DataFrame({"series_id": ["a"] * 3 + ["b"] * 3, "ds": [*ds[:3], *ds[:3]],
                             "yhat": [9.0, 9, 9, 5, 6, 7]})
    scale = pd.Series({"a": 2.0, "b": 0.0})
    out = compute_revisions(current, previous, scale, "prev")
    assert list(out["series_id"]) == ["a", "a", "b", "b"]  # only dates both forecast
    assert out["revision"].iloc[:2].tolist() == [(10 - 9) / 2, (11 - 9) / 2]
    assert out["revision"].iloc[2:].isna().all()  # a zero scale: no revision in naive units
    stats = revision_stats([RevisionRows(None, "prev", 4, 2, np.abs(out["revision"].dropna().to_numpy()))])
    assert stats["p50"] == pytest.approx(0.75) and stats["p95"] == pytest.approx(0.5 + 0.95 * 0.5)
    assert stats["scored"] == 2 and stats["rows"] == 4
    assert revision_stats([])["p50"] is None
