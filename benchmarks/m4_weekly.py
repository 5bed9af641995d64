"""M4 weekly accuracy: the engine with the flow's defaults, scored by the independent M4 scorer.

    python benchmarks/m4_weekly.py [--data ../shared/data/m4-weekly] [--series N] [--json]

Trains on train.parquet exactly as the flow does (holdout = last H points of each
series for early stopping and evaluation), forecasts H = 13 weeks past the end of
train, writes the forecast Parquet and scores it, and seasonal naive, with
`../shared/bench/m4_score.py` (MASE period 1, as in M4). Prints a table; with
--json one JSON object last: smape, mase, owa, seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from lstm_core.config import ForecastConfig  # noqa: E402
from lstm_core.engine import fit, predictions_frame, prepare  # noqa: E402
from lstm_core.metrics import seasonal_naive  # noqa: E402

SCORER = ROOT.parent / "shared" / "bench" / "m4_score.py"


def weekly_config(sets: list[str]) -> ForecastConfig:
    from lstm_core.config import load_config

    return load_config(overrides={"freq": "W-MON", "horizon": 13, "season_length": 52}, sets=sets, environ={})


def score(train: Path, test: Path, forecast: Path) -> dict:
    out = subprocess.run([sys.executable, str(SCORER), "--train", str(train), "--test", str(test),
                          "--forecast", str(forecast), "--season", "1", "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "m4-weekly"))
    p.add_argument("--series", type=int, default=None, help="first N series only (quick checks)")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config overrides key=value")
    p.add_argument("--out", default=None, help="where to keep the forecast Parquet")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    data = Path(a.data)
    train = pd.read_parquet(data / "train.parquet")
    test = pd.read_parquet(data / "test.parquet")
    if a.series:
        keep = sorted(train["series_id"].unique())[: a.series]
        train, test = train[train["series_id"].isin(keep)], test[test["series_id"].isin(keep)]
    config = weekly_config(a.sets)

    t0 = time.perf_counter()
    panel, report = prepare(train, config)
    forecaster = fit(panel.drop_last(config.horizon), config)
    if config.refit:
        forecaster = fit(panel, config)
    yhat = forecaster.forecast(panel, config.horizon)
    seconds = time.perf_counter() - t0

    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="m4w-"))
    work.mkdir(parents=True, exist_ok=True)
    train_path, test_path = work / "train.parquet", work / "test.parquet"
    train.to_parquet(train_path, index=False)
    test.to_parquet(test_path, index=False)
    fc = predictions_frame(panel, yhat, config.freq)
    fc["ds"] = fc["ds"].astype(test["ds"].dtype)
    fc.to_parquet(work / "forecast.parquet", index=False)
    naive = predictions_frame(panel, seasonal_naive(panel, config.horizon, config.season_length), config.freq)
    naive["ds"] = naive["ds"].astype(test["ds"].dtype)
    naive.to_parquet(work / "seasonal_naive.parquet", index=False)

    ours = score(train_path, test_path, work / "forecast.parquet")
    snaive = score(train_path, test_path, work / "seasonal_naive.parquet")
    skipped = len(report.skipped)
    print(f"M4 weekly: {ours['series']} series scored ({skipped} skipped by validation), H={config.horizon}, "
          f"window={config.window}, units={config.model.units}, ensemble={config.training.ensemble_size}")
    print(f"{'model':<22}{'sMAPE':>10}{'MASE':>10}{'OWA':>10}")
    print(f"{'lstm (defaults)':<22}{ours['smape']:>10.3f}{ours['mase']:>10.3f}{ours['owa']:>10.3f}")
    print(f"{'seasonal naive (52)':<22}{snaive['smape']:>10.3f}{snaive['mase']:>10.3f}{snaive['owa']:>10.3f}")
    print(f"{'naive2 (reference)':<22}{ours['naive2_smape']:>10.3f}{ours['naive2_mase']:>10.3f}{1.0:>10.3f}")
    print(f"wall time (validate + train + forecast): {seconds:.1f} s; forecast at {work / 'forecast.parquet'}")
    if a.json:
        print(json.dumps({"smape": ours["smape"], "mase": ours["mase"], "owa": ours["owa"],
                          "seconds": round(seconds, 1), "seasonal_naive_owa": snaive["owa"],
                          "series": ours["series"], "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
