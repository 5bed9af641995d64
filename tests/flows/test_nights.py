"""Night after night through the real CLI and flow (issue 23, points 3-5): as of an instant, catch-up after
missed slots, and revisions against the previous committed run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_frame
from tests.flows.test_cli import FAST_FLAGS, run_cli

FLAGS = [*FAST_FLAGS, "--set", "backtest.windows=1", "--set", "training.max_series=null"]


def manifest_of(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / run_id / "manifest.json").read_text())


def run_ids(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "runs").iterdir() if (p / "manifest.json").exists())


def run(data: Path, out: Path, *flags: str) -> dict:
    done = run_cli("run", "--input", str(data), "--output", str(out), *FLAGS, *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("run "))
    return manifest_of(out, line.split()[1].rstrip(":"))


@pytest.mark.slow
def test_a_spike_after_as_of_changes_nothing(tmp_path):
    """A run as of T on a file with a spike, a broken row and a new series after T forecasts exactly what a run
    on the file cut at T does: nothing after T is read, validated or planned."""
    frame = make_frame(n_series=3, length=150)
    as_of = pd.Timestamp("2026-01-06 00:00")
    cut = frame[frame["ds"] <= as_of]
    later = frame["ds"] > as_of
    planted = frame.copy()
    planted.loc[later, "y"] *= 1000.0  # the spike
    extra = pd.DataFrame({"series_id": ["s00", "new"], "ds": [frame["ds"].max()] * 2, "y": [np.nan, 5.0]})
    planted = pd.concat([planted, extra], ignore_index=True).astype({"series_id": "string"})  # a duplicate, a new id
    planted.to_parquet(tmp_path / "planted.parquet", index=False)
    cut.to_parquet(tmp_path / "cut.parquet", index=False)

    replay = run(tmp_path / "planted.parquet", tmp_path / "replay", "--as-of", "2026-01-06T00:00:00")
    truth = run(tmp_path / "cut.parquet", tmp_path / "truth")
    assert replay["as_of"] == "2026-01-06T00:00:00" and replay["config"]["as_of"] == "2026-01-06T00:00:00"
    assert replay["run_id"].startswith("asof-20260106T000000-") and replay["run_id_source"] == "as_of"
    assert truth["as_of"] is None
    assert replay["counts"]["rows_read"] == len(cut) and replay["counts"]["series_read"] == 3
    assert replay["input_fingerprint"] == truth["input_fingerprint"]
    a = pd.read_parquet(tmp_path / "replay" / "predictions").sort_values(["series_id", "ds"]).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "truth" / "predictions").sort_values(["series_id", "ds"]).reset_index(drop=True)
    assert len(a) == 3 * 12 and a["ds"].min() > as_of
    pd.testing.assert_frame_equal(a[["series_id", "ds", "yhat"]], b[["series_id", "ds", "yhat"]])


def reader_revisions(data: pd.DataFrame, out: Path, run_id: str, previous: str, as_of: pd.Timestamp,
                     season: int = 24) -> pd.DataFrame:
    """What a reader computes from the published files: both runs' predictions, and each series' in-sample
    seasonal naive MAE on the input as of the later run."""
    preds = pd.read_parquet(out / "predictions")
    now = preds[preds["run_id"] == run_id][["series_id", "ds", "yhat"]]
    before = preds[preds["run_id"] == previous][["series_id", "ds", "yhat"]].rename(columns={"yhat": "yhat_previous"})
    history = data[data["ds"] <= as_of].sort_values(["series_id", "ds"])
    scale = history.groupby("series_id")["y"].apply(lambda y: np.abs(y.diff(season)).mean())
    both = now.merge(before, on=["series_id", "ds"])
    both["revision"] = (both["yhat"] - both["yhat_previous"]) / both["series_id"].map(scale).astype(float)
    return both.sort_values(["series_id", "ds"]).reset_index(drop=True)


@pytest.mark.slow
def test_two_missed_slots_one_run_and_revisions_a_reader_can_recompute(tmp_path):
    """Slots every 6 hours: runs as of T and T+6h, then the slots T+12h and T+18h are missed and the run as of
    T+24h catches up alone, naming them. Each run's revisions/ equal what pandas computes from the two
    committed runs' predictions; the manifest's p50/p95 are their percentiles of |revision|."""
    data = make_frame(n_series=3, length=150)
    path = tmp_path / "series.parquet"
    data.to_parquet(path, index=False)
    out = tmp_path / "out"
    nights = [pd.Timestamp("2026-01-05 00:00") + pd.Timedelta(hours=h) for h in (0, 6, 24)]
    every = ["--set", "schedule_interval=PT6H"]
    first = run(path, out, "--as-of", nights[0].isoformat(), *every)
    second = run(path, out, "--as-of", nights[1].isoformat(), *every)
    assert first["revisions"] == {"previous_run_id": None, "rows": 0, "series": 0, "scored": 0, "p50": None,
                                  "p95": None}
    assert "revisions" not in first["outputs"] or first["outputs"]["revisions"] is None
    assert second["schedule"]["skipped_slots"] == [] and second["schedule"]["previous_run_id"] == first["run_id"]

    # revisions of the second run: 6 of the 12 forecast hours of each series overlap the first run's
    table = pd.read_parquet(out / "revisions" / f"run={second['run_id']}")
    expected = reader_revisions(data, out, second["run_id"], first["run_id"], nights[1])
    assert len(table) == 3 * 6 and (table["previous_run_id"] == first["run_id"]).all()
    got = table.sort_values(["series_id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["series_id", "ds", "yhat_previous", "yhat", "revision"]].astype(
        {"series_id": object}), expected[["series_id", "ds", "yhat_previous", "yhat", "revision"]].astype(
        {"series_id": object}), check_dtype=False, rtol=1e-9)
    size = np.abs(expected["revision"].to_numpy())
    assert second["revisions"]["previous_run_id"] == first["run_id"]
    assert second["revisions"]["p50"] == pytest.approx(np.percentile(size, 50), rel=1e-12)
    assert second["revisions"]["p95"] == pytest.approx(np.percentile(size, 95), rel=1e-12)
    assert second["outputs"]["revisions"].endswith(f"revisions/run={second['run_id']}/part-0.parquet")
    plot = Path(second["outputs"]["plots"]["nightly.png"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the outage: slots T+12h and T+18h missed; one run for the newest data names them
    before = run_ids(out)
    third = run(path, out, "--as-of", nights[2].isoformat(), *every)
    assert run_ids(out) == sorted([*before, third["run_id"]])  # one run, not three
    schedule = third["schedule"]
    assert schedule["skipped_slots"] == ["2026-01-05T12:00:00+00:00", "2026-01-05T18:00:00+00:00"]
    assert schedule["skipped_count"] == 2 and schedule["previous_run_id"] == second["run_id"]
    assert schedule["slot"] == "2026-01-06T00:00:00+00:00" and schedule["interval"] == "PT6H"
    # 18 hours after the second run with a 12-hour horizon: no date in common, an empty table
    assert third["revisions"]["rows"] == 0 and third["revisions"]["p50"] is None
    # nightly.png's accuracy line: each night's realised MASE over all series, as the newest scoring run has it
    from lstm_core.catchup import committed_history
    from lstm_core.nightly import realised_by_night
    from lstm_core.location import Location

    realised = pd.read_parquet(out / "realised")
    pooled = realised[realised["series_id"].isna() & (realised["metric"] == "mase") & (realised["model"] == "lstm")]
    newest = pooled[pooled["run_id"] == third["run_id"]].set_index("forecast_run_id")["value"]
    assert set(newest.index) == {first["run_id"], second["run_id"]}
    assert realised_by_night(Location(str(out)), committed_history(Location(str(out)))) == pytest.approx(
        newest.to_dict(), rel=1e-12)


@pytest.mark.usefixtures("prefect_server")
def test_a_late_scheduled_slot_is_superseded_and_writes_nothing(tmp_path, monkeypatch):
    """A scheduled run that starts a whole interval after its slot (the worker was down) stops before any work:
    status superseded, nothing under the output. Prefect gives a run its slot only when its scheduler created
    it, for a slot in the future; a Late run of a past slot cannot be made here, so the slot is given to the
    flow directly (the decision itself is tested on committed runs in tests/lstm_core/test_catchup.py)."""
    import flows.batch_forecast as bf

    data = tmp_path / "series.parquet"
    make_frame(n_series=2, length=60).to_parquet(data, index=False)
    out = tmp_path / "out"
    slot = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=2)
    monkeypatch.setattr(bf, "scheduled_slot", lambda: slot.to_pydatetime())
    result = bf.batch_forecast(settings={"input_url": str(data), "output_url": str(out), "freq": "h"})
    assert result["status"] == "superseded" and result["run_id"].startswith("sched-")
    assert result["superseded_by"] == (slot + pd.Timedelta(days=2)).isoformat()
    assert not out.exists() or not any(out.rglob("*"))


def test_the_run_summary_gives_the_missed_slots_and_the_revision_percentiles():
    from tasks.reporting import summary_markdown

    manifest = {"run_id": "asof-x", "status": "succeeded", "as_of": "2024-03-07T02:00:00+00:00",
                "schedule": {"skipped_slots": ["2024-03-05T02:00:00+00:00", "2024-03-06T02:00:00+00:00"],
                             "skipped_count": 2},
                "revisions": {"previous_run_id": "asof-w", "rows": 40, "p50": 0.1234, "p95": 0.98765}}
    md = summary_markdown(manifest)
    assert "as of `2024-03-07T02:00:00+00:00`" in md
    assert "caught up on 2 missed slot(s): `2024-03-05T02:00:00+00:00`, `2024-03-06T02:00:00+00:00`" in md
    assert "against run `asof-w` (40 points): |revision| median 0.1234, 95th percentile 0.9877" in md
    assert "no revisions" in summary_markdown({**manifest, "revisions": {"p50": None}})
