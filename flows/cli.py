"""`lstm-forecast`: run the batch flow by hand, serve it as scheduled and manual deployments, tune it, or the demo."""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import flows  # noqa: F401 - sets logging and analytics environment before Prefect loads

DEMO_DIR = Path("data/demo")
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: storage could not be reached; retry later
DEFAULT_CRON = "0 2 * * *"
SERVE_TAGS = ["lstm-forecast", "batch-forecast"]


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
    parser = argparse.ArgumentParser(prog="lstm-forecast", description="Batch LSTM forecasting of many series.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {importlib.metadata.version('lstm-forecast')}")
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


@contextlib.contextmanager
def quiet_native_startup():
    """Silence what TensorFlow's native code prints to file descriptor 2 while it loads.

    TF_CPP_MIN_LOG_LEVEL does not reach the lines written before absl logging is initialised ("All log
    messages before absl::InitializeLog() ...", the oneDNN notice); they would open every run's console log.
    Python errors raised by the import still propagate; LSTM_FORECAST_DEBUG=1 keeps the lines.
    """
    if os.environ.get("LSTM_FORECAST_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401 - loaded here, once, with its start-up lines discarded
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    yield


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


def start_temporary_api() -> None:
    """Without PREFECT_API_URL, start the temporary local Prefect API now, with SIGINT blocked in it.

    Prefect would start it on the flow's first call, in this terminal's process group: a Ctrl-C (which the
    terminal sends to the whole group) then stopped the API at once while the run went on, and every later
    call to it failed (`ConnectError`) or waited (the event drain at exit). Started here it is the same
    server the flow's client uses (one per process), it ignores the terminal's Ctrl-C, and this process
    stops it in order when it exits (Prefect's own exit hook: SIGTERM, then up to 5 s)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    from lstm_core.interrupt import sigint_blocked

    with sigint_blocked():
        SubprocessASGIServer().start()  # registers its stop as an exit hook
    import atexit

    atexit.register(drain_prefect_workers)  # registered after it, so it runs before it: while the API is up


DRAIN_SECONDS = 3.0


def drain_prefect_workers(timeout: float = DRAIN_SECONDS) -> None:
    """Send what Prefect's background workers still hold (log lines, events) to the API, waiting at most
    `timeout` seconds for each kind. Called at exit before the temporary API stops: afterwards the logging
    module's own shutdown found the API gone and waited 5 s, and the event drain retried for minutes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a drain that fails must not hide the run's own outcome
            worker.drain_all(timeout=timeout)


def cmd_run(args: argparse.Namespace) -> int:
    from flows.handoff import handing

    batch_forecast, config = _checked_flow(args, "batch-forecast")
    with handing(config, args.config) as parameters:  # the flow runs with this configuration, as checked
        manifest = batch_forecast(**parameters)
    _report(manifest)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from flows.handoff import handing

    tune, config = _checked_flow(args, "tune")
    with handing(config, args.config) as parameters:
        summary = tune(**parameters)
    best = summary.best
    print(f"study {summary.study}: {summary.trials} trials ("
          + ", ".join(f"{n} {s}" for s, n in summary.states.items())
          + f"), {len(summary.new_trials)} new, stopped by the {summary.stopped_by} budget")
    if best:
        print(f"best: trial {best.trial}, pooled backtest MASE {best.objective:.4f}: {best.params}")
        print(f"best settings: {summary.urls.get('best_yaml')} (lstm-forecast run --config ..., or tuned: latest)")
    else:
        print("no trial completed yet: no best settings")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """`lstm-forecast promote VERSION`: the one way besides the promotion gate to change a champion."""
    config = _resolve(args.config, {"output_url": args.output_url} if args.output_url else {}, args.sets)
    with quiet_native_startup():
        from lstm_core.model_store import ModelStore, promote

    key, previous = promote(ModelStore.of(config).location, args.version)
    print(f"model {args.version} is the champion of key {key} (was {previous or 'none'})")
    return 0


def serve_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The deployments' parameters: the config file's absolute path and the flags, checked now."""
    from lstm_core.config import ConfigError, load_config, merge_settings, parse_sets

    config_path = str(Path(args.config).resolve()) if args.config else None
    settings = merge_settings(settings_from_args(args), parse_sets(args.sets))
    config = load_config(config_path, overrides=settings)
    if config.run_id:
        raise ConfigError("setting 'run_id': not allowed when serving: scheduled runs derive theirs from the "
                          "slot, manual ones get a fresh one unless the run passes settings={\"run_id\": ...}")
    from pydantic import ValidationError

    from flows.parameters import PROTECTED, RunSettings
    from lstm_core.config import format_validation_error
    from lstm_core.secrets import has_credentials

    # The deployments' parameters are stored by the Prefect server: no secret may be one.
    try:
        RunSettings.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc).replace("invalid configuration", "invalid parameter")) from None
    for name in config.url_settings():
        if has_credentials(settings.get(name)):
            raise ConfigError(f"setting {name!r}: its URL carries credentials, and deployment parameters are "
                              f"stored by the Prefect server: put the URL in the config file or the environment")
    unknown = [name for name in args.allow_overrides if name not in PROTECTED]
    if unknown:
        raise ConfigError(f"--allow-override {unknown[0]!r}: not a protected setting (one of {', '.join(PROTECTED)}); "
                          f"other settings may be changed by any run")
    return {"config_path": config_path, "settings": settings, "allow_overrides": list(args.allow_overrides)}


def build_deployments(args: argparse.Namespace, parameters: dict[str, Any]):
    """`batch-forecast/scheduled` (cron) and `batch-forecast/manual` (no schedule), one run at a time each."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron
    from pydantic import ValidationError

    from lstm_core.config import ConfigError

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone {args.timezone!r}: not an IANA time zone (e.g. UTC, Europe/Paris)") from None
    try:
        schedule = Cron(args.cron, timezone=args.timezone)
    except (ValidationError, ValueError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"--cron {args.cron!r}: {detail}") from None
    # ENQUEUE: a run that arrives while another of the same deployment is running waits for it, so a
    # slow night or a re-run slot delays the next run instead of dropping it or writing beside it.
    limit = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    version = importlib.metadata.version("lstm-forecast")
    with quiet_native_startup():  # imports TensorFlow: after the cheap checks
        from flows.batch_forecast import batch_forecast

    common = {"parameters": parameters, "version": version, "concurrency_limit": limit}
    scheduled = batch_forecast.to_deployment(
        "scheduled", schedules=[schedule], tags=[*SERVE_TAGS, "scheduled"],
        description=f"Nightly batch forecast on cron {args.cron!r} ({args.timezone}); each slot writes run "
                    "sched-<UTC slot>-<config hash>, so a re-run slot replaces its own outputs.", **common)
    manual = batch_forecast.to_deployment(
        "manual", tags=[*SERVE_TAGS, "manual"],
        description="Batch forecast on demand. Pass only what changes: settings are merged over these defaults; "
                    "settings.run_id names (or replaces) a run.", **common)
    return scheduled, manual


def next_run(cron: str, timezone: str, after=None) -> str:
    """The next time the cron schedule fires after `after` (default now), ISO 8601 in its time zone,
    as the Prefect server schedules it (daylight-saving switches included)."""
    import asyncio
    from datetime import datetime, timedelta

    from prefect.server.schemas.schedules import CronSchedule

    start = (after or datetime.now(ZoneInfo(timezone))) + timedelta(seconds=1)  # strictly after
    dates = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=1, start=start))
    return dates[0].astimezone(ZoneInfo(timezone)).isoformat()


