"""Run ids of scheduled slots, and files that belong to a run."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from lstm_core.config import ForecastConfig
from lstm_core.outputs import RunWriter, slot_run_id


def test_slot_run_id_is_stable_per_slot_and_configuration():
    cfg = ForecastConfig(horizon=12)
    slot = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)
    rid = slot_run_id(slot, cfg.config_hash())
    assert rid == f"sched-20260301T020000Z-{cfg.config_hash()}"
    assert ForecastConfig.model_validate({"run_id": rid}).run_id == rid  # a valid run id
    # The same instant in another time zone is the same slot.
    assert slot_run_id(slot.astimezone(ZoneInfo("Europe/Paris")), cfg.config_hash()) == rid
    assert slot_run_id(slot + timedelta(days=1), cfg.config_hash()) != rid
    assert slot_run_id(slot, ForecastConfig(horizon=13).config_hash()) != rid


def test_config_hash_ignores_run_id_and_secrets():
    a = ForecastConfig(storage_options={"key": "AKIA1", "secret": "s1"}, run_id="one")
    b = ForecastConfig(storage_options={"key": "AKIA2", "secret": "s2"}, run_id="two")
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != ForecastConfig(output_url="elsewhere").config_hash()


def test_run_files_live_under_the_run_and_begin_clears_them(tmp_path):
    writer = RunWriter.open(str(tmp_path), "r1")
    path = writer.write_file("plots/loss.png", b"png")
    assert path == f"{tmp_path}/runs/r1/plots/loss.png"
    assert (tmp_path / "runs/r1/plots/loss.png").read_bytes() == b"png"
    for bad in ("../escape.png", "/abs.png", "manifest.json"):
        with pytest.raises(ValueError):
            writer.write_file(bad, b"x")
    writer.begin()
    assert not (tmp_path / "runs/r1/plots").exists()  # the run's files go; a lease would stay
