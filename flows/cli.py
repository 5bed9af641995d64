"""`lstm-forecast`: run the batch flow by hand, serve it as scheduled and manual deployments, tune it, or the demo.

The parser, the commands and the exit-code map (`main`: 0 done, 1 anything else, 2 bad configuration or input
and known failures, 3 the run id already running, 75 storage unreachable, 130/143 stopped). What the process
prints is in flows/console.py, the deployments served in flows/serve.py.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import sys
from pathlib import Path
from typing import Any

import flows  # noqa: F401 - sets logging and analytics environment before Prefect loads
from flows.console import (
    RunNameFormatter,
    ephemeral_api_failure,
    exit_now,
    quiet_console_tracebacks,
    quiet_native_startup,
    report_run,
    report_tune,
    start_temporary_api,
)

DEMO_DIR = Path("data/demo")
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: storage could not be reached; retry later
DEFAULT_CRON = "0 2 * * *"


def _default(name: str) -> Any:
    """A setting's default, for help texts (the flags themselves default to 'not given': file and environment
    may set the value, flags override them)."""
    from lstm_core.config import ForecastConfig, TrainingConfig

    fields = {**ForecastConfig.model_fields, **{f"training.{k}": v for k, v in TrainingConfig.model_fields.items()}}
    return fields[name].default


def _common_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--config", help="YAML configuration file")
    p.add_argument("--input", dest="input_url", required=False,
                   help=f"input Parquet or CSV URL (path, s3://, any fsspec URL; default {_default('input_url')})")
    p.add_argument("--output", dest="output_url", required=False,
                   help=f"output URL for predictions, metrics, manifests (default {_default('output_url')})")
    p.add_argument("--freq", help="pandas frequency of the series, e.g. h, D, W-MON (default: inferred from the data)")
    p.add_argument("--horizon", type=int, help=f"steps to forecast (default {_default('horizon')})")
    p.add_argument("--season", dest="season_length", type=int,
                   help="season length in steps (default from the frequency: hourly 24, daily 7, weekly 52, ...)")
    p.add_argument("--max-train-minutes", type=float,
                   help="wall-clock training budget; the best weights so far are kept (default: none)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run the tasks on a local Dask cluster of N worker processes")
    p.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                   help="run the tasks on an existing Dask cluster (its scheduler's address)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting, dotted for sections: --set training.epochs=20 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The `lstm-forecast` parser: `run`, `serve`, `tune` and `demo`, each with its flags and help."""
    parser = argparse.ArgumentParser(prog="lstm-forecast", description="Batch LSTM forecasting of many series.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('lstm-forecast')}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one manual flow run", description="Run the batch-forecast flow once.")
    _common_flags(run, required=True)
    run.add_argument("--as-of", dest="as_of", metavar="ISO_TIMESTAMP",
                     help="run as the job would have run at this instant (e.g. 2024-03-07T02:00Z): only rows with "
                     "time <= it are read; the run is named asof-<instant>-<hash> (a replay, or the backfill of a "
                     "missed night)")
    serve = sub.add_parser(
        "serve", help="serve the flow as deployments 'scheduled' (cron) and 'manual' until stopped",
        description="Serve the batch-forecast flow from this process as two deployments: 'scheduled', run by "
                    "its cron schedule, and 'manual', run on demand (prefect deployment run "
                    "'batch-forecast/manual', or the Prefect UI). Needs PREFECT_API_URL pointing at a server. "
                    "The flags become the deployments' parameters; the config file is re-read at each run.")
    _common_flags(serve, required=False)
    serve.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule of the 'scheduled' deployment "
                       f"(default {DEFAULT_CRON!r}: every night at 02:00)")
    serve.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule (default UTC)")
    serve.add_argument("--allow-override", dest="allow_overrides", action="append", default=[], metavar="SETTING",
                       help="let a run of the deployments change this protected setting (config_path, a *_url "
                       "setting, dask_address or storage_options; repeatable). Without it they are fixed here")
    tune = sub.add_parser(
        "tune", help="search for better model settings on backtests, within a budget (an Optuna study)",
        description="Run or resume the tuning study --study on the input's history before its final window: each "
                    "trial trains with settings drawn from tuning.space and is scored by the pooled backtest MASE. "
                    "Results under <output>/tuning/study=<name>/: trials.parquet, best.yaml (for run --config), "
                    "objective.png; a nightly run with tuned: latest uses the newest best settings.")
    _common_flags(tune, required=True)
    from lstm_core.config import TuningConfig

    tuning_defaults = {k: v.default for k, v in TuningConfig.model_fields.items()}
    tune.add_argument("--study", help=f"study name; rerunning a name resumes its study "
                      f"(default {tuning_defaults['study']!r})")
    tune.add_argument("--trials", type=int, metavar="N",
                      help=f"trials to run now (default {tuning_defaults['trials']})")
    tune.add_argument("--minutes", type=float, metavar="M",
                      help="wall-clock budget of this tune, in minutes; the trial running then stops training and "
                      f"is scored (default: {tuning_defaults['minutes'] or 'none'})")
    promote = sub.add_parser("promote", help="make a saved model version the champion its model key serves",
                             description="Point the champion of the version's model key at VERSION (checked like "
                                         "any model it loads): the schedule serves it from the next run.")
    promote.add_argument("version", help="the model version (a folder under <output>/models/<key>/)")
    promote.add_argument("--config", help="YAML configuration file (for the output URL and storage options)")
    promote.add_argument("--output", dest="output_url", help="output URL whose models/ hold the version")
    promote.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    demo = sub.add_parser("demo", help="run the flow on the bundled sample dataset (local, no server)",
                          description="Write a small sample dataset under ./data/demo and forecast it.")
    demo.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    return parser


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags that were given, as nested settings (flags win over file and environment)."""
    out: dict[str, Any] = {}
    for key in ("input_url", "output_url", "freq", "horizon", "season_length", "workers", "dask_address", "as_of"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    if getattr(args, "max_train_minutes", None) is not None:
        out["training"] = {"max_train_minutes": args.max_train_minutes}
    tuning = {key: getattr(args, key) for key in ("study", "trials", "minutes") if getattr(args, key, None) is not None}
    if tuning:
        out["tuning"] = tuning
    return out


_SECRETS: set[str] = set()  # credential values seen by this process, scrubbed from what it prints


def _resolve(config_path: str | None, settings: dict[str, Any], sets: list[str]):
    """The configuration, built and validated once: defaults <- file <- environment <- flags <- --set.

    The flow called in this process runs with this object (flows/handoff.py); its credentials never go
    into the process environment nor become flow parameters. Its values are remembered to be scrubbed
    from what the CLI prints.
    """
    from lstm_core.config import load_config
    from lstm_core.secrets import secret_values

    config = load_config(config_path, overrides=settings, sets=sets)
    _SECRETS.update(secret_values(config.storage_options, config.urls()))
    return config


def check_input(config) -> None:
    """Fail fast, before TensorFlow is imported or a Prefect server started (about a second): an input that is
    missing or unreadable (list it and read one file's schema) or lacks a required or declared column
    (covariates, group column: exit 2, naming the setting), an output location that is a file or cannot be
    written (exit 2), and storage that cannot be reached (StorageError, exit 75: retry later)."""
    from lstm_core.storage import check_input as check
    from lstm_core.storage import check_output

    declared = {col: role for role in ("historic_covariates", "future_covariates", "static_covariates")
                for col in getattr(config, role)}
    if config.group_column:
        declared[config.group_column] = "group_column"
    check(config.location(config.input_url), config.input_format,
          required=[config.id_column, config.time_column, config.target_column], delimiter=config.delimiter,
          declared=declared)
    # where the run writes: a file there, or a folder it cannot write, is refused now, not after training
    check_output(config.location(config.output_url), "output_url")


def _checked_flow(args: argparse.Namespace, flow_name: str):
    """(the flow, the run's configuration): settings and input checked first (a missing input fails in about
    a second, before TensorFlow is imported), then the flow imported quietly and the temporary Prefect API
    started (when no PREFECT_API_URL is set)."""
    config = _resolve(args.config, settings_from_args(args), args.sets)
    check_input(config)
    with quiet_native_startup():
        if flow_name == "tune":
            from flows.tune import tune as flow
        else:
            from flows.batch_forecast import batch_forecast as flow
    quiet_console_tracebacks()
    start_temporary_api()
    return flow, config


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: one batch-forecast flow run with the checked configuration, then its summary; 0 when committed."""
    from flows.handoff import handing

    batch_forecast, config = _checked_flow(args, "batch-forecast")
    with handing(config, args.config) as parameters:  # the flow runs with this configuration, as checked
        manifest = batch_forecast(**parameters)
    report_run(manifest)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """`tune`: run or resume the tuning study with the checked configuration, then its summary."""
    from flows.handoff import handing

    tune, config = _checked_flow(args, "tune")
    with handing(config, args.config) as parameters:
        summary = tune(**parameters)
    report_tune(summary)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """`lstm-forecast promote VERSION`: the one way besides the promotion gate to change a champion."""
    config = _resolve(args.config, {"output_url": args.output_url} if args.output_url else {}, args.sets)
    with quiet_native_startup():
        from lstm_core.model_store import ModelStore, promote

    key, previous = promote(ModelStore.of(config).location, args.version)
    print(f"model {args.version} is the champion of key {key} (was {previous or 'none'})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: the two deployments, their parameters checked first, served until Ctrl-C or SIGTERM (0)."""
    from flows.serve import serve, serve_parameters

    parameters = serve_parameters(args.config, settings_from_args(args), args.sets, args.allow_overrides)
    serve(parameters, args.cron, args.timezone)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`demo`: write the bundled sample dataset under ./data/demo and forecast it."""
    from flows.demo_data import write_demo_dataset

    data = write_demo_dataset(DEMO_DIR / "series.parquet")
    settings = {
        "input_url": str(data), "output_url": str(DEMO_DIR / "output"), "freq": "h", "horizon": 24,
        "season_length": 24, "window": 48, "training": {"epochs": 30, "patience": 6},
    }
    config = _resolve(None, settings, args.sets)
    with quiet_native_startup():
        from flows.batch_forecast import batch_forecast
    from flows.handoff import handing

    quiet_console_tracebacks()
    start_temporary_api()
    print(f"demo dataset: {data} (24 hourly series, 4 weeks)")
    with handing(config) as parameters:
        manifest = batch_forecast(**parameters)
    report_run(manifest)
    out = DEMO_DIR / "output"
    print(f"outputs under {out}/: predictions/, metrics/, quarantine/, runs/{manifest['run_id']}/manifest.json, "
          "models/")
    python = os.path.relpath(sys.executable) if sys.executable else "python"  # the environment it ran in
    print(f"read the committed runs with: {python} -c \"from lstm_core.outputs import read_committed; "
          f"print(read_committed('{out}', 'predictions'))\"")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console script: parse `argv`, run the command, and map its outcome to the exit code (module doc);
    a failure prints one line, `lstm-forecast: error: <reason>`, with credentials scrubbed."""
    args = build_parser().parse_args(argv)
    from lstm_core.config import ConfigError
    from lstm_core.errors import LstmForecastError, RunLockedError, StorageError

    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RunNameFormatter())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from lstm_core.secrets import scrub, secret_values

    def fail(message: str, code: int) -> int:
        line = message.strip().splitlines()[0] if message.strip() else "failed"
        print(f"lstm-forecast: error: {scrub(line, _SECRETS | secret_values())}", file=sys.stderr)
        return code

    from lstm_core.interrupt import handle_signals

    command = {"run": cmd_run, "serve": cmd_serve, "tune": cmd_tune, "demo": cmd_demo,
               "promote": cmd_promote}[args.command]
    # run, tune and demo stop on the first Ctrl-C or SIGTERM within seconds (exit 130 or 143); serve keeps its
    # own handling (a clean stop, exit 0)
    stopping = handle_signals() if args.command != "serve" else contextlib.nullcontext()
    try:
        with stopping:
            return command(args)
    except RunLockedError as exc:
        return fail(str(exc), 3)
    except StorageError as exc:
        # storage that cannot be reached (network, 5xx, throttling, after the retries) is not bad input: a
        # scheduler should retry later; a refused permission is a configuration problem (2)
        return fail(str(exc), EXIT_TEMPFAIL if exc.transient else 2)
    except (ConfigError, LstmForecastError) as exc:
        return fail(str(exc), 2)
    except KeyboardInterrupt as exc:  # lstm_core.interrupt.RunInterrupted, or a Ctrl-C before it was armed
        name = str(exc) or "interrupted"
        print(f"lstm-forecast: {name}: stopped without committing (a run that had started is marked failed, "
              f"reason 'interrupted')", file=sys.stderr)
        code = getattr(exc, "exit_code", 130)
        if argv is None:  # the console script: leave within seconds, as promised
            exit_now(code)
        return code
    except Exception as exc:  # noqa: BLE001 - one line, no traceback, for any other failure
        if "ephemeral Prefect API server" in str(exc):
            return fail(ephemeral_api_failure(), 2)
        return fail(f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
