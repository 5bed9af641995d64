"""M4 hourly accuracy and time, through the CLI with its defaults, scored by the independent M4 scorer.

    python benchmarks/m4_hourly.py [--data ../shared/data/m4-hourly] [--series N] [--keep DIR] [--json]
                                   [-- extra lstm-forecast run flags]

`../shared/data/m4-hourly/train.parquet` holds only the training part of the competition's hourly series.
This benchmark holds out the last 48 hours of each series itself, runs

    lstm-forecast run --input <the rest> --output <tmp> --freq h --horizon 48 --season 24

and scores the committed predictions with `../shared/bench/m4_score.py --season 24`, beside seasonal naive
(the last 24 hours repeated) and Naive2 (OWA 1 by definition). `seconds` is the whole CLI process, from start
to the committed manifest; `train_s` and `forecast_s` come from the run's manifest. Prints a table; with --json
one JSON object last: owa, smape, mase, seconds, seasonal_naive_owa, train_s, forecast_s (and coverage/MSIS
when the predictions carry 95% intervals).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import SHARED, hold_out, machine_load, run_cli, score, seasonal_naive_frame, timings, workdir  # noqa: E402

H, SEASON = 48, 24


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "m4-hourly"))
    p.add_argument("--series", type=int, default=None, help="first N series only (quick checks)")
    p.add_argument("--keep", default=None, help="folder for the inputs, outputs and forecasts (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="extra flags for lstm-forecast run (after --)")
    a = p.parse_args(argv)

    frame = pd.read_parquet(Path(a.data) / "train.parquet")
    if a.series:
        keep = sorted(frame["series_id"].unique())[: a.series]
        frame = frame[frame["series_id"].isin(keep)]
    history, test = hold_out(frame, H)
    work = workdir(a.keep)
    history_path, test_path = work / "history.parquet", work / "test.parquet"
    history.to_parquet(history_path, index=False)
    test.to_parquet(test_path, index=False)

    load_before = machine_load()
    run = run_cli(history_path, work, ["--freq", "h", "--horizon", str(H), "--season", str(SEASON), *a.extra])
    ours = score(history_path, test_path, run["predictions"], SEASON, work, "forecast")
    naive = score(history_path, test_path, seasonal_naive_frame(history, test, SEASON), SEASON, work, "seasonal_naive")
    t = timings(run["manifest"])
    train_s = t.get("train_or_load_model", float("nan"))
    forecast_s = t.get("forecast", float("nan"))

    print(f"M4 hourly: {ours['series']} series, last {H} hours of the training part held out; "
          f"lstm-forecast run --freq h --horizon {H} --season {SEASON} {' '.join(a.extra)}".rstrip())
    print(f"{'model':<24}{'sMAPE':>9}{'MASE':>9}{'OWA':>9}{'MSIS':>9}{'cov 95':>9}")
    msis = f"{ours['msis_95']:>9.3f}{ours['coverage_95']:>9.3f}" if "msis_95" in ours else f"{'':>18}"
    print(f"{'lstm-forecast (defaults)':<24}{ours['smape']:>9.3f}{ours['mase']:>9.3f}{ours['owa']:>9.3f}{msis}")
    print(f"{'seasonal naive (24)':<24}{naive['smape']:>9.3f}{naive['mase']:>9.3f}{naive['owa']:>9.3f}")
    print(f"{'Naive2':<24}{ours['naive2_smape']:>9.3f}{ours['naive2_mase']:>9.3f}{1.0:>9.3f}")
    print(f"seconds (whole CLI run): {run['seconds']:.1f}; train {train_s:.1f}; forecast {forecast_s:.1f}; "
          f"machine: {load_before} before, {machine_load()} after; outputs under {work}")
    if a.json:
        out = {"owa": ours["owa"], "smape": ours["smape"], "mase": ours["mase"], "seconds": round(run["seconds"], 1),
               "seasonal_naive_owa": naive["owa"], "train_s": round(train_s, 1), "forecast_s": round(forecast_s, 1),
               "series": ours["series"]}
        out.update({k: ours[k] for k in ("msis_95", "coverage_95") if k in ours})
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
