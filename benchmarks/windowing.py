"""Benchmark: building every training window of a panel, ours vs the seed tutorial's loop.

Ours is `lstm_core.windows.all_windows` on a `Panel` (a gather from a
`sliding_window_view`, one copy). The seed's way is the tutorial loop run per
series,

    for i in range(len(data) - L):
        X.append(data[i:i + L]); y.append(data[i + L])

followed by `np.array(X)` reshaped to (samples, L, 1). What is timed is the
whole path from the panel's float64 values to the float32 arrays Keras trains
on, copies included. The seed is given its fastest float32 route (each series
cast to float32 before its loop); the route where the loop runs on float64 and
the result is cast afterwards (the copy Keras would make) is timed too.

Usage:
    python benchmarks/windowing.py            # full sizes (about half a minute)
    python benchmarks/windowing.py --quick    # small sizes, a smoke test
    python benchmarks/windowing.py --json     # ... and a JSON object as the last stdout line
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lstm_core.panel import Panel  # noqa: E402
from lstm_core.windows import all_windows  # noqa: E402

WINDOW = 168


# ----------------------------------------------------------------------------- data

def synthetic_panel(n_series: int, length: int, seed: int = 0) -> Panel:
    """Hourly series: random level, daily seasonality, a random walk and noise; float64 like real panels."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    level = rng.uniform(0.0, 10.0, (n_series, 1))
    season = rng.uniform(0.5, 2.0, (n_series, 1)) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi, (n_series, 1)))
    walk = np.cumsum(rng.normal(0.0, 0.05, (n_series, length)), axis=1)
    y = level + season + walk + rng.normal(0.0, 0.2, (n_series, length))
    ids = np.array([f"s{i:06d}" for i in range(n_series)], dtype=object)
    offsets = np.arange(n_series + 1, dtype=np.int64) * length
    last_ds = np.full(n_series, np.datetime64("2024-01-01T00:00"), dtype="datetime64[ns]")
    return Panel(ids, offsets, y.reshape(-1, 1), ("y",), last_ds, "h")


# ----------------------------------------------------------------------------- the two ways

def ours(panel: Panel, window: int) -> tuple[np.ndarray, np.ndarray]:
    return all_windows(panel, window)  # float32 by default


