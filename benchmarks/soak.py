"""Soak: consecutive batch runs against S3 (moto) behind a proxy that fails a share of requests.

Starts a moto S3 server on 127.0.0.1 and the fault-injecting proxy (tests/faultproxy.py) in
front of it, writes a small dataset, then runs the `batch-forecast` flow `--runs` times in a row
(run ids soak-00, soak-01, ...) with every storage request going through the proxy, which fails
`--fault-rate` of them (500 InternalError, 503 SlowDown, reset connections, replies lost after
the write was applied). Retrain policy `auto`: the first run trains a tiny model, later runs load
it. Then, with a client straight to moto, it reads what a careful downstream reader trusts
(runs whose manifest says succeeded) and counts rows.

Prints runs succeeded, faults injected, rows expected and found, duplicates. Target: all runs
succeed, rows_lost = 0, rows_duplicated = 0.

Usage:
    python benchmarks/soak.py                 # 20 runs, 10% of requests failing (a few minutes)
    python benchmarks/soak.py --runs 5        # a quicker look
    python benchmarks/soak.py --json          # ... and one JSON object as the last stdout line:
                                              # runs, succeeded, faults_injected, rows_lost, rows_duplicated
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the table, not every task's log line
for _k, _v in {"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak", "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(_k, _v)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_ENDPOINT_URL_S3", None)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HORIZON = 12
SETTINGS = {
    "freq": "h", "horizon": HORIZON, "season_length": 24, "window": 24,
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64},
    "retrain": "auto",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(n_series: int, length: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for i in range(n_series):
        level = 10.0 * (i + 1)
        y = level + 0.3 * level * np.sin(2 * np.pi * t / 24 + i) + rng.normal(0, 0.03 * level, length)
        frames.append(pd.DataFrame({"series_id": f"s{i:03d}",
                                    "ds": pd.date_range("2026-01-01", periods=length, freq="h"), "y": y}))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--fault-rate", type=float, default=0.10, help="share of storage requests that fail")
    ap.add_argument("--series", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2026, help="seed of the proxy's fault decisions")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    args = ap.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import s3fs
    from moto.server import ThreadedMotoServer

    from flows.batch_forecast import batch_forecast
    from lstm_core.outputs import committed_runs, read_committed
    from tests.faultproxy import FaultProxy

    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    upstream = f"http://127.0.0.1:{port}"
    direct = s3fs.S3FileSystem(endpoint_url=upstream, skip_instance_cache=True, use_listings_cache=False)
    direct.mkdir("soak")
    buf = io.BytesIO()
    _dataset(args.series, 24 * 7).to_parquet(buf, index=False)
    direct.pipe_file("soak/input/series.parquet", buf.getvalue())

    proxy = FaultProxy(upstream=upstream, rate=args.fault_rate, seed=args.seed,
                       kinds=("500", "503", "reset", "lost_reply")).start()
    settings = {**SETTINGS, "input_url": "s3://soak/input/series.parquet", "output_url": "s3://soak/output",
                "storage_options": {"endpoint_url": proxy.url}}
    results = []
    print(f"{'run':>8} {'status':>10} {'retrain':>8} {'faults':>7} {'seconds':>8}  reason")
    t_all = time.perf_counter()
    for i in range(args.runs):
        run_id = f"soak-{i:02d}"
        before = proxy.faults_injected
        t0 = time.perf_counter()
        try:
            manifest = batch_forecast(settings={**settings, "run_id": run_id})
            status, action, reason = manifest["status"], manifest["retrain"]["action"], ""
        except Exception as exc:  # noqa: BLE001 - a failed run is a result here
            status, action, reason = "failed", "-", f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        results.append((run_id, status))
        print(f"{run_id:>8} {status:>10} {action:>8} {proxy.faults_injected - before:>7} "
              f"{time.perf_counter() - t0:>8.1f}  {reason}", flush=True)
    elapsed = time.perf_counter() - t_all
    stats = proxy.summary()
    proxy.stop()

    # What a careful reader sees: only runs whose manifest says succeeded, read straight from moto.
    opts = {"endpoint_url": upstream}
    trusted = set(committed_runs("s3://soak/output", opts))
    preds = read_committed("s3://soak/output", "predictions", opts)
    expected_per_run = args.series * HORIZON
    rows_expected = expected_per_run * args.runs
    rows_found = int(len(preds))
    rows_lost = rows_duplicated = 0
    for run_id, _ in results:
        part = preds[preds["run_id"] == run_id] if len(preds) else preds
        unique = int(len(part.drop_duplicates(["series_id", "step"]))) if len(part) else 0
        rows_lost += max(0, expected_per_run - unique)
        rows_duplicated += int(len(part)) - unique
    succeeded = sum(1 for run_id, status in results if status == "succeeded" and run_id in trusted)
    moto.stop()

    print()
    print(f"runs                 {args.runs}")
    print(f"runs succeeded       {succeeded}")
    print(f"requests             {stats['requests']}")
    print(f"faults injected      {stats['faults_injected']} ({stats['faults_injected'] / max(stats['requests'], 1):.1%}"
          f" of requests; {', '.join(f'{k}: {v}' for k, v in sorted(stats['by_kind'].items()))})")
    print(f"rows expected        {rows_expected} ({args.series} series x {HORIZON} steps x {args.runs} runs)")
    print(f"rows found           {rows_found}")
    print(f"rows lost            {rows_lost}")
    print(f"rows duplicated      {rows_duplicated}")
    print(f"wall time            {elapsed:.0f} s")
    if args.json:
        print(json.dumps({"runs": args.runs, "succeeded": succeeded, "faults_injected": stats["faults_injected"],
                          "rows_lost": rows_lost, "rows_duplicated": rows_duplicated}))


if __name__ == "__main__":
    main()
