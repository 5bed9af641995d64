"""Catch-up after missed slots, as of an instant, and revisions: the plain-library parts (issue 23, points 3-5)."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_core import timestamps
from lstm_core.as_of import as_of_run_id, parse_as_of, read_filters
from lstm_core.catchup import CommittedRun, committed_history, decide
from lstm_core.config import ConfigError, load_config
from lstm_core.errors import DataValidationError
from lstm_core.inputs import read_series
from lstm_core.location import Location
from lstm_core.nightly import plan_night
from lstm_core.revisions import RevisionRows, compute_revisions, revision_stats

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


# --- as_of on a time column stored as text (CSV, Parquet strings) or numbers ---------------------------------

def text_frame(fmt: str, n: int = 12) -> pd.DataFrame:
    """Two daily series from 2023-01-02, dates written with `fmt`, plus a new series after 2023-01-08."""
    days = pd.date_range("2023-01-02", periods=n, freq="D")
    rows = [pd.DataFrame({"series_id": sid, "ds": days.strftime(fmt), "y": np.arange(n) + 10.0 * k})
            for k, sid in enumerate(["a", "b"])]
    return pd.concat([*rows, pd.DataFrame({"series_id": ["new"], "ds": [days[-1].strftime(fmt)], "y": [1.0]})],
                     ignore_index=True)


def write(frame: pd.DataFrame, path) -> Location:
    frame.to_csv(path, index=False) if str(path).endswith(".csv") else frame.to_parquet(path, index=False)
    return Location(str(path))


@pytest.mark.parametrize("name, fmt, time_format", [("in.csv", "%Y-%m-%d", None), ("dm.csv", "%d/%m/%Y", "%d/%m/%Y"),
                                                    ("dm.csv", "%d/%m/%Y", None),  # the one order that reads all
                                                    ("strings.parquet", "%Y-%m-%d", None),
                                                    ("digits.csv", "%Y%m%d", "%Y%m%d")])
def test_as_of_on_a_text_time_column_reads_what_the_cut_file_holds(tmp_path, name, fmt, time_format):
    """Rows after as_of are dropped right after their times are parsed: a spike, a row that would fail
    validation (NaN, a duplicate) and a new series after it never arrive; the rows equal the file cut at as_of."""
    frame = text_frame(fmt)
    on_clock = pd.to_datetime(frame["ds"], format=fmt)
    cut = frame[on_clock <= pd.Timestamp("2023-01-08")]
    planted = frame.copy()
    planted.loc[on_clock > pd.Timestamp("2023-01-08"), "y"] = 1e9
    planted = pd.concat([planted, pd.DataFrame({"series_id": ["a"], "ds": [frame["ds"].iloc[11]], "y": [np.nan]})])
    for as_of in ("2023-01-08", "2023-01-08T23:59", "2023-01-08T23:00:00+00:00"):
        got = read_series(write(planted, tmp_path / name), as_of=parse_as_of(as_of), time_format=time_format)
        want = read_series(write(cut, tmp_path / f"cut-{name}"), time_format=time_format)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
        assert set(got["series_id"]) == {"a", "b"} and len(got) == 14


@settings(max_examples=25, deadline=None)
@given(days=st.lists(st.integers(0, 60), min_size=1, max_size=30),
       hours=st.integers(0, 24 * 60), fmt=st.sampled_from(["%Y-%m-%d", "%d.%m.%Y", "%Y-%m-%d %H:%M", "%m/%d/%Y"]),
       declared=st.booleans())
def test_as_of_on_text_keeps_exactly_the_rows_on_or_before_it(tmp_path_factory, days, hours, fmt, declared):
    """Rows in any order, dates in any of several forms, declared or found: the cut keeps the rows whose time
    (as pandas reads them with the form) is on or before as_of, and no other."""
    stamps = pd.Timestamp("2023-01-13") + pd.to_timedelta(days, unit="D") + pd.to_timedelta(
        [7 * d % 24 if "%H" in fmt else 0 for d in days], unit="h")
    frame = pd.DataFrame({"series_id": [f"s{d % 3}" for d in days], "ds": stamps.strftime(fmt),
                          "y": np.arange(len(days), dtype=float)})
    path = tmp_path_factory.mktemp("prop") / "in.csv"
    as_of = pd.Timestamp("2023-01-13") + pd.Timedelta(hours=hours)
    time_format = fmt if declared else None
    try:  # a column validation cannot read (an order no value settles: 01.02.2023 alone) is refused alike
        timestamps.parse(frame["ds"], frame["series_id"], None, lambda *_: None, time_format=time_format)
    except DataValidationError:
        with pytest.raises(DataValidationError, match="ambiguous"):
            read_series(write(frame, path), as_of=as_of.to_pydatetime(), time_format=time_format)
        return
    got = read_series(write(frame, path), as_of=as_of.to_pydatetime(), time_format=time_format)
    assert sorted(got["y"].astype(float)) == sorted(frame.loc[stamps <= as_of, "y"])


def test_as_of_on_epoch_integers_reads_what_the_cut_file_holds(tmp_path):
    seconds = 1672617600 + 3600 * np.arange(10)  # 2023-01-02T00:00Z, hourly
    frame = pd.DataFrame({"series_id": "a", "ds": seconds, "y": np.arange(10.0)})
    got = read_series(write(frame, tmp_path / "e.parquet"), as_of=parse_as_of("2023-01-02T04:00Z"),
                      time_format="epoch_s")
    assert got["y"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_as_of_on_text_with_offsets_uses_the_data_clock_or_the_instant(tmp_path):
    """Without an offset, as_of is on each value's own wall clock; with one, the instant is compared."""
    ds = ["2024-03-01T00:00+01:00", "2024-03-01T01:00+01:00", "2024-03-01T02:00+01:00", "2024-03-01T03:00+01:00"]
    path = write(pd.DataFrame({"series_id": "a", "ds": ds, "y": [0.0, 1.0, 2.0, 3.0]}), tmp_path / "o.csv")
    assert read_series(path, as_of=parse_as_of("2024-03-01T01:00"))["y"].astype(float).tolist() == [0.0, 1.0]
    assert read_series(path, as_of=parse_as_of("2024-03-01T01:00Z"))["y"].astype(float).tolist() == [0.0, 1.0, 2.0]


