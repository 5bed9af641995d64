"""Shared steps of the M4 benchmarks: run the product as a user does, then score with the independent scorer.

- `run_cli` runs `lstm-forecast run` (the console script of this interpreter's environment) on a
  Parquet input and returns the committed predictions, the manifest and the wall time of the process.
- `score` calls `../shared/bench/m4_score.py` on a forecast frame.
- `seasonal_naive_frame` is the reference forecast (the last season repeated), scored the same way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCORER = SHARED / "bench" / "m4_score.py"
CLI = Path(sys.executable).with_name("lstm-forecast")


def hold_out(frame: pd.DataFrame, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, test): the last `horizon` points of each series are the test."""
    frame = frame.sort_values(["series_id", "ds"]).reset_index(drop=True)
    last = frame.groupby("series_id").cumcount(ascending=False) < horizon
    return frame[~last].reset_index(drop=True), frame[last].reset_index(drop=True)


def run_cli(input_path: Path, work: Path, args: list[str], env: dict[str, str] | None = None) -> dict:
    """`lstm-forecast run --input ... --output ...` plus `args`; returns predictions, manifest, seconds, log."""
    out = work / "output"
    cmd = [str(CLI), "run", "--input", str(input_path), "--output", str(out), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"lstm-forecast failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    runs = sorted((out / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    manifest = json.loads((runs[-1] / "manifest.json").read_text())
    run_id = manifest["run_id"]
    preds = pd.read_parquet(out / "predictions" / f"run={run_id}")
    return {"predictions": preds, "manifest": manifest, "seconds": seconds, "stdout": proc.stdout,
            "stderr": proc.stderr, "output": out}


def score(history: Path, test: Path, forecast: pd.DataFrame, season: int, work: Path, name: str,
          level: int = 95) -> dict:
    """The M4 scorer's JSON for `forecast` (series_id, ds, yhat [, yhat_lo_<level>, yhat_hi_<level>])."""
    path = work / f"{name}.parquet"
    test_ds = pd.read_parquet(test, columns=["ds"])["ds"].dtype
    forecast = forecast.assign(ds=forecast["ds"].astype(test_ds))
    forecast.to_parquet(path, index=False)
    out = subprocess.run([sys.executable, str(SCORER), "--train", str(history), "--test", str(test), "--forecast",
                          str(path), "--season", str(season), "--level", str(level), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seasonal_naive_frame(history: pd.DataFrame, test: pd.DataFrame, season: int) -> pd.DataFrame:
    """The last season of each history repeated over the test dates."""
    rows = []
    for sid, g in test.groupby("series_id", sort=False):
        last = history.loc[history["series_id"] == sid, "y"].to_numpy()[-max(season, 1):]
        h = len(g)
        rows.append(pd.DataFrame({"series_id": sid, "ds": g["ds"].to_numpy(), "yhat": np.resize(last, h)}))
    return pd.concat(rows, ignore_index=True)


def workdir(keep: str | None) -> Path:
    path = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="m4-bench-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def weekly_inputs(data: Path, series: int | None, work: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path, Path]:
    """M4 weekly train and test (the first `series` ids when given), also written under `work` for the CLI:
    (train, test, train path, test path)."""
    train = pd.read_parquet(data / "train.parquet")
    test = pd.read_parquet(data / "test.parquet")
    if series:
        keep = sorted(train["series_id"].unique())[:series]
        train, test = train[train["series_id"].isin(keep)], test[test["series_id"].isin(keep)]
    train_path, test_path = work / "train.parquet", work / "test.parquet"
    train.to_parquet(train_path, index=False)
    test.to_parquet(test_path, index=False)
    return train, test, train_path, test_path


def timings(manifest: dict) -> dict[str, float]:
    """Seconds per step from the manifest (tasks run in process: their own timers)."""
    t = manifest.get("timings_s") or {}
    return {k: float(v) for k, v in t.items() if isinstance(v, (int, float))}


def machine_load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"
    except OSError:
        return f"{os.cpu_count()} cores"
