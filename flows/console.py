"""The command line's process: what it prints and how it starts and stops.

- TensorFlow loaded once with its native start-up lines discarded (`quiet_native_startup`; the Dask workers
  use it too, flows/cluster.py), one-line console errors (`quiet_console_tracebacks`), log lines naming the
  Prefect run (`RunNameFormatter`), and the summary of a run or a tune (`report_run`, `report_tune`).
- The temporary local Prefect API (no PREFECT_API_URL): started with SIGINT blocked, drained before it stops
  (`start_temporary_api`, `drain_prefect_workers`), and the line for one that did not come up.
- `exit_now`: leave within seconds after an interrupt, skipping TensorFlow's slow native teardown.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import flows  # noqa: F401 - sets logging and analytics environment before Prefect loads

if TYPE_CHECKING:
    from lstm_core.tuning.records import TuneSummary


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


class _NoTraceback(logging.Filter):
    """Console shows the one-line reason; full tracebacks stay in the Prefect API logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            record.exc_info, record.exc_text = None, None
        if isinstance(record.msg, str) and "Traceback (most recent call last)" in record.msg:
            record.msg = record.msg.split("Traceback (most recent call last)")[0].rstrip()
        return True


def quiet_console_tracebacks() -> None:
    """Have the console's log handlers print a failure's one-line reason, not its traceback (which stays in the
    Prefect API logs); LSTM_FORECAST_DEBUG=1 keeps the tracebacks."""
    if os.environ.get("LSTM_FORECAST_DEBUG"):
        return
    seen = set()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler) not in seen:
                seen.add(id(handler))
                handler.addFilter(_NoTraceback())


def report_run(manifest: dict[str, Any]) -> None:
    """Print a run's outcome from its manifest (as JSON): status, model and retrain decision, counts, series per
    serving model, the slots caught up on, the revisions against the previous run, and each model's backtest
    metrics pooled over every window; a superseded scheduled slot says so and nothing else."""
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
        """The record's line with Prefect's run names dropped (the terminal shows one run)."""
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


def exit_now(code: int) -> None:
    """End the process with `code` after the exit hooks (Prefect's: the event drain and the temporary API's
    ordered stop) and flushing the console, skipping the interpreter's teardown, where TensorFlow's native
    destructors take 5 to 7 s after an interrupted training (measured; a stopped run must exit within 10 s)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def report_tune(summary: TuneSummary) -> None:
    """Print a tune's outcome: its trials by state, what stopped it, and the best trial's settings (if any)."""
    best = summary.best
    print(f"study {summary.study}: {summary.trials} trials ("
          + ", ".join(f"{n} {s}" for s, n in summary.states.items())
          + f"), {len(summary.new_trials)} new, stopped by the {summary.stopped_by} budget")
    if best:
        print(f"best: trial {best.trial}, pooled backtest MASE {best.objective:.4f}: {best.params}")
        print(f"best settings: {summary.urls.get('best_yaml')} (lstm-forecast run --config ..., or tuned: latest)")
    else:
        print("no trial completed yet: no best settings")
