"""Does tuning pay, and is the backtest a trustworthy judge? M4 weekly, its test held back.

    python benchmarks/tuning.py [--data ../shared/data/m4-weekly] [--minutes 20] [--series N] [--keep DIR] [--json]

1. `lstm-forecast run` with the defaults (freq W-MON, H 13) on train.parquet, scored on test.parquet with
   `../shared/bench/m4_score.py --season 1`: `default_owa`.
2. A tune of `--minutes` (20) on the same train.parquet: `lstm-forecast tune --minutes M`, in process (2 cores).
   Tuning never sees the test, nor the last 13 points of the history (a run's holdout): its objective is the
   pooled backtest MASE on the 3 windows before them.
3. `lstm-forecast run --config <study>/best.yaml` (the file as the tune wrote it), scored the same: `tuned_owa`.
4. The rank check: the top 3 complete trials by backtest MASE, each run with its own settings and scored on the
   test (a trial with the defaults' own settings, a new study's trial 0, takes the defaults' score); `rank_agreement`
   is how many of the 3 pairs the backtest orders as the test OWA does (goal >= 2 of 3).

Prints a table; with --json one JSON object last: default_owa, tuned_owa, improvement (1 - tuned/default),
trials, pruned, failed, minutes (of the tune, wall), rank_agreement, top3 ([trial, backtest_mase, test_owa]),
best (the tuned settings), seconds (the whole benchmark), load (the machine's load average before and after).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import CLI, SHARED, machine_load, run_cli, score, weekly_inputs, workdir  # noqa: E402

H = 13
STUDY = "m4-weekly"
DATA_FLAGS = ["--freq", "W-MON", "--horizon", str(H)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "m4-weekly"))
    p.add_argument("--minutes", type=float, default=20.0, help="the tune's budget (default 20)")
    p.add_argument("--series", type=int, default=None, help="first N series only (quick checks)")
    p.add_argument("--keep", default=None, help="folder for inputs and outputs (default: a temp dir); an earlier "
                   "study there is resumed")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    t_all = time.perf_counter()
    load_before = machine_load()

    work = workdir(a.keep)
    train, test, train_path, test_path = weekly_inputs(Path(a.data), a.series, work)
    print(f"M4 weekly: {train['series_id'].nunique()} series, H={H}; machine: {load_before}", flush=True)

    def scored(name: str, args: list[str]) -> tuple[dict, float]:
        run_dir = work / name
        run_dir.mkdir(exist_ok=True)
        run = run_cli(train_path, run_dir, [*DATA_FLAGS, *args])
        return score(train_path, test_path, run["predictions"], 1, run_dir, "forecast"), run["seconds"]

    default, default_s = scored("default", [])
    print(f"defaults: OWA {default['owa']:.4f} (sMAPE {default['smape']:.3f}, MASE {default['mase']:.3f}) in "
          f"{default_s:.0f} s", flush=True)

    # the tune, as a user runs it
    import subprocess

    tune_out = work / "tune"
    t0 = time.perf_counter()
    proc = subprocess.run([str(CLI), "tune", "--input", str(train_path), "--output", str(tune_out), *DATA_FLAGS,
                           "--study", STUDY, "--minutes", str(a.minutes), "--set", "tuning.trials=null"],
                          capture_output=True, text=True)
    tune_minutes = (time.perf_counter() - t0) / 60
    if proc.returncode != 0:
        raise SystemExit(f"lstm-forecast tune failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    study_dir = tune_out / "tuning" / f"study={STUDY}"
    trials = pd.read_parquet(study_dir / "trials.parquet")
    best_yaml = study_dir / "best.yaml"
    print(f"tune: {len(trials)} trials ({(trials['state'] == 'pruned').sum()} pruned, "
          f"{(trials['state'] == 'fail').sum()} failed) in {tune_minutes:.1f} min", flush=True)

    tuned, tuned_s = scored("tuned", ["--config", str(best_yaml)])
    print(f"tuned: OWA {tuned['owa']:.4f} (sMAPE {tuned['smape']:.3f}, MASE {tuned['mase']:.3f}) in {tuned_s:.0f} s",
          flush=True)

    # rank check: do the top 3 trials' backtest MASEs order their test OWAs?
    from lstm_core import tuning
    from lstm_core.config import load_config

    done = trials[trials["state"] == "complete"].sort_values(["objective", "number"]).head(3)
    base = load_config(overrides={"freq": "W-MON", "horizon": H, "output_url": str(tune_out)})
    owa = {}
    best_number = int(done["number"].iloc[0])
    study = tuning.load_trials(base.model_copy(update={"tuning": base.tuning.model_copy(update={"study": STUDY})}))
    by_number = {t.number: t for t in study}
    defaults = load_config(overrides={"freq": "W-MON", "horizon": H})
    for number in done["number"]:
        number = int(number)
        if number == best_number:
            owa[number] = tuned["owa"]
            continue
        settings = tuning.best_settings(by_number[number], base)
        same = load_config(overrides=settings)
        if (same.model_key(), same.training_settings()) == (defaults.model_key(), defaults.training_settings()):
            owa[number] = default["owa"]  # the defaults' own settings (a new study's trial 0): already scored
            print(f"trial {number}: the default settings, test OWA {owa[number]:.4f}", flush=True)
            continue
        path = work / f"trial-{number}.yaml"
        path.write_text(yaml.safe_dump(settings))
        s, _ = scored(f"trial-{number}", ["--config", str(path)])
        owa[number] = s["owa"]
        print(f"trial {number}: backtest MASE {float(done.set_index('number').loc[number, 'objective']):.4f}, "
              f"test OWA {owa[number]:.4f}", flush=True)
    ranked = [(int(n), float(m), float(owa[int(n)])) for n, m in zip(done["number"], done["objective"])]
    pairs = list(itertools.combinations(ranked, 2))
    agree = sum(1 for x, y in pairs if (x[1] < y[1]) == (x[2] < y[2]))

    print(f"\n{'':<28}{'OWA':>8}{'sMAPE':>9}{'MASE':>9}")
    print(f"{'defaults':<28}{default['owa']:>8.4f}{default['smape']:>9.3f}{default['mase']:>9.3f}")
    print(f"{'tuned (best.yaml)':<28}{tuned['owa']:>8.4f}{tuned['smape']:>9.3f}{tuned['mase']:>9.3f}")
    print(f"improvement {1 - tuned['owa'] / default['owa']:+.2%} (goal >= 3%); rank agreement of the top "
          f"{len(ranked)}: {agree} of {len(pairs)} pairs (goal >= 2 of 3)")
    print(f"machine after: {machine_load()}; outputs under {work}")
    if a.json:
        print(json.dumps({
            "default_owa": round(default["owa"], 4), "tuned_owa": round(tuned["owa"], 4),
            "improvement": round(1 - tuned["owa"] / default["owa"], 4),
            "trials": int(len(trials)), "pruned": int((trials["state"] == "pruned").sum()),
            "failed": int((trials["state"] == "fail").sum()), "minutes": round(tune_minutes, 2),
            "rank_agreement": f"{agree}/{len(pairs)}", "top3": ranked,
            "best": yaml.safe_load(best_yaml.read_text()), "seconds": round(time.perf_counter() - t_all, 1),
            "load": {"before": load_before, "after": machine_load()},
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
