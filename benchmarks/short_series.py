"""What each short-series choice buys: M3 yearly / quarterly training parts, the last H points held out,
`lstm-forecast run --freq F --horizon H [--set ...]`, the LSTM's forecast scored by `../shared/bench/m4_score.py`.

    python benchmarks/short_series.py yearly|quarterly [--label NAME] [--json] [-- --set key=value ...]

Series the run gives no forecast are filled with Naive2 for the OWA (and counted as `missing_series`), so
every figure is over the whole set. Prints one line; with --json one JSON object last: set, label, owa,
smape, mase, missing_series, served_series, seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import SHARED, hold_out, machine_load, run_cli, score, workdir  # noqa: E402

SETS = {"yearly": ("YS", 6, 1), "quarterly": ("QS", 8, 4)}


def naive2(history: pd.DataFrame, test: pd.DataFrame, season: int) -> pd.DataFrame:
    """The fill for series the run gave no forecast: each history's last value over its test dates (Naive2
    itself for yearly data; plain naive, not seasonally adjusted, for quarterly)."""
    last = history.groupby("series_id")["y"].last()
    return test[["series_id", "ds"]].assign(yhat=test["series_id"].map(last).to_numpy())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("set", choices=sorted(SETS))
    p.add_argument("--label", default="defaults")
    p.add_argument("--keep", default=None)
    p.add_argument("--json", action="store_true")
    a, extra = p.parse_known_args(argv)
    a.extra = [x for x in extra if x != "--"]
    freq, h, season = SETS[a.set]
    frame = pd.read_parquet(SHARED / "data" / f"m3-{a.set}" / "train.parquet")
    history, test = hold_out(frame, h)
    work = workdir(a.keep)
    hp, tp = work / "history.parquet", work / "test.parquet"
    history.to_parquet(hp, index=False)
    test.to_parquet(tp, index=False)
    load = machine_load()
    run = run_cli(hp, work, ["--freq", freq, "--horizon", str(h), *a.extra])
    preds = run["predictions"]
    served = preds["series_id"].nunique()
    fill = naive2(history, test, season)
    fill = fill[~fill["series_id"].isin(preds["series_id"].unique())]
    forecast = pd.concat([preds[["series_id", "ds", "yhat"]], fill], ignore_index=True)
    res = score(hp, tp, forecast, season, work, "forecast")
    out = {"set": a.set, "label": a.label, "owa": res.get("owa"), "smape": res.get("smape"), "mase": res.get("mase"),
           "missing_series": int(frame["series_id"].nunique() - served), "served_series": int(served),
           "seconds": round(run["seconds"], 1), "load": load, "extra": a.extra}
    print(f"{a.set} {a.label}: OWA {out['owa']:.3f} sMAPE {out['smape']:.2f} MASE {out['mase']:.3f} "
          f"served {served} missing {out['missing_series']} in {out['seconds']} s ({load})")
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
