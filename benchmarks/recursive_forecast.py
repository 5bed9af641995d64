"""Benchmark: recursive multi-step forecasting of many series with one trained LSTM.

Three ways to produce the same (series, horizon) forecast, each step's
prediction fed back as the next input:

  ours     lstm_core.forecasting.recursive_forecast: all series, the whole
           horizon in one compiled tf.function call (timed cold, i.e.
           including its tracing, and warm).
  seed     the tutorial's way: per series, per step, model.predict(window[None]).
           A few series are timed and the time is extrapolated to all series.
  batched  lstm_core.forecasting.stepwise_forecast: one batched model.predict
           per step over all series.

The model is built with build_lstm(window=168, n_features=1, units=(64,),
chunk=1, patch=1: one-step recursion), compiled with Adam + MAE and fitted for one short epoch on
sampled windows of the synthetic series, so its weights are trained.

Usage:
    python benchmarks/recursive_forecast.py            # full sizes (about a minute)
    python benchmarks/recursive_forecast.py --quick    # small sizes, a smoke test
    python benchmarks/recursive_forecast.py --json     # ... and a JSON object as the last stdout line
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_core.forecasting import recursive_forecast, stepwise_forecast  # noqa: E402
from lstm_core.model import build_lstm  # noqa: E402
from lstm_core.panel import Panel  # noqa: E402
from lstm_core.scaling import SeriesScaler  # noqa: E402
from lstm_core.windows import last_windows, sample_windows  # noqa: E402

WINDOW = 168
TOLERANCE = 1e-4  # max abs difference allowed between the ways, in scaled units


# ----------------------------------------------------------------------------- data and model

def synthetic_panel(n_series: int, length: int, seed: int = 0) -> Panel:
    """Hourly series: level, daily seasonality, linear trend and noise, each series its own."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    level = rng.uniform(10.0, 100.0, (n_series, 1))
    amplitude = rng.uniform(0.1, 0.4, (n_series, 1)) * level
    phase = rng.uniform(0.0, 2 * np.pi, (n_series, 1))
    trend = rng.uniform(-0.02, 0.05, (n_series, 1)) * level / 100
    noise = rng.normal(0.0, 1.0, (n_series, length)) * rng.uniform(0.02, 0.1, (n_series, 1)) * level
    y = level + amplitude * np.sin(2 * np.pi * t / 24 + phase) + trend * t + noise
    ids = np.array([f"s{i:05d}" for i in range(n_series)], dtype=object)
    offsets = np.arange(n_series + 1, dtype=np.int64) * length
    start = np.datetime64("2024-01-01T00:00")
    last_ds = np.full(n_series, start + np.timedelta64(length - 1, "h"), dtype="datetime64[ns]")
    return Panel(ids, offsets, y.reshape(-1, 1), ("y",), last_ds, "h")


def trained_model(panel: Panel, per_series: int, seed: int = 0) -> tuple[keras.Model, dict]:
    keras.utils.set_random_seed(seed)
    model = build_lstm(WINDOW, n_features=1, units=(64,))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mae")
    x, y, _ = sample_windows(panel, WINDOW, per_series, np.random.default_rng(seed))
    t0 = time.perf_counter()
    hist = model.fit(x, y[:, None], epochs=1, batch_size=128, shuffle=True, verbose=0)
    return model, {"fit_s": time.perf_counter() - t0, "fit_windows": len(y), "fit_loss": float(hist.history["loss"][-1])}


# ----------------------------------------------------------------------------- the seed's way

def seed_forecast(model: keras.Model, window: np.ndarray, horizon: int) -> np.ndarray:
    """One series: predict the next value from the window, append it, drop the oldest, repeat."""
    current = np.array(window, dtype=np.float32)  # (L, 1)
    out = []
    for _ in range(horizon):
        yhat = model.predict(current[None], verbose=0)  # (1, 1)
        out.append(float(yhat[0, 0]))
        current = np.concatenate([current[1:], yhat.astype(np.float32)], axis=0)
    return np.array(out, dtype=np.float32)


