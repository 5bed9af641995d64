"""Prediction intervals and the backtest's cost, through the CLI with its defaults, scored by the M4 scorer.

    python benchmarks/intervals.py [--series N] [--only weekly|hourly] [--keep DIR] [--json]
                                   [-- extra lstm-forecast run flags]

Two data sets, each run as a user runs the job (`lstm-forecast run`, defaults: 3 backtest windows, levels
[80, 95], conformal intervals):

- M4 weekly: `../shared/data/m4-weekly` train -> its test (13 weeks), `--freq W-MON --horizon 13 --season 52`;
- M4 hourly: `../shared/data/m4-hourly/train.parquet` with the last 48 hours of each series held out (the
  competition's hourly test values are never read), `--freq h --horizon 48 --season 24`.

The committed predictions are scored with `../shared/bench/m4_score.py` at levels 95 and 80: coverage,
MSIS (the M4 interval measure, at 95), sMAPE, MASE and OWA, with the M4 convention's season (weekly 1,
hourly 24; the weekly run itself is given season 52, as `m4_weekly.py` does). `seconds` is the whole CLI process;
`backtest_share` is the backtest's forecasting time (manifest `backtest.seconds`) over the run's wall time
(`timings_s.wall_total`), pooled over both runs. Prints a table; with --json one JSON object last:
weekly_coverage_95, weekly_msis, hourly_coverage_95, hourly_msis, backtest_share (and the other figures).
Goals (issue 13): coverage 0.93-0.97 on both; MSIS <= 22 weekly, <= 10 hourly; backtest share <= 0.3.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import SHARED, hold_out, machine_load, run_cli, score, timings, workdir  # noqa: E402

SETS = {
    # `score_season`: the M4 convention for MASE and MSIS (weekly: 1), not the season the job is given
    "weekly": {"horizon": 13, "season": 52, "freq": "W-MON", "score_season": 1},
    "hourly": {"horizon": 48, "season": 24, "freq": "h", "score_season": 24},
}


def _inputs(name: str, data: Path, series: int | None, work: Path) -> tuple[Path, Path]:
    """(history, test) Parquet files of one data set, the first `series` series only when given."""
    if name == "weekly":
        history = pd.read_parquet(data / "m4-weekly" / "train.parquet")
        test = pd.read_parquet(data / "m4-weekly" / "test.parquet")
    else:
        history, test = hold_out(pd.read_parquet(data / "m4-hourly" / "train.parquet"), SETS[name]["horizon"])
    if series:
        keep = sorted(history["series_id"].unique())[:series]
        history, test = history[history["series_id"].isin(keep)], test[test["series_id"].isin(keep)]
    paths = work / f"{name}-history.parquet", work / f"{name}-test.parquet"
    history.to_parquet(paths[0], index=False)
    test.to_parquet(paths[1], index=False)
    return paths


def run_set(name: str, data: Path, series: int | None, work: Path, extra: list[str]) -> dict:
    spec = SETS[name]
    history, test = _inputs(name, data, series, work)
    args = ["--horizon", str(spec["horizon"]), "--season", str(spec["season"]), *extra]
    if spec["freq"]:
        args = ["--freq", spec["freq"], *args]
    run = run_cli(history, work / name, args)
    preds = run["predictions"]
    at95 = score(history, test, preds, spec["score_season"], work, f"{name}-95", 95)
    at80 = score(history, test, preds, spec["score_season"], work, f"{name}-80", 80)
    manifest = run["manifest"]
    t = timings(manifest)
    return {"series": at95["series"], "coverage_95": at95.get("coverage_95"), "coverage_80": at80.get("coverage_80"),
            "msis": at95.get("msis_95"), "owa": at95["owa"], "smape": at95["smape"], "mase": at95["mase"],
            "seconds": round(run["seconds"], 1), "wall_s": t.get("wall_total", float("nan")),
            "backtest_s": float((manifest.get("backtest") or {}).get("seconds", float("nan"))),
            "intervals": (manifest.get("backtest") or {}).get("intervals"), "args": " ".join(args)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "data"))
    p.add_argument("--series", type=int, default=None, help="first N series of each set only (quick checks)")
    p.add_argument("--only", choices=sorted(SETS), default=None)
    p.add_argument("--keep", default=None, help="folder for the inputs, outputs and forecasts (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="extra flags for lstm-forecast run (after --)")
    a = p.parse_args(argv)

    work = workdir(a.keep)
    load_before = machine_load()
    results = {name: run_set(name, Path(a.data), a.series, work, a.extra) for name in SETS
               if a.only in (None, name)}
    print(f"{'set':<8}{'series':>8}{'cov 80':>8}{'cov 95':>8}{'MSIS':>9}{'OWA':>8}{'seconds':>9}{'backtest':>10}")
    for name, r in results.items():
        print(f"{name:<8}{r['series']:>8}{r['coverage_80']:>8.3f}{r['coverage_95']:>8.3f}{r['msis']:>9.3f}"
              f"{r['owa']:>8.3f}{r['seconds']:>9.1f}{r['backtest_s'] / r['wall_s']:>10.1%}")
    wall = sum(r["wall_s"] for r in results.values())
    share = sum(r["backtest_s"] for r in results.values()) / wall if wall else float("nan")
    sources = ", ".join(f"{k} {r['intervals']}" for k, r in results.items())
    print(f"backtest share of the runs' time: {share:.1%} (goal <= 30%); intervals from: {sources}")
    print(f"machine: {load_before} before, {machine_load()} after; outputs under {work}")
    if a.json:
        out: dict = {"backtest_share": round(share, 4)}
        for name, r in results.items():
            out.update({f"{name}_coverage_95": r["coverage_95"], f"{name}_coverage_80": r["coverage_80"],
                        f"{name}_msis": r["msis"], f"{name}_owa": r["owa"], f"{name}_seconds": r["seconds"],
                        f"{name}_series": r["series"]})
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
