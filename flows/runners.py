"""Where a run's tasks execute: in the flow's own process, or on a Dask cluster through prefect-dask.

- no `workers` / `dask_address`: tasks run one after another in the flow's process (as always).
- `workers: N`: a temporary `distributed.LocalCluster` of N worker processes (spawned, not forked:
  TensorFlow hangs in forked children), one thread each, for the length of the run.
- `dask_address: tcp://host:port`: the scheduler of an existing cluster.

Tasks on Dask workers report to the same Prefect API as the flow: without `PREFECT_API_URL`, the
flow's temporary local API is exported to the workers (otherwise each would start its own).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from lstm_core.config import ForecastConfig
from lstm_core.interrupt import request_stop, sigint_blocked


class RunTaskRunner(TaskRunner):
    """The batch flow's task runner; which one really runs the tasks, the run's configuration decides.

    Prefect gives a flow its task runner before the body runs, but where this job's tasks run is a setting
    of the run (`workers`, `dask_address`), known once the body has read the configuration. So the flow is
    given this runner, and the body starts the real one with `started(config)` before it submits work:
    every `.submit` and `.map` in the flow body goes through it. In process it is a thread pool of one
    (tasks run one after another, as TensorFlow wants); on Dask, `prefect_dask.DaskTaskRunner`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._inner: TaskRunner | None = None
        self.description: dict[str, Any] = {"runner": "in-process"}
        self.capacity = 1  # tasks that run at once: the cluster's worker threads

    def duplicate(self) -> "RunTaskRunner":
        return type(self)()

    @contextmanager
    def started(self, config: ForecastConfig, logger: logging.Logger | None = None) -> Iterator["RunTaskRunner"]:
        """Start the runner `config` asks for, for the length of the `with` block."""
        with _real_runner(config, logger) as (inner, description, capacity):
            self._inner, self.description, self.capacity = inner, description, capacity
            try:
                yield self
            finally:
                self._inner = None

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        if self._inner is None:
            raise RuntimeError("the run's task runner is not started: use `with runner.started(config):`")
        return self._inner.submit(task, parameters, wait_for, dependencies)


@contextmanager
def run_task_runner(config: ForecastConfig, logger: logging.Logger | None = None) -> Iterator[Any]:
    """The flow run's task runner, started as `config` asks (it has `description` and `capacity`).

    A flow given another task runner (`batch_forecast.with_options(task_runner=...)`) keeps it: then
    `workers` and `dask_address` are that runner's business.
    """
    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx is not None else None
    if isinstance(runner, RunTaskRunner):
        with runner.started(config, logger) as started:
            yield started
        return
    if runner is not None:
        runner.description = {"runner": runner.name}
        runner.capacity = 1
    yield runner


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


# --- the cluster --------------------------------------------------------------
def shared_api_url() -> str:
    """The Prefect API this process talks to; the flow's temporary local one when none is configured."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance the flow's own client started
    server.start()
    return server.api_url


def quiet_dask_logs() -> None:
    """Silence the scheduler and nanny chatter in this process (distributed sets its own logger to INFO on
    import); the run's own logs say enough. DASK_LOGGING__DISTRIBUTED chooses another level, as it does for
    the workers."""
    logging.getLogger("distributed").setLevel(os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning").upper())


def quiet_workers(client) -> None:
    """Have each Dask worker load TensorFlow once, with its native start-up lines discarded (as the CLI does
    in its own process), before any task reaches it: otherwise every spawned worker prints them."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietNativeStartup(WorkerPlugin):
        def setup(self, worker) -> None:
            from flows.cli import quiet_native_startup

            with quiet_native_startup():
                pass

    client.register_plugin(QuietNativeStartup(), name="lstm-forecast-quiet-native-startup")


def detach_local_workers(client) -> None:
    """Have the workers of this run's own LocalCluster ignore SIGINT: they are in the terminal's process group,
    so a Ctrl-C reached them too and each died printing a traceback, while the flow's process stops the run and
    closes the cluster in order (lstm_core.interrupt). Never for a cluster the run did not start."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class IgnoreTerminalInterrupt(WorkerPlugin):
        def setup(self, worker) -> None:
            import signal

            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except ValueError:  # not the process's main thread: leave it
                pass

    client.register_plugin(IgnoreTerminalInterrupt(), name="lstm-forecast-ignore-terminal-interrupt")


def worker_env(workers: int, config: ForecastConfig | None = None) -> dict[str, str]:
    """Environment of each local worker: TensorFlow threads split between the workers, quiet logs. No
    credential: a worker's environment is inherited by every process it starts and readable as
    /proc/<pid>/environ; the run's storage options reach the workers in memory (`give_storage_options`)."""
    cores = os.cpu_count() or 1
    per_worker = max(1, cores // max(workers, 1))
    return {
        "TF_NUM_INTRAOP_THREADS": str(per_worker),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": str(per_worker),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DASK_LOGGING__DISTRIBUTED": os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning"),
    }


DASHBOARD_VARIABLE = "LSTM_FORECAST_DASK_DASHBOARD"


def dashboard_address() -> str | None:
    """Where the local cluster's Dask dashboard listens: nowhere unless LSTM_FORECAST_DASK_DASHBOARD asks
    (a port, `8787`, or `host:port`); a bare port listens on loopback only. The dashboard has no login."""
    asked = os.environ.get(DASHBOARD_VARIABLE, "").strip()
    if not asked:
        return None
    return f"127.0.0.1:{asked.lstrip(':')}" if ":" not in asked.lstrip(":") else asked


def local_cluster_kwargs(workers: int, config: ForecastConfig | None = None) -> dict[str, Any]:
    """`distributed.LocalCluster` keywords of a run's local cluster (`workers: N`), safe by default.

    - TLS with a certificate made for this cluster (`Security.temporary()`): every connection to the
      scheduler, the nannies and the workers must present it, and only this process and the workers it
      spawned hold it. Any other local user (or process) that finds the port cannot connect, so it can neither
      submit code to the workers nor read their memory.
    - Every listener on 127.0.0.1: nothing is reachable from another machine.
    - No dashboard (it has no login) unless LSTM_FORECAST_DASK_DASHBOARD asks for one (`dashboard_address`).
    """
    from distributed.security import Security

    dashboard = dashboard_address()
    kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
              "protocol": "tls://", "security": Security.temporary(), "dashboard_address": dashboard,
              "worker_dashboard_address": None, "silence_logs": logging.WARNING, "env": worker_env(workers, config)}
    if dashboard is None:
        # The scheduler always serves HTTP (health checks): on a free loopback port, not on 8787.
        kwargs["scheduler_kwargs"] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    return kwargs


