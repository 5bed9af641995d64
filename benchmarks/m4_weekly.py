"""M4 weekly accuracy and time, through the CLI with its defaults, with --season 52 and with --season 1.

    python benchmarks/m4_weekly.py [--data ../shared/data/m4-weekly] [--series N] [--keep DIR] [--json]
                                   [-- extra lstm-forecast run flags]

Runs `lstm-forecast run --input train.parquet --freq W-MON --horizon 13 --season S` for S = 52 and S = 1 (the
two seasons a user may reasonably pass for weekly data), and scores each run's committed predictions against
test.parquet with `../shared/bench/m4_score.py --season 1` (the M4 convention for weekly MASE), beside seasonal
naive (52) and Naive2. Prints a table; with --json one JSON object last: owa_52, owa_1, seconds (the --season 52
run, whole CLI process), seconds_1, smape_52, mase_52, smape_1, mase_1, seasonal_naive_owa.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import SHARED, machine_load, run_cli, score, seasonal_naive_frame, weekly_inputs, workdir  # noqa: E402

H = 13


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "m4-weekly"))
    p.add_argument("--series", type=int, default=None, help="first N series only (quick checks)")
    p.add_argument("--keep", default=None, help="folder for the inputs, outputs and forecasts (default: a temp dir)")
    p.add_argument("--seasons", default="52,1", help="seasons to run, comma separated (default 52,1)")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="extra flags for lstm-forecast run (after --)")
    a = p.parse_args(argv)

    work = workdir(a.keep)
    train, test, train_path, test_path = weekly_inputs(Path(a.data), a.series, work)

    print(f"M4 weekly: {train['series_id'].nunique()} series, H={H}; machine: {machine_load()}")
    print(f"{'model':<30}{'sMAPE':>9}{'MASE':>9}{'OWA':>9}{'seconds':>9}")
    results = {}
    for season in [int(s) for s in a.seasons.split(",")]:
        run_dir = work / f"season-{season}"
        run_dir.mkdir(exist_ok=True)
        run = run_cli(train_path, run_dir, ["--freq", "W-MON", "--horizon", str(H), "--season", str(season),
                                            *a.extra])
        s = score(train_path, test_path, run["predictions"], 1, run_dir, "forecast")
        results[season] = (s, run["seconds"])
        print(f"{f'lstm-forecast --season {season}':<30}{s['smape']:>9.3f}{s['mase']:>9.3f}{s['owa']:>9.3f}"
              f"{run['seconds']:>9.1f}")
    naive = score(train_path, test_path, seasonal_naive_frame(train, test, 52), 1, work, "seasonal_naive")
    any_s = next(iter(results.values()))[0]
    print(f"{'seasonal naive (52)':<30}{naive['smape']:>9.3f}{naive['mase']:>9.3f}{naive['owa']:>9.3f}")
    print(f"{'Naive2':<30}{any_s['naive2_smape']:>9.3f}{any_s['naive2_mase']:>9.3f}{1.0:>9.3f}")
    print(f"machine after: {machine_load()}; outputs under {work}")
    if a.json:
        out: dict = {"seasonal_naive_owa": naive["owa"]}
        for season, (s, seconds) in results.items():
            out.update({f"owa_{season}": s["owa"], f"smape_{season}": s["smape"], f"mase_{season}": s["mase"],
                        f"seconds_{season}": round(seconds, 1)})
        out["seconds"] = out.get("seconds_52", round(next(iter(results.values()))[1], 1))
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
