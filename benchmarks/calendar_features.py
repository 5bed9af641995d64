"""Do calendar features help? The LSTM with calendar_features off and on, on held-out real data.

M4 hourly (`../shared/data/m4-hourly/train.parquet`): the last 48 hours of each training series are held
out and forecast (the real M4 test values are never read); M4 weekly (`../shared/data/m4-weekly`): its
train/test split. Both variants train the same network with the same seed; only the calendar columns
differ. Prints MASE and sMAPE of each variant and of seasonal naive; `--json` prints one JSON object last.

    python benchmarks/calendar_features.py [--series 100] [--set training.epochs=20] [--json]

This is what `lstm_core.covariates.AUTO_CALENDAR` (what `calendar_features: auto` means per kind of
frequency) is decided from.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lstm_core.config import load_config  # noqa: E402
from lstm_core.engine import fit, panel_of  # noqa: E402
from lstm_core.metrics import mase_scale, per_series, seasonal_naive  # noqa: E402
from lstm_core.validation import validate_for  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def hourly(series: int | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    train = pd.read_parquet(DATA / "m4-hourly" / "train.parquet")
    if series:
        train = train[train["series_id"].isin(sorted(train["series_id"].unique())[:series])]
    train = train.sort_values(["series_id", "ds"])
    test = train.groupby("series_id").tail(48)
    return train.drop(test.index), test, {"freq": "h", "horizon": 48, "season_length": 24}


def weekly(series: int | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    train = pd.read_parquet(DATA / "m4-weekly" / "train.parquet")
    test = pd.read_parquet(DATA / "m4-weekly" / "test.parquet")
    if series:
        keep = sorted(train["series_id"].unique())[:series]
        train, test = train[train["series_id"].isin(keep)], test[test["series_id"].isin(keep)]
    return train, test, {"freq": "W-MON", "horizon": 13, "season_length": 52}


def score(train: pd.DataFrame, test: pd.DataFrame, settings: dict, calendar, sets: list[str]) -> dict:
    cfg = load_config(overrides={**settings, "calendar_features": calendar}, sets=sets, environ={})
    t0 = time.perf_counter()
    report = validate_for(train, cfg)
    panel = panel_of(report, cfg)
    model = fit(panel.drop_last(cfg.horizon), cfg)
    yhat = model.forecast(panel, cfg.horizon)
    seconds = time.perf_counter() - t0
    kept = set(panel.series_ids)
    actual = test[test["series_id"].isin(kept)].sort_values(["series_id", "ds"])["y"].to_numpy()
    actual = actual.reshape(panel.n_series, cfg.horizon)
    scale = mase_scale(panel, cfg.season_length)
    ours = per_series(actual, yhat, scale)
    naive = per_series(actual, seasonal_naive(panel, cfg.horizon, cfg.season_length), scale)
    return {"calendar": list(cfg.calendar()), "series": int(panel.n_series), "skipped": len(report.skipped),
            "mase": float(np.nanmean(ours["mase"])), "smape": float(np.nanmean(ours["smape"])),
            "naive_mase": float(np.nanmean(naive["mase"])), "naive_smape": float(np.nanmean(naive["smape"])),
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--series", type=int, default=100, help="first N series of each set (0: all)")
    p.add_argument("--data", choices=["hourly", "weekly", "both"], default="both")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config overrides key=value")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    results = {}
    for name, load in (("hourly", hourly), ("weekly", weekly)):
        if a.data not in (name, "both"):
            continue
        train, test, settings = load(a.series or None)
        results[name] = {variant: score(train, test, settings, variant, a.sets) for variant in ("off", "on")}
    print(f"{'data':<8}{'calendar':<34}{'series':>7}{'MASE':>9}{'sMAPE':>9}{'naive MASE':>12}{'s':>7}")
    for name, variants in results.items():
        for r in variants.values():
            print(f"{name:<8}{','.join(r['calendar']) or 'off':<34}{r['series']:>7}{r['mase']:>9.3f}"
                  f"{r['smape']:>9.2f}{r['naive_mase']:>12.3f}{r['seconds']:>7.1f}")
    if a.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
