"""Real data through the CLI: on 40 series of each shared M4 set, the defaults beat seasonal naive on MASE.

`lstm-forecast run` with its defaults and only the flags a user passes (frequency, horizon, season). The
data come from `../shared/data`; without them the test skips locally and fails in CI. M4 hourly holds only
the competition's training part: its last 48 hours are held out here.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_path

CLI = Path(sys.executable).with_name("lstm-forecast")


def _subset(frame: pd.DataFrame, n: int = 40) -> pd.DataFrame:
    ids = sorted(frame["series_id"].unique())
    keep = ids[:: max(1, len(ids) // n)][:n]  # spread over the set, fixed
    return frame[frame["series_id"].isin(keep)]


def _mase(history: pd.DataFrame, test: pd.DataFrame, forecast: pd.DataFrame, m: int) -> float:
    """Mean over series of M4's MASE: mean |y - f| over the test / mean in-sample |y_t - y_{t-m}|."""
    merged = test.merge(forecast[["series_id", "ds", "yhat"]], on=["series_id", "ds"], how="left")
    assert merged["yhat"].notna().all(), "a test point has no forecast"
    out = []
    for sid, g in merged.groupby("series_id"):
        x = history.loc[history["series_id"] == sid].sort_values("ds")["y"].to_numpy()
        out.append(np.mean(np.abs(g["y"] - g["yhat"])) / np.mean(np.abs(x[m:] - x[:-m])))
    return float(np.mean(out))


def _snaive(history: pd.DataFrame, test: pd.DataFrame, season: int) -> pd.DataFrame:
    rows = []
    for sid, g in test.groupby("series_id"):
        last = history.loc[history["series_id"] == sid].sort_values("ds")["y"].to_numpy()[-season:]
        rows.append(pd.DataFrame({"series_id": sid, "ds": g["ds"].to_numpy(), "yhat": np.resize(last, len(g))}))
    return pd.concat(rows, ignore_index=True)


def _run(tmp_path: Path, history: pd.DataFrame, flags: list[str]) -> pd.DataFrame:
    src = tmp_path / "history.parquet"
    history.to_parquet(src, index=False)
    out = tmp_path / "out"
    proc = subprocess.run([str(CLI), "run", "--input", str(src), "--output", str(out), "--set", "run_id=m4", *flags],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    preds = pd.read_parquet(out / "predictions" / "run=m4")
    return preds.assign(ds=preds["ds"].astype(history["ds"].dtype))


@pytest.mark.slow
def test_defaults_beat_seasonal_naive_on_40_m4_weekly_series(tmp_path):
    train = _subset(pd.read_parquet(shared_path("data", "m4-weekly", "train.parquet")))
    test = pd.read_parquet(shared_path("data", "m4-weekly", "test.parquet"))
    test = test[test["series_id"].isin(train["series_id"].unique())]
    preds = _run(tmp_path, train, ["--freq", "W-MON", "--horizon", "13", "--season", "52"])
    lstm, snaive = _mase(train, test, preds, 1), _mase(train, test, _snaive(train, test, 52), 1)
    assert np.isfinite(lstm) and lstm < snaive, (lstm, snaive)


@pytest.mark.slow
def test_defaults_beat_seasonal_naive_on_40_m4_hourly_series(tmp_path):
    frame = _subset(pd.read_parquet(shared_path("data", "m4-hourly", "train.parquet")))
    frame = frame.sort_values(["series_id", "ds"])
    last = frame.groupby("series_id").cumcount(ascending=False) < 48
    history, test = frame[~last], frame[last]
    preds = _run(tmp_path, history, ["--freq", "h", "--horizon", "48", "--season", "24"])
    lstm, snaive = _mase(history, test, preds, 24), _mase(history, test, _snaive(history, test, 24), 24)
    assert np.isfinite(lstm) and lstm < snaive, (lstm, snaive)
