"""`lstm-forecast`: run the batch flow by hand, or the bundled demo."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import flows  # noqa: F401 - sets logging and analytics environment before Prefect loads

DEMO_DIR = Path("data/demo")


def _common_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--config", help="YAML configuration file")
    p.add_argument("--input", dest="input_url", required=False, help="input Parquet URL (path, s3://, any fsspec URL)")
    p.add_argument("--output", dest="output_url", required=False, help="output URL for predictions, metrics, manifests")
    p.add_argument("--freq", help="pandas frequency of the series, e.g. h, D, W-MON")
    p.add_argument("--horizon", type=int, help="steps to forecast")
    p.add_argument("--season", dest="season_length", type=int, help="season length in steps (24 for hourly)")
    p.add_argument("--max-train-minutes", type=float, help="wall-clock training budget")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run the tasks on a local Dask cluster of N worker processes")
    p.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                   help="run the tasks on an existing Dask cluster (its scheduler's address)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting, dotted for sections: --set training.epochs=20 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-forecast", description="Batch LSTM forecasting of many series.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one manual flow run", description="Run the batch-forecast flow once.")
    _common_flags(run, required=True)
    demo = sub.add_parser("demo", help="run the flow on the bundled sample dataset (local, no server)",
                          description="Write a small sample dataset under ./data/demo and forecast it.")
    demo.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    return parser


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags that were given, as nested settings (flags win over file and environment)."""
    out: dict[str, Any] = {}
    for key in ("input_url", "output_url", "freq", "horizon", "season_length", "workers", "dask_address"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    if getattr(args, "max_train_minutes", None) is not None:
        out["training"] = {"max_train_minutes": args.max_train_minutes}
    return out


def _resolve(config_path: str | None, settings: dict[str, Any], sets: list[str]):
    from lstm_core.config import load_config

    config = load_config(config_path, overrides=settings, sets=sets)
    # Hand the flow the resolved, validated settings (not secrets: those stay in file/env).
    resolved = config.model_dump(mode="json", exclude={"storage_options"}, exclude_defaults=True)
    return config, resolved


def cmd_run(args: argparse.Namespace) -> int:
    _, resolved = _resolve(args.config, settings_from_args(args), args.sets)
    from flows.batch_forecast import batch_forecast

    quiet_console_tracebacks()
    manifest = batch_forecast(config_path=args.config, settings=resolved)
    _report(manifest)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo_data import write_demo_dataset

    data = write_demo_dataset(DEMO_DIR / "series.parquet")
    settings = {
        "input_url": str(data), "output_url": str(DEMO_DIR / "output"), "freq": "h", "horizon": 24,
        "season_length": 24, "window": 48, "training": {"epochs": 15, "patience": 4},
    }
    _, resolved = _resolve(None, settings, args.sets)
    from flows.batch_forecast import batch_forecast

    quiet_console_tracebacks()
    print(f"demo dataset: {data} (24 hourly series, 4 weeks)")
    manifest = batch_forecast(config_path=None, settings=resolved)
    _report(manifest)
    out = DEMO_DIR / "output"
    print(f"outputs under {out}/: predictions/, metrics/, quarantine/, runs/{manifest['run_id']}/manifest.json, models/")
    print(f"read them with: python -c \"import pandas as pd; print(pd.read_parquet('{out}/predictions'))\"")
    return 0


class _NoTraceback(logging.Filter):
    """Console shows the one-line reason; full tracebacks stay in the Prefect API logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            record.exc_info, record.exc_text = None, None
        if isinstance(record.msg, str) and "Traceback (most recent call last)" in record.msg:
            record.msg = record.msg.split("Traceback (most recent call last)")[0].rstrip()
        return True


def quiet_console_tracebacks() -> None:
    if os.environ.get("LSTM_FORECAST_DEBUG"):
        return
    seen = set()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler) not in seen:
                seen.add(id(handler))
                handler.addFilter(_NoTraceback())


def _report(manifest: dict[str, Any]) -> None:
    counts = manifest.get("counts", {})
    metrics = manifest.get("overall_metrics", {})
    print(f"run {manifest['run_id']}: {manifest['status']}; model {manifest.get('model_version')} "
          f"({manifest.get('retrain', {}).get('action')}: {manifest.get('retrain', {}).get('reason')})")
    print(f"series forecast {counts.get('series_forecast')}, skipped {counts.get('series_skipped')}; "
          f"prediction rows {counts.get('prediction_rows')}")
    for model, values in metrics.items():
        name = "lstm" if model == manifest.get("model_version") else model
        print(f"  holdout {name:>15}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(values.items())))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lstm_core.config import ConfigError
    from lstm_core.errors import LstmForecastError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return {"run": cmd_run, "demo": cmd_demo}[args.command](args)
    except (ConfigError, LstmForecastError) as exc:
        print(f"lstm-forecast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstm-forecast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, no traceback, for any other failure
        from lstm_core.config import redact_url  # noqa: F401

        print(f"lstm-forecast: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