def test_a_placeholder_date_after_as_of_is_dropped_with_its_row(tmp_path):
    """9999-12-31 (no nanosecond timestamp holds it) lies after every as_of: its series stays whole."""
    frame = pd.concat([text_frame("%Y-%m-%d"), pd.DataFrame({"series_id": ["a"], "ds": ["9999-12-31"],
                                                               "y": [0.0]})], ignore_index=True)
    got = read_series(write(frame, tmp_path / "p.csv"), as_of=parse_as_of("2023-01-08"))
    assert len(got) == 14 and "9999-12-31" not in set(got["ds"])


@pytest.mark.parametrize("bad", ["garbage", None])
def test_a_time_value_that_cannot_be_parsed_is_refused_even_after_as_of(tmp_path, bad):
    """Its time is unknown, so it cannot be placed on either side of as_of: the error names file, series, row."""
    frame = text_frame("%Y-%m-%d")
    frame.loc[11, "ds"] = bad  # series 'a', after as_of
    with pytest.raises(DataValidationError) as info:
        read_series(write(frame, tmp_path / "bad.csv"), as_of=parse_as_of("2023-01-08"))
    assert info.value.column == "ds" and info.value.series_id == "a" and info.value.row == 11
    assert "bad.csv" in str(info.value)


def test_a_sharded_read_of_a_text_time_column_holds_the_unsharded_rows(tmp_path):
    """The planner counts and the splitter writes exactly the rows the unsharded reader returns."""
    from lstm_core.shard_plan import plan_shards
    from lstm_core.shard_split import read_shard, split_shards

    frame = pd.concat([text_frame("%d/%m/%Y").assign(series_id=lambda f, k=k: f["series_id"] + str(k))
                       for k in range(4)], ignore_index=True)
    path = write(frame, tmp_path / "panel.csv")
    as_of = parse_as_of("2023-01-08")
    whole = read_series(path, as_of=as_of, time_format="%d/%m/%Y")
    plan = plan_shards(path, shard_size=3, scratch=str(tmp_path / "scratch"), infer_freq=True,
                       time_format="%d/%m/%Y", as_of=as_of)
    assert plan.sharded and plan.rows == len(whole) == 8 * 7 and plan.n_series == 8 and plan.freq == "D"
    split = split_shards(path, plan, as_of=as_of, time_format="%d/%m/%Y")
    parts = pd.concat([read_shard(s.url) for s in split.shards], ignore_index=True)
    key = ["series_id", "ds"]
    pd.testing.assert_frame_equal(parts.sort_values(key).reset_index(drop=True),
                                  whole.sort_values(key).reset_index(drop=True))


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


def test_a_scheduled_start_as_prefect_gives_it_orders_against_the_clock():
    """Prefect gives a scheduled run's slot as a pendulum DateTime (its FlowRun.expected_start_time); compared
    with a standard datetime it raised TypeError (naive and aware) and every scheduled run failed."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from prefect.client.schemas.objects import FlowRun

    from lstm_core.as_of import as_utc
    from lstm_core.catchup import decide

    slot = FlowRun(flow_id=uuid.uuid4(), expected_start_time="2026-03-01T02:00:00Z").expected_start_time
    assert type(as_utc(slot)) is datetime and as_utc(slot) == datetime(2026, 3, 1, 2, tzinfo=UTC)
    late = decide(slot, datetime(2026, 3, 3, 2, 30, tzinfo=UTC), timedelta(days=1), (), scheduled=True)
    assert late.superseded_by == datetime(2026, 3, 3, 2, tzinfo=UTC)
    on_time = decide(slot, datetime(2026, 3, 1, 2, 1, tzinfo=UTC), timedelta(days=1), (), scheduled=True)
    assert not on_time.superseded
