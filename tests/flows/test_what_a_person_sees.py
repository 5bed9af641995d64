"""What a person sees of a run: the per-shard log lines, the progress bars (training, backtest windows,
the final forecast, shards) and the per-step timings artifact, from one real sharded run on a Prefect server."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re

import numpy as np
import pandas as pd
import pytest

from flows.batch_forecast import batch_forecast
from tasks.reporting import TIMINGS_KEY
from tests.conftest import make_frame

pytestmark = pytest.mark.usefixtures("prefect_server")

H = 12
SETTINGS = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24, "model": {"units": [8]},
    "training": {"epochs": 2, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}
SHARD_LINE = re.compile(r"^shard (\d+)/(\d+) done: (\d+) series forecast(?:, (\d+) skipped)? \(shard (\d+); shards "
                        r"finish in any order\)$")


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    """Six series (one with no valid value: skipped) in shards of two, with the progress bars forced on and
    stderr captured; returns the manifest, the flow run's log messages and what stderr received."""
    tmp = tmp_path_factory.mktemp("seen")
    frame = make_frame(n_series=6, length=150)
    frame.loc[frame["series_id"] == "s05", "y"] = np.nan  # a data fault (shortness no longer is one: issue 22)
    frame.to_parquet(tmp / "series.parquet", index=False)
    log = _Messages()
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(log)
    stderr = io.StringIO()
    old = os.environ.get("LSTM_FORECAST_PROGRESS")
    os.environ["LSTM_FORECAST_PROGRESS"] = "1"
    try:
        with contextlib.redirect_stderr(stderr):
            manifest = batch_forecast(settings={**SETTINGS, "input_url": str(tmp / "series.parquet"),
                                                "output_url": str(tmp / "out"), "shard_size": 2, "run_id": "seen"})
    finally:
        logger.removeHandler(log)
        if old is None:
            os.environ.pop("LSTM_FORECAST_PROGRESS")
        else:
            os.environ["LSTM_FORECAST_PROGRESS"] = old
    assert manifest["status"] == "succeeded"
    return manifest, log.messages, stderr.getvalue()


def test_a_sharded_run_logs_each_shard_it_finishes(sharded_run):
    manifest, messages, _ = sharded_run
    n = manifest["shards"]["count"]
    assert n >= 2
    lines = [m for m in messages if m.startswith("shard ")]
    parsed = [SHARD_LINE.match(m) for m in lines]
    assert all(parsed) and len(parsed) == n, lines
    assert [int(p.group(1)) for p in parsed] == list(range(1, n + 1)) and {int(p.group(2)) for p in parsed} == {n}
    # each line's counts are its shard's: together the run's
    assert sum(int(p.group(3)) for p in parsed) == manifest["counts"]["series_forecast"] == 5
    assert sum(int(p.group(4) or 0) for p in parsed) == manifest["counts"]["series_skipped"] == 1
    # each line names its shard, and its counts are that shard's
    items = {s["shard"]: s for s in manifest["shards"]["items"]}
    assert sorted(int(p.group(5)) for p in parsed) == sorted(items)
    assert all(int(p.group(3)) == items[int(p.group(5))]["series_forecast"] for p in parsed)


def test_forced_on_the_bars_show_training_backtest_windows_forecast_and_shards(sharded_run):
    manifest, _, stderr = sharded_run
    n = manifest["shards"]["count"]
    windows = manifest["backtest"]["windows"]
    assert re.search(r"epoch 1/2 .* \d+/\d+ ", stderr), stderr[-2000:]  # training batches
    assert "backtest windows" in stderr and f" {windows}/{windows} " in stderr, stderr[-2000:]
    assert re.search(r"forecast of \d series past their end .* 0/1 ", stderr), stderr[-2000:]
    assert re.search(rf"shards .* {n}/{n} .* 5 series forecast", stderr), stderr[-2000:]
    assert "\r\x1b[K" in stderr


def test_timings_are_a_table_artifact_of_the_flow_run(sharded_run):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    manifest, _, _ = sharded_run
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[TIMINGS_KEY])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[manifest["flow_run_id"]])))
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    rows = {r["step"]: r for r in table}
    for step in ("train_or_load_model", "forecast", "write_outputs", "wall_total"):
        assert isinstance(rows[step]["seconds"], float) and rows[step]["seconds"] > 0, rows.get(step)
    # the same numbers as the manifest's timings, each with its share of the run's wall time
    assert [r["step"] for r in table] == list(manifest["timings_s"])
    total = manifest["timings_s"]["wall_total"]
    for step, seconds in manifest["timings_s"].items():
        assert rows[step]["seconds"] == pytest.approx(seconds, abs=1e-3)
        assert rows[step]["share"] == pytest.approx(seconds / total, abs=1e-4)
    assert rows["wall_total"]["share"] == 1.0