def cluster_dask_config() -> dict[str, Any]:
    """Dask settings for starting a run's local cluster: spawned workers (TensorFlow hangs in forked
    children) and, without a dashboard, HTTP routes limited to the health check (no cluster or task
    information served without login)."""
    settings: dict[str, Any] = {"distributed.worker.multiprocessing-method": "spawn"}
    if dashboard_address() is None:
        settings["distributed.scheduler.http.routes"] = ["distributed.http.health"]
        settings["distributed.worker.http.routes"] = ["distributed.http.health"]
    return settings


def give_storage_options(client, config: ForecastConfig) -> None:
    """Hand the run's storage options (credentials included) to each worker of the local cluster, in memory
    (`lstm_core.config.hold_storage_options`), over the cluster's TLS connections; never to an existing
    cluster (`dask_address`), whose workers bring their own credentials."""
    from distributed.diagnostics.plugin import WorkerPlugin

    if not config.storage_options:
        return

    class StorageOptions(WorkerPlugin):
        def __init__(self, options: dict[str, Any]) -> None:
            self.options = options

        def setup(self, worker) -> None:
            from lstm_core.config import hold_storage_options

            hold_storage_options(self.options)

    client.register_plugin(StorageOptions(dict(config.storage_options)), name="lstm-forecast-storage-options")


@contextmanager
def _real_runner(config: ForecastConfig, logger: logging.Logger | None = None
                 ) -> Iterator[tuple[TaskRunner, dict[str, Any], int]]:
    """(runner, description, capacity) as the configuration asks, started for the `with` block."""
    if config.workers is None and config.dask_address is None:
        with ThreadPoolTaskRunner(max_workers=1) as runner:
            yield runner, {"runner": "in-process"}, 1
        return

    import dask
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    log = logger or logging.getLogger("flows.runners")
    configured = bool(PREFECT_API_URL.value())
    api = shared_api_url()
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api  # spawned workers inherit it
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):  # and it travels in each task's context
            if config.dask_address is not None:
                if not configured:
                    log.warning("PREFECT_API_URL is not set: the workers of %s must reach this run's temporary "
                                "API at %s; set PREFECT_API_URL to a server both can reach", config.dask_address, api)
                runner = DaskTaskRunner(address=config.dask_address)
                description = {"runner": "dask", "address": config.dask_address}
            else:
                runner = DaskTaskRunner(cluster_class="distributed.LocalCluster",
                                        cluster_kwargs=local_cluster_kwargs(config.workers, config))
                description = {"runner": "dask", "cluster": "LocalCluster"}
            quiet_dask_logs()
            with dask.config.set(cluster_dask_config()), ExitStack() as stack:
                # The cluster's event-loop thread and worker processes start with SIGINT blocked: a terminal's
                # Ctrl-C (sent to the whole process group) reaches the flow's process only, which stops the
                # run and closes the cluster in order (lstm_core.interrupt); a SIGINT meanwhile waits till here.
                with sigint_blocked():
                    stack.enter_context(runner)
                    t0 = time.perf_counter()
                    if config.workers is not None:
                        runner.client.wait_for_workers(config.workers, timeout=600)
                    quiet_workers(runner.client)
                    if config.workers is not None:
                        detach_local_workers(runner.client)
                        give_storage_options(runner.client, config)
                        if dashboard_address() is not None:
                            log.info("Dask dashboard: %s", runner.client.dashboard_link)
                info = runner.client.scheduler_info(n_workers=-1) if _takes_n_workers(runner.client) \
                    else runner.client.scheduler_info()
                workers = info.get("workers", {})
                threads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
                description.update({"workers": len(workers), "threads": threads})
                log.info("Dask %s: %d worker(s), %d thread(s), ready in %.1f s",
                         config.dask_address or "LocalCluster", len(workers), threads, time.perf_counter() - t0)
                try:
                    yield runner, description, threads
                except KeyboardInterrupt:
                    # Ctrl-C or SIGTERM here: have the workers' tasks stop at their next batch too, so the cluster
                    # closes at once instead of waiting for them (a local worker is killed after 4 s otherwise)
                    with contextlib.suppress(Exception):
                        runner.client.run(request_stop)
                    raise
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