def cmd_serve(args: argparse.Namespace) -> int:
    parameters = serve_parameters(args)
    deployments = build_deployments(args, parameters)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("lstm-forecast: note: PREFECT_API_URL is not set; serving against a temporary local API that "
              "stops with this process: the schedule and its run history live only as long as it does",
              file=sys.stderr)
    print(f"lstm-forecast: next scheduled run {next_run(args.cron, args.timezone)} ({args.cron!r}, {args.timezone})",
          file=sys.stderr)
    quiet_console_tracebacks()
    serve_until_stopped(deployments)
    return 0


def serve_until_stopped(deployments) -> None:
    """`prefect.serve` with a SIGTERM that stops cleanly.

    Prefect's runner answers SIGTERM by calling its synchronous `stop()` from inside its own event loop,
    which leaves the `astop` coroutine never awaited (a RuntimeWarning on every shutdown by a process
    manager). Raising `TerminationSignal` instead unwinds `runner.start()` like Ctrl-C does: the loop
    cancels the runner's tasks and the temporary API, if any, stops.
    """
    import asyncio
    import signal

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            raise TerminationSignal(signal.SIGTERM)

    # limit=1: this process runs one flow run at a time, across both deployments.
    runner = _Runner(pause_on_shutdown=False, limit=1)
    for deployment in deployments:
        runner.add_deployment(deployment)
    names = ", ".join(f"'batch-forecast/{d.name}'" for d in deployments)
    print(f"lstm-forecast: serving {names}; stop with Ctrl-C or SIGTERM", file=sys.stderr)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        reason = "SIGTERM" if isinstance(exc, TerminationSignal) else "interrupt"
        print(f"lstm-forecast: serve stopped ({reason})", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
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
    _report(manifest)
    out = DEMO_DIR / "output"
    print(f"outputs under {out}/: predictions/, metrics/, quarantine/, runs/{manifest['run_id']}/manifest.json, models/")
    python = os.path.relpath(sys.executable) if sys.executable else "python"  # the environment it ran in
    print(f"read the committed runs with: {python} -c \"from lstm_core.outputs import read_committed; "
          f"print(read_committed('{out}', 'predictions'))\"")
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
    if manifest.get("status") == "superseded":  # a late scheduled slot: the newer slot's run does the work
        print(f"run {manifest['run_id']}: superseded; {manifest.get('reason')}; nothing written")
        return
    counts = manifest.get("counts", {})
    metrics = manifest.get("overall_metrics", {})
    print(f"run {manifest['run_id']}: {manifest['status']}; model {manifest.get('model_version')} "
          f"({manifest.get('retrain', {}).get('action')}: {manifest.get('retrain', {}).get('reason')})")
    print(f"series forecast {counts.get('series_forecast')}, skipped {counts.get('series_skipped')}; "
          f"prediction rows {counts.get('prediction_rows')}")
    by_model = counts.get("series_by_model") or {}
    if by_model:  # nothing silent: which model served how many series
        print("series per serving model: " + ", ".join(f"{k} {v}" for k, v in by_model.items()))
    skipped = (manifest.get("schedule") or {}).get("skipped_slots") or []
    if skipped:
        print(f"caught up on {len(skipped)} missed slot(s): {', '.join(skipped)}")
    revisions = manifest.get("revisions") or {}
    if revisions.get("previous_run_id") and revisions.get("p50") is not None:
        print(f"revisions against run {revisions['previous_run_id']}: |revision| median {revisions['p50']:.4g}, "
              f"95th percentile {revisions['p95']:.4g} (naive-MAE units)")
    windows = (manifest.get("backtest") or {}).get("windows")
    for model, values in metrics.items():  # pooled over every backtest window, not the last one alone
        name = "lstm" if model == manifest.get("model_version") else model
        print(f"  backtest ({windows} windows) {name:>15}: "
              + ", ".join(f"{k} {v:.4g}" for k, v in sorted(values.items())))


class RunNameFormatter(logging.Formatter):
    """`LEVEL logger: message`, with the Prefect task or flow run's name when the record has one, so a
    console line says which task finished (`Task run 'forecast-79a' - Finished in state Completed()`)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for attr, kind in (("task_run_name", "Task run"), ("flow_run_name", "Flow run")):
            name = getattr(record, attr, None)
            if name:
                prefix = f"{record.levelname} {record.name}: "
                return line.replace(prefix, f"{prefix}{kind} {name!r} - ", 1)
        return line


def ephemeral_api_failure() -> str:
    """The one line for a temporary Prefect API that did not come up."""
    waited = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "?")
    return (f"the temporary local Prefect API did not start within {waited} s "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); the machine may be overloaded: raise that "
            "setting, or start a server and set PREFECT_API_URL")


def _exit_now(code: int) -> None:
    """End the process with `code` after the exit hooks (Prefect's: the event drain and the temporary API's
    ordered stop) and flushing the console, skipping the interpreter's teardown, where TensorFlow's native
    destructors take 5 to 7 s after an interrupted training (measured; a stopped run must exit within 10 s)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
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
            _exit_now(code)
        return code
    except Exception as exc:  # noqa: BLE001 - one line, no traceback, for any other failure
        if "ephemeral Prefect API server" in str(exc):
            return fail(ephemeral_api_failure(), 2)
        return fail(f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
