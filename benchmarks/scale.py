"""Benchmark: the batch flow at 1,000 / 10,000 / 100,000 series, in process and on 1 or 2 Dask workers.

Generated hourly series (daily season + trend + noise, 500 points each) are written
to local Parquet. One model (window 48, one LSTM layer of 32 units, H = 24) is
trained once on a small sample and saved to the model store; every timed run then
loads it (retrain policy `never`) and runs the flow end to end through the CLI
(`lstm-forecast run`): plan -> split -> per shard load -> validate -> prepare ->
forecast -> evaluate -> write -> commit.

seconds      the flow run, from its start to its commit (from the run's manifest);
             with --workers it includes starting the local Dask cluster
peak_rss_mb  the peak of the summed RSS of the CLI process and all its children
             (the temporary Prefect API server, Dask scheduler and workers),
             sampled every 0.1 s with psutil
Each configuration runs --repeat times (default 2: the machine may be shared); a row
reports the fastest run's seconds and the highest peak RSS of its runs.
Shards use the product defaults (`shard_size` 5,000, `shard_rows` 2.5M) unless --shard-size is given.

Usage:
    python benchmarks/scale.py               # 1k, 10k, 100k in process; 100k on 1 and 2 workers
    python benchmarks/scale.py --quick       # 200 / 1,000 / 10,000 series (shards of 500), 2 workers: a smoke run
    python benchmarks/scale.py --json        # ... and one JSON object as the last stdout line
Generated data and outputs stay under --data (default data/bench-scale) for reuse.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

POINTS = 500
MODEL = ["--freq", "h", "--horizon", "24", "--season", "24", "--set", "window=48", "--set", "model.units=[32]"]
CLI = str(Path(sys.executable).with_name("lstm-forecast"))


# --- data -------------------------------------------------------------------
def generate(path: Path, n_series: int, points: int = POINTS, seed: int = 0, chunk: int = 2000) -> Path:
    """Seasonal + trend + noise hourly series, written chunk by chunk (bounded memory)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    t = np.arange(points, dtype=np.float64)
    start = np.datetime64("2026-01-01T00:00", "ns")
    ds = start + t.astype("timedelta64[h]").astype("timedelta64[ns]")
    schema = pa.schema([("series_id", pa.string()), ("ds", pa.timestamp("ns")), ("y", pa.float64())])
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        for lo in range(0, n_series, chunk):
            k = min(chunk, n_series - lo)
            level = rng.uniform(20, 200, (k, 1))
            amp = rng.uniform(0.1, 0.4, (k, 1)) * level
            phase = rng.uniform(0, 2 * np.pi, (k, 1))
            trend = rng.normal(0, 0.002, (k, 1)) * level
            y = level + amp * np.sin(2 * np.pi * t / 24 + phase) + trend * t + rng.normal(0, 0.05, (k, points)) * level
            ids = np.repeat(np.array([f"s{i:07d}" for i in range(lo, lo + k)], dtype=object), points)
            writer.write_table(pa.table({"series_id": pa.array(ids, pa.string()),
                                         "ds": pa.array(np.tile(ds, k)), "y": pa.array(y.reshape(-1))},
                                        schema=schema))
    tmp.rename(path)
    return path


# --- running the flow -----------------------------------------------------------
class PeakRSS(threading.Thread):
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.every = psutil.Process(pid), every
        self.peak = self.peak_flow = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if p.pid == self.root.pid:
                    self.peak_flow = max(self.peak_flow, rss)
            self.peak = max(self.peak, total)
            self.done.wait(self.every)