# ----------------------------------------------------------------------------- benchmark

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(n_series: int, length: int, horizon: int, seed_series: int, repeats: int, per_series: int) -> dict:
    raw = synthetic_panel(n_series, length)
    panel = SeriesScaler.fit(raw, "standard").transform(raw)
    model, fit_info = trained_model(panel, per_series)
    windows = last_windows(panel, WINDOW)  # (S, L, 1) float32, the latest window of each series

    # (a) ours: the first call includes tracing the compiled loop; then warm calls.
    ours, ours_cold = timed(lambda: recursive_forecast(model, windows, horizon))
    warm_times = []
    for _ in range(max(repeats, 1)):
        again, t = timed(lambda: recursive_forecast(model, windows, horizon))
        warm_times.append(t)
    assert np.array_equal(again, ours), "recursive_forecast is not deterministic"

    # Warm Keras' predict function up (untimed) for batch 1 and full-batch shapes, so the
    # baselines below are timed without their own tracing: this favours the baselines.
    model.predict(windows[:1], verbose=0)
    model.predict(windows, verbose=0)

    # (c) batched predict per step.
    batched_times = []
    for _ in range(max(repeats, 1)):
        batched, t = timed(lambda: stepwise_forecast(model, windows, horizon))
        batched_times.append(t)

    # (b) the seed's per-series, per-step predict on the first few series, extrapolated.
    k = min(seed_series, n_series)
    seed_rows, seed_time = timed(lambda: np.stack([seed_forecast(model, windows[i], horizon) for i in range(k)]))
    seed_per_series = seed_time / k

    diff_batched = float(np.max(np.abs(ours - batched)))
    diff_seed = float(np.max(np.abs(ours[:k] - seed_rows)))
    assert np.isfinite(ours).all(), "non-finite forecasts"
    assert diff_batched <= TOLERANCE, f"ours vs batched predict differ by {diff_batched}"
    assert diff_seed <= TOLERANCE, f"ours vs seed differ by {diff_seed}"

    ours_warm = min(warm_times)
    batched_s = min(batched_times)
    seed_s = seed_per_series * n_series
    return {
        "n_series": n_series, "length": length, "horizon": horizon, "window": WINDOW,
        "ours_s": ours_cold, "ours_warm_s": ours_warm, "ours_warm_runs": warm_times,
        "trace_overhead_s": ours_cold - ours_warm,
        "batched_predict_s": batched_s, "batched_runs": batched_times,
        "seed_s": seed_s, "seed_series_timed": k, "seed_timed_s": seed_time,
        "seed_per_call_s": seed_time / (k * horizon),
        "max_abs_diff_batched": diff_batched, "max_abs_diff_seed": diff_seed,
        "forecast_std": float(np.std(ours)),
        **fit_info,
    }


