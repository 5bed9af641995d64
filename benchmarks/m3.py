"""M3 yearly and quarterly accuracy through the CLI with its defaults, beside statsforecast's standards.

    python benchmarks/m3.py [--data ../shared/data] [--sets yearly,quarterly] [--series N] [--keep DIR] [--json]
                            [-- extra lstm-forecast run flags]

For each set (the training parts only: yearly YS, H 6, MASE period 1; quarterly QS, H 8, period 4) the last H
points of every series are held out here (the test values of M3 are never read), then:

- `lstm-forecast run --input history.parquet --freq F --horizon H` (defaults otherwise): its served forecast
  (`yhat`) and the network's own (`yhat_lstm`, where it serves the series; the others filled with Naive2,
  as the M4 organisers filled missing forecasts);
- statsforecast 2.0.3's AutoETS, AutoTheta and SeasonalNaive fitted here on the same histories
  (`StatsForecast(..., n_jobs=1)`), independently of the product;

all scored by `../shared/bench/m4_score.py`. Prints a table; with --json one JSON object last with, per set
(`yearly`, `quarterly`): owa (served), owa_lstm, owa_autoets, owa_autotheta, owa_seasonal_naive,
missing_series, seconds (the whole CLI process), statistical_seconds (in the run), lstm_series,
series_by_model, coverage_80/coverage_95 and msis_95 of the served intervals, smape, mase, load.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import SCORER, SHARED, hold_out, machine_load, run_cli, score, workdir  # noqa: E402

SETS = {"yearly": ("m3-yearly", "YS", 6, 1), "quarterly": ("m3-quarterly", "QS", 8, 4)}


def _scorer_module():
    spec = importlib.util.spec_from_file_location("m4_score", SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def naive2_frame(history: pd.DataFrame, test: pd.DataFrame, season: int) -> pd.DataFrame:
    """Naive2 (the scorer's own definition) over the test dates: what fills a missing forecast."""
    naive2 = _scorer_module().naive2
    hist = {sid: g["y"].to_numpy(float) for sid, g in history.groupby("series_id")}
    parts = [pd.DataFrame({"series_id": sid, "ds": g["ds"].to_numpy(),
                           "yhat": naive2(hist[sid], len(g), season)}) for sid, g in test.groupby("series_id")]
    return pd.concat(parts, ignore_index=True)


def statsforecast_frames(history: pd.DataFrame, freq: str, horizon: int, season: int) -> tuple[dict, float]:
    """AutoETS, AutoTheta and SeasonalNaive by statsforecast on `history`: name -> frame (series_id, ds, yhat)."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, AutoTheta, SeasonalNaive

    t0 = time.perf_counter()
    sf = StatsForecast(models=[AutoETS(season_length=season), AutoTheta(season_length=season),
                               SeasonalNaive(season_length=season)], freq=freq, n_jobs=1)
    fc = sf.forecast(df=history.rename(columns={"series_id": "unique_id"}), h=horizon).reset_index(drop=True)
    if "unique_id" not in fc.columns:
        fc = fc.reset_index()
    out = {name: fc[["unique_id", "ds", col]].rename(columns={"unique_id": "series_id", col: "yhat"})
           for name, col in (("autoets", "AutoETS"), ("autotheta", "AutoTheta"), ("seasonal_naive", "SeasonalNaive"))}
    return out, time.perf_counter() - t0


def run_set(name: str, data: Path, series: int | None, work: Path, extra: list[str]) -> dict:
    folder, freq, horizon, season = SETS[name]
    frame = pd.read_parquet(data / folder / "train.parquet")
    if series:
        keep = sorted(frame["series_id"].unique())[:series]
        frame = frame[frame["series_id"].isin(keep)]
    history, test = hold_out(frame, horizon)
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    hist_path, test_path = d / "history.parquet", d / "test.parquet"
    history.to_parquet(hist_path, index=False)
    test.to_parquet(test_path, index=False)
    load_before = machine_load()
    run = run_cli(hist_path, d, ["--freq", freq, "--horizon", str(horizon), *extra])
    preds = run["predictions"]
    manifest = run["manifest"]
    ids = set(test["series_id"])
    complete = preds.dropna(subset=["yhat"]).groupby("series_id")["ds"].nunique()
    missing = len(ids - set(complete[complete >= horizon].index))
    naive2 = naive2_frame(history, test, season)

    def filled(column: str) -> pd.DataFrame:
        f = preds[["series_id", "ds", column]].rename(columns={column: "yhat"}) if column in preds else \
            pd.DataFrame(columns=["series_id", "ds", "yhat"])
        f = naive2.merge(f.astype({"ds": naive2["ds"].dtype}), on=["series_id", "ds"], how="left",
                         suffixes=("_n2", ""))
        f["yhat"] = f["yhat"].fillna(f["yhat_n2"])
        return f[["series_id", "ds", "yhat"]]

    served_cols = ["series_id", "ds", "yhat", *(c for c in preds.columns if c.startswith(("yhat_lo_", "yhat_hi_")))]
    served = score(hist_path, test_path, filled("yhat").merge(preds[served_cols].drop(columns="yhat"),
                                                               on=["series_id", "ds"], how="left"),
                   season, d, "served")
    served_80 = score(hist_path, test_path, preds[served_cols], season, d, "served80", level=80) \
        if not missing and "yhat_lo_80" in preds else {}
    lstm = score(hist_path, test_path, filled("yhat_lstm"), season, d, "lstm")
    lstm_series = int(preds.groupby("series_id")["yhat_lstm"].apply(lambda v: v.notna().all()).sum()) \
        if "yhat_lstm" in preds else 0
    ref, ref_seconds = statsforecast_frames(history, freq, horizon, season)
    scores = {k: score(hist_path, test_path, v, season, d, k) for k, v in ref.items()}
    serving = manifest.get("serving") or {}
    return {
        "owa": served["owa"], "owa_lstm": lstm["owa"], "owa_autoets": scores["autoets"]["owa"],
        "owa_autotheta": scores["autotheta"]["owa"], "owa_seasonal_naive": scores["seasonal_naive"]["owa"],
        "missing_series": missing, "seconds": round(run["seconds"], 1),
        "statistical_seconds": serving.get("statistical_seconds"),
        "statsforecast_seconds": round(ref_seconds, 1),
        "series": len(ids), "lstm_series": lstm_series, "series_by_model": serving.get("series_by_model"),
        "smape": served["smape"], "mase": served["mase"], "smape_lstm": lstm["smape"],
        "smape_autoets": scores["autoets"]["smape"], "smape_autotheta": scores["autotheta"]["smape"],
        "coverage_95": served.get("coverage_95"), "msis_95": served.get("msis_95"),
        "coverage_80": served_80.get("coverage_80"),
        "backtest_overall": manifest.get("overall_metrics"),
        "coverage_by_history": serving.get("coverage_by_history"),
        "load_before": load_before, "load_after": machine_load(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "data"))
    p.add_argument("--sets", default="yearly,quarterly")
    p.add_argument("--series", type=int, default=None, help="first N series of each set only (quick checks)")
    p.add_argument("--keep", default=None, help="folder for the inputs, outputs and forecasts (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="extra flags for lstm-forecast run (after --)")
    a = p.parse_args(argv)
    work = workdir(a.keep)
    print(f"M3 (training parts, last H held out); machine: {machine_load()}")
    print(f"{'set':<11}{'served':>8}{'lstm':>8}{'AutoETS':>9}{'AutoTheta':>10}{'SNaive':>8}{'missing':>9}"
          f"{'seconds':>9}  served by")
    out = {}
    for name in a.sets.split(","):
        r = run_set(name, Path(a.data), a.series, work, a.extra)
        out[name] = r
        print(f"{name:<11}{r['owa']:>8.3f}{r['owa_lstm']:>8.3f}{r['owa_autoets']:>9.3f}{r['owa_autotheta']:>10.3f}"
              f"{r['owa_seasonal_naive']:>8.3f}{r['missing_series']:>9d}{r['seconds']:>9.1f}  {r['series_by_model']}")
    print(f"OWA against Naive2 = 1.000 (m4_score.py); machine after: {machine_load()}; outputs under {work}")
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