def run_flow(data: Path, out: Path, run_id: str, extra: list[str], env: dict[str, str]) -> dict:
    args = [CLI, "run", "--input", str(data), "--output", str(out), *MODEL, "--set", f"run_id={run_id}", *extra]
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = PeakRSS(proc.pid)
    sampler.start()
    output, _ = proc.communicate()
    sampler.done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CLI and every descendant it waited for
    if proc.returncode != 0:
        raise RuntimeError(f"run {run_id} failed ({proc.returncode}):\n{output[-4000:]}")
    manifest = json.loads((out / "runs" / run_id / "manifest.json").read_text())
    started = datetime.fromisoformat(manifest["started_at"])
    finished = datetime.fromisoformat(manifest["finished_at"])
    return {
        "seconds": round((finished - started).total_seconds(), 2),
        "peak_rss_mb": round(sampler.peak / 2**20, 1),
        "flow_process_peak_rss_mb": round(sampler.peak_flow / 2**20, 1),
        "process_seconds": round(wall, 2),
        "process_cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
        "shards": manifest["shards"]["count"],
        "series_forecast": manifest["counts"]["series_forecast"],
        "prediction_rows": manifest["counts"]["prediction_rows"],
        "retrain": manifest["retrain"]["action"],
        "timings_s": manifest.get("timings_s", {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    ap.add_argument("--data", default=str(ROOT / "data" / "bench-scale"), help="where data and outputs go")
    ap.add_argument("--shard-size", type=int, default=None,
                    help="series per shard (default: the configuration's default; quick: 500)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per configuration (default 2; quick 1)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep each run's predictions and metrics")
    a = ap.parse_args(argv)

    small, mid, large = (200, 1_000, 10_000) if a.quick else (1_000, 10_000, 100_000)
    shard_size = a.shard_size or (500 if a.quick else None)
    repeat = a.repeat or (1 if a.quick else 2)
    plan = [(small, 0), (mid, 0), (large, 0), (large, 1), (large, 2)]
    if a.quick:
        plan = [(small, 0), (mid, 0), (large, 0), (large, 2)]
    root = Path(a.data)
    out = root / "out"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PREFECT_API_URL", None)  # each run starts its own temporary API, as a plain CLI run does

    t0 = time.perf_counter()
    sizes = sorted({n for n, _ in plan})
    files = {n: generate(root / f"series-{n}.parquet", n) for n in sizes}
    sample = generate(root / "train-sample.parquet", 200, seed=1)
    print(f"data ready in {time.perf_counter() - t0:.1f} s: " + ", ".join(
        f"{n:,} series ({files[n].stat().st_size / 2**20:.0f} MiB)" for n in sizes), flush=True)
    t0 = time.perf_counter()
    run_flow(sample, out, "train-model", ["--set", "retrain=always", "--set", "training.epochs=5",
                                          "--set", "training.patience=2"], env)
    print(f"model trained on 200 series and saved in {time.perf_counter() - t0:.1f} s", flush=True)

    rows, details = [], []
    runs: dict[tuple[int, int], list[dict]] = {key: [] for key in plan}
    for attempt in range(repeat):  # round-robin, so a busy spell of the machine hits every size alike
        for n, workers in plan:
            run_id = f"scale-{n}-w{workers}-{attempt}"
            extra = ["--set", "retrain=never"] + (["--set", f"shard_size={shard_size}"] if shard_size else [])
            if workers:
                extra += ["--workers", str(workers)]
            r = run_flow(files[n], out, run_id, extra, env)
            assert r["retrain"] == "load" and r["series_forecast"] == n, r
            runs[(n, workers)].append(r)
            print(f"  {n:>7,} series, {workers} worker(s): {r['seconds']:8.1f} s, peak RSS {r['peak_rss_mb']:8.0f} MB "
                  f"({r['shards']} shards)", flush=True)
            if not a.keep_outputs:
                for table in ("predictions", "metrics", "quarantine"):
                    shutil.rmtree(out / table / f"run={run_id}", ignore_errors=True)
    for (n, workers), rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        rows.append({"series": n, "workers": workers, "seconds": best["seconds"],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)})
        details.append({"series": n, "workers": workers, "all_seconds": [r["seconds"] for r in rs],
                        "all_peak_rss_mb": [r["peak_rss_mb"] for r in rs],
                        **{k: v for k, v in best.items() if k not in ("seconds", "peak_rss_mb")}})

    def row(n, w):
        return next(r for r in rows if r["series"] == n and r["workers"] == w)

    time_ratio = row(large, 0)["seconds"] / row(mid, 0)["seconds"]
    rss_ratio = row(large, 0)["peak_rss_mb"] / row(mid, 0)["peak_rss_mb"]
    print()
    shards_note = f"shard_size {shard_size:,}" if shard_size else "default shard_size"
    print(f"batch flow, {POINTS} points per series, window 48, LSTM 32, H 24, {shards_note}; best of {repeat}; "
          f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    head = f"{'series':>9} {'workers':>8} {'seconds':>9} {'peak RSS MB':>12} {'flow proc MB':>13} {'shards':>7}"
    print(head)
    print("-" * len(head))
    for r, d in zip(rows, details):
        print(f"{r['series']:>9,} {r['workers']:>8} {r['seconds']:>9.1f} {r['peak_rss_mb']:>12.0f} "
              f"{d['flow_process_peak_rss_mb']:>13.0f} {d['shards']:>7}")
    print(f"time ratio {large:,} / {mid:,} series (in process): {time_ratio:.2f} (target <= 11)")
    print(f"peak RSS ratio {large:,} / {mid:,} series (in process): {rss_ratio:.2f} (target <= 1.5)")
    if not a.quick:
        best = min(row(large, w)["seconds"] for w in (0, 1, 2))
        print(f"{large:,} series forecast and written in {best / 60:.1f} min at best (target < 10 min)")
    if a.json:
        print(json.dumps({
            "rows": rows,
            "time_ratio_100k_over_10k": round(time_ratio, 3),
            "rss_ratio_100k_over_10k": round(rss_ratio, 3),
            "quick": a.quick,
            "shard_size": shard_size,
            "repeat": repeat,
            "points": POINTS,
            "cpus": os.cpu_count(),
            "details": details,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