def seed_loop(panel: Panel, window: int, cast_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's loop, once per series, into one (samples, window, 1) float32 array.

    cast_first=True: each series is cast to float32 before its loop (the seed's fastest float32 route).
    cast_first=False: the loop runs on float64 and the finished array is cast (the copy Keras would make).
    """
    xs: list[np.ndarray] = []
    ys: list = []
    for i in range(panel.n_series):
        data = panel.values[panel.offsets[i]:panel.offsets[i + 1], 0]
        if cast_first:
            data = data.astype(np.float32)
        for j in range(len(data) - window):
            xs.append(data[j:j + window])
            ys.append(data[j + window])
    x = np.array(xs).reshape(-1, window, 1)
    y = np.array(ys)
    if not cast_first:
        x, y = x.astype(np.float32), y.astype(np.float32)
    return x, y


# ----------------------------------------------------------------------------- timing

def time_runs(fn, repeats: int) -> dict:
    """One untimed warm-up call (first touch of fresh memory is paid there), then `repeats` timed calls."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    del out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return {"first": first, "best": min(times), "median": statistics.median(times), "runs": times}


def check_identical(panel: Panel, window: int) -> int:
    """Both ways must give the very same arrays (values, shape, dtype); returns the number of windows."""
    xo, yo = ours(panel, window)
    for cast_first in (True, False):
        xs, ys = seed_loop(panel, window, cast_first)
        assert xo.dtype == xs.dtype == np.float32, (xo.dtype, xs.dtype)
        assert yo.dtype == ys.dtype == np.float32, (yo.dtype, ys.dtype)
        assert xo.shape == xs.shape, (xo.shape, xs.shape)
        assert np.array_equal(xo, xs), "windows differ"
        assert np.array_equal(yo, ys), "targets differ"
        del xs, ys
    n = len(yo)
    del xo, yo
    return n


def diagnostics(panel: Panel, window: int, repeats: int) -> dict:
    """Where our time goes: the parts of all_windows, and what a different design would cost."""
    v64 = panel.values
    v32 = v64.astype(np.float32)
    n_out = int(np.maximum(panel.lengths - window, 0).sum())

    def floor_write():  # writing the output array once: allocate + fill, nothing else
        a = np.empty((n_out, window, 1), np.float32)
        a.fill(1.0)
        return a

    def ours_f64():
        return all_windows(panel, window, dtype=np.float64)

    def view_only():  # no materialisation at all: the strided read-only view (what training could slice from)
        return sliding_window_view(v32, window, axis=0).transpose(0, 2, 1)

    def forced_extra_copy():  # what one more copy of the output (e.g. a transpose copy when F > 1) would add
        x, y = all_windows(panel, window)
        return np.array(x, copy=True), y

    x, y = all_windows(panel, window)
    # the transpose in gather: with one feature the gathered (n, 1, L) array transposed to (n, L, 1)
    # is already C-contiguous, so no second copy is made.
    no_transpose_copy = bool(x.flags.c_contiguous)
    del x
    return {
        "floor_write_s": time_runs(floor_write, repeats)["best"],
        "ours_float64_s": time_runs(ours_f64, repeats)["best"],
        "view_only_s": time_runs(view_only, repeats)["best"],
        "ours_plus_extra_copy_s": time_runs(forced_extra_copy, repeats)["best"],
        "cast_values_s": time_runs(lambda: v64.astype(np.float32), repeats)["best"],
        "transpose_is_free_for_F1": no_transpose_copy,
        "output_mb": n_out * window * 4 / 2**20,
    }


def run_case(name: str, panel: Panel, window: int, repeats: int) -> dict:
    n_windows = check_identical(panel, window)
    t_ours = time_runs(lambda: ours(panel, window), repeats)
    t_seed = time_runs(lambda: seed_loop(panel, window, True), repeats)
    t_seed64 = time_runs(lambda: seed_loop(panel, window, False), repeats)
    diag = diagnostics(panel, window, repeats)
    return {
        "case": name,
        "n_series": panel.n_series,
        "points_per_series": int(panel.lengths[0]),
        "windows": n_windows,
        "ours": t_ours,
        "seed": t_seed,
        "seed_f64": t_seed64,
        "diag": diag,
    }


# ----------------------------------------------------------------------------- report

def print_tables(results: list[dict], repeats: int, window: int) -> None:
    print()
    print(f"Windowing benchmark: every (window, next value) pair, window L = {window}")
    print("Timed: panel's float64 values -> the float32 (samples, L, 1) X and (samples,) y that Keras trains on,")
    print("copies included. Both ways produce float32 arrays; they are asserted identical (values, shape, dtype).")
    print(f"Each variant: one untimed warm-up call, then best / median of {repeats} timed calls (time.perf_counter);")
    print("ratios use the best times.")
    print("  ours      = lstm_core.windows.all_windows(panel, L)")
    print("  seed      = tutorial loop per series on a float32 copy of the series, then np.array(X).reshape(-1, L, 1)")
    print("  seed(f64) = the same loop on the float64 series, np.array(X), then .astype(float32) (Keras' cast)")
    print()
    head = f"{'case':<28}{'windows':>10}{'X MB':>8}{'ours s':>10}{'seed s':>10}{'seed(f64) s':>13}{'seed/ours':>11}{'f64/ours':>10}"
    print(head)
    print("-" * len(head))
    for r in results:
        o, s, s64 = r["ours"]["best"], r["seed"]["best"], r["seed_f64"]["best"]
        label = f"{r['n_series']} x {r['points_per_series']:,}"
        print(f"{label:<28}{r['windows']:>10,}{r['diag']['output_mb']:>8.0f}{o:>10.4f}{s:>10.4f}{s64:>13.4f}"
              f"{s / o:>10.1f}x{s64 / o:>9.1f}x")
    print("(best of the timed calls; medians: " + "; ".join(
        f"{r['n_series']}x{r['points_per_series']}: ours {r['ours']['median']:.4f}, seed {r['seed']['median']:.4f}"
        for r in results) + ")")
    print("(untimed warm-up calls: " + "; ".join(
        f"{r['n_series']}x{r['points_per_series']}: ours {r['ours']['first']:.3f}, seed {r['seed']['first']:.3f}"
        for r in results) + ")")
    print()
    print("Diagnostics (best times, seconds): where our time goes")
    head = f"{'case':<28}{'ours':>9}{'write floor':>13}{'ours f64':>10}{'+1 copy':>10}{'cast vals':>10}{'view only':>11}{'seed/floor':>12}"
    print(head)
    print("-" * len(head))
    for r in results:
        d = r["diag"]
        label = f"{r['n_series']} x {r['points_per_series']:,}"
        print(f"{label:<28}{r['ours']['best']:>9.4f}{d['floor_write_s']:>13.4f}{d['ours_float64_s']:>10.4f}"
              f"{d['ours_plus_extra_copy_s']:>10.4f}{d['cast_values_s']:>10.4f}{d['view_only_s']:>11.6f}"
              f"{r['seed']['best'] / d['floor_write_s']:>11.1f}x")
    print("  write floor = np.empty + fill of an output-sized float32 array (the least any materialising way costs)")
    print("  ours f64    = all_windows(dtype=float64): twice the bytes written")
    print("  +1 copy     = ours plus one more full copy of X (what a transpose copy would cost; with one feature")
    print(f"                gather's transpose is already contiguous, so none is made: {results[0]['diag']['transpose_is_free_for_F1']})")
    print("  cast vals   = panel.values.astype(float32) alone")
    print("  view only   = the sliding_window_view without materialising (read-only, strided)")
    print("  seed/floor  = the seed's best time over the write floor: the highest ratio any way that materialises")
    print("                the float32 X array can reach on this machine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per variant (after one warm-up)")
    args = ap.parse_args()

    if args.quick:
        cases = [("multi", 20, 600), ("long", 1, 30_000)]
    else:
        cases = [("multi", 414, 900), ("long", 1, 1_000_000)]

    results = []
    for name, n_series, length in cases:
        results.append(run_case(name, synthetic_panel(n_series, length, seed=len(results)), WINDOW, args.repeats))

    print_tables(results, args.repeats, WINDOW)

    if args.json:
        by = {r["case"]: r for r in results}
        out = {
            "ratio_multi": by["multi"]["seed"]["best"] / by["multi"]["ours"]["best"],
            "ratio_long": by["long"]["seed"]["best"] / by["long"]["ours"]["best"],
            "ratio_multi_vs_seed_f64": by["multi"]["seed_f64"]["best"] / by["multi"]["ours"]["best"],
            "ratio_long_vs_seed_f64": by["long"]["seed_f64"]["best"] / by["long"]["ours"]["best"],
            "window": WINDOW,
            "dtype": "float32",
            "timing": f"best of {args.repeats} after one warm-up call",
            "quick": args.quick,
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        }
        for case, r in by.items():
            out[f"{case}_series"] = r["n_series"]
            out[f"{case}_points_per_series"] = r["points_per_series"]
            out[f"{case}_windows"] = r["windows"]
            out[f"{case}_ours_s"] = r["ours"]["best"]
            out[f"{case}_seed_s"] = r["seed"]["best"]
            out[f"{case}_seed_f64_s"] = r["seed_f64"]["best"]
            out[f"{case}_ours_median_s"] = r["ours"]["median"]
            out[f"{case}_seed_median_s"] = r["seed"]["median"]
            out[f"{case}_ours_warmup_s"] = r["ours"]["first"]
            out[f"{case}_seed_warmup_s"] = r["seed"]["first"]
            out[f"{case}_ratio_seed_vs_write_floor"] = r["seed"]["best"] / r["diag"]["floor_write_s"]
            for k, v in r["diag"].items():
                out[f"{case}_{k}"] = v
        print(json.dumps(out))


if __name__ == "__main__":
    main()