def print_table(r: dict, repeats: int) -> None:
    s, h = r["n_series"], r["horizon"]
    ours = r["ours_s"]
    print()
    print(f"Recursive forecast benchmark: {s} series x {h} steps, window {r['window']}, "
          "LSTM(64), one-step (chunk 1), one trained model")
    print(f"Model fitted for 1 epoch on {r['fit_windows']:,} sampled windows ({r['fit_s']:.1f} s, MAE {r['fit_loss']:.3f}).")
    print("Timed (time.perf_counter): producing the (series, horizon) float32 forecast array from the (series, L, 1)")
    print("windows of scaled values; each step's prediction is fed back as the next input.")
    print("  ours     : recursive_forecast; first call, INCLUDING tracing of its tf.function (used in ratios);")
    print(f"             warm = best of {max(repeats, 1)} later calls")
    print(f"  seed     : model.predict(window[None]) per series per step; {r['seed_series_timed']} series x {h} steps timed,")
    print(f"             extrapolated to {s} series; predict already warmed up (its tracing not timed)")
    print(f"  batched  : stepwise_forecast, one model.predict over all series per step; best of {max(repeats, 1)},")
    print("             predict already warmed up")
    print("  per step = seconds / horizon, i.e. one step of all series")
    print()
    head = f"{'way':<34}{'seconds':>12}{'per step':>12}{'ours faster by':>16}{'max |diff| vs ours':>20}"
    print(head)
    print("-" * len(head))
    rows = [
        ("ours (first call, with tracing)", ours, "", ""),
        ("ours (warm call)", r["ours_warm_s"], "", ""),
        (f"seed (extrapolated from {r['seed_series_timed']} series)", r["seed_s"], f"{r['seed_s'] / ours:.0f}x",
         f"{r['max_abs_diff_seed']:.2e}"),
        ("batched predict per step", r["batched_predict_s"], f"{r['batched_predict_s'] / ours:.2f}x",
         f"{r['max_abs_diff_batched']:.2e}"),
    ]
    for name, sec, ratio, diff in rows:
        print(f"{name:<34}{sec:>12.3f}{sec / h:>12.4f}{ratio:>16}{diff:>20}")
    print()
    print(f"seed: {r['seed_timed_s']:.2f} s measured for {r['seed_series_timed'] * h} predict calls "
          f"({r['seed_per_call_s'] * 1e3:.1f} ms per call)")
    print(f"ours: tracing overhead of the first call {r['trace_overhead_s']:.3f} s; "
          f"warm calls: {', '.join(f'{t:.3f}' for t in r['ours_warm_runs'])} s")
    print(f"batched predict runs: {', '.join(f'{t:.3f}' for t in r['batched_runs'])} s")
    print(f"ratios vs ours' warm call: seed {r['seed_s'] / r['ours_warm_s']:.0f}x, "
          f"batched {r['batched_predict_s'] / r['ours_warm_s']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--series", type=int, help="number of series (default 414; quick 16)")
    ap.add_argument("--horizon", type=int, help="forecast steps (default 48; quick 6)")
    ap.add_argument("--seed-series", type=int, help="series timed the seed's way (default 3; quick 1)")
    ap.add_argument("--repeats", type=int, help="timed warm calls of ours and of batched predict (default 2; quick 1)")
    args = ap.parse_args()

    if args.quick:
        defaults = dict(n_series=16, length=WINDOW + 200, horizon=6, seed_series=1, repeats=1, per_series=4)
    else:
        defaults = dict(n_series=414, length=900, horizon=48, seed_series=3, repeats=2, per_series=8)
    cfg = dict(defaults)
    for key, val in (("n_series", args.series), ("horizon", args.horizon),
                     ("seed_series", args.seed_series), ("repeats", args.repeats)):
        if val is not None:
            cfg[key] = val

    r = run(**cfg)
    print_table(r, cfg["repeats"])

    if args.json:
        out = {
            "ours_s": r["ours_s"],
            "seed_s": r["seed_s"],
            "batched_predict_s": r["batched_predict_s"],
            "ratio_vs_seed": r["seed_s"] / r["ours_s"],
            "ratio_vs_batched": r["batched_predict_s"] / r["ours_s"],
            "max_abs_diff": max(r["max_abs_diff_batched"], r["max_abs_diff_seed"]),
            "max_abs_diff_batched": r["max_abs_diff_batched"],
            "max_abs_diff_seed": r["max_abs_diff_seed"],
            "ours_warm_s": r["ours_warm_s"],
            "trace_overhead_s": r["trace_overhead_s"],
            "ratio_vs_seed_warm": r["seed_s"] / r["ours_warm_s"],
            "ratio_vs_batched_warm": r["batched_predict_s"] / r["ours_warm_s"],
            "seed_series_timed": r["seed_series_timed"],
            "seed_timed_s": r["seed_timed_s"],
            "seed_per_call_s": r["seed_per_call_s"],
            "series": r["n_series"],
            "horizon": r["horizon"],
            "window": r["window"],
            "fit_windows": r["fit_windows"],
            "fit_loss": r["fit_loss"],
            "quick": args.quick,
            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
