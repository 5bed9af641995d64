"""A run's Dask cluster, one recipe for the batch flow's tasks (flows/runners.py) and the tune's trials
(flows/tune.py): `dask_cluster(config)` starts it, or reaches it, and readies its workers.

- `workers: N`: a `distributed.LocalCluster` of N worker processes (spawned, not forked: TensorFlow hangs in
  forked children), one thread each, TensorFlow's threads split between them, for the length of the run.
  TLS with a certificate made for it, every listener on loopback, no dashboard unless asked for
  (`local_cluster_kwargs`); its workers ignore the terminal's Ctrl-C and get the run's storage options in
  memory, never in their environment.
- `dask_address: tcp://host:port`: the scheduler of an existing cluster, whose workers bring their own
  credentials.

Either way each worker loads TensorFlow once, quietly, before any work reaches it, and a Ctrl-C or SIGTERM
while the cluster is up has the workers' tasks stop at their next batch (`lstm_core.interrupt`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from lstm_core.config import ForecastConfig
from lstm_core.interrupt import request_stop, sigint_blocked


@dataclass
class DaskCluster:
    """A run's cluster, ready: workers started (or reached), quiet, holding what they need."""

    client: Any  # a `distributed.Client` of this process
    cluster: Any | None  # the `distributed.LocalCluster` this run started; None for `dask_address`
    description: dict[str, Any]  # the manifest's `execution`: runner, address or cluster, workers, threads
    threads: int  # worker threads: tasks (trials, shards) that run at once

    def stop_tasks(self) -> None:
        """Have every worker's running task stop at its next safe point (a stop request, as a Ctrl-C gives
        this process), so the cluster closes at once instead of waiting for them; never raises."""
        with contextlib.suppress(Exception):
            self.client.run(request_stop)


@contextmanager
def dask_cluster(config: ForecastConfig, logger: logging.Logger | None = None,
                 default_client: bool = False) -> Iterator[DaskCluster]:
    """The cluster `config` asks for (`workers` or `dask_address`; one must be set), ready for the `with` block.

    `default_client`: make its client this process's default (`distributed.default_client()`, which the tune's
    trial pool needs); the batch flow's is not (prefect-dask would take a default client over as its own).

    A local cluster is closed when the block ends; an existing one is only disconnected from. The cluster's
    event-loop thread and worker processes start with SIGINT blocked: a terminal's Ctrl-C (sent to the whole
    process group) reaches this process only, which stops the run and closes the cluster in order; a SIGINT
    meanwhile waits till the cluster is up. Raises what `distributed` raises when the cluster cannot be
    started or reached, and TimeoutError when the local workers are not up within 10 minutes.
    """
    import dask
    from distributed import Client, LocalCluster

    log = logger or logging.getLogger("flows.cluster")
    quiet_dask_logs()
    with dask.config.set(cluster_dask_config()), ExitStack() as stack:
        with sigint_blocked():
            t0 = time.perf_counter()
            cluster = None
            if config.dask_address is not None:
                description: dict[str, Any] = {"runner": "dask", "address": config.dask_address}
                client = stack.enter_context(Client(config.dask_address, set_as_default=default_client))
            elif config.workers is not None:
                description = {"runner": "dask", "cluster": "LocalCluster"}
                cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(config.workers, config)))
                client = stack.enter_context(Client(cluster, set_as_default=default_client))
            else:
                raise ValueError("dask_cluster: the configuration sets neither workers nor dask_address")
            if config.workers is not None:
                client.wait_for_workers(config.workers, timeout=600)
            quiet_workers(client)
            if config.workers is not None:
                detach_local_workers(client)
                give_storage_options(client, config)
                if dashboard_address() is not None:
                    log.info("Dask dashboard: %s", client.dashboard_link)
        info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        description.update({"workers": len(workers), "threads": threads})
        log.info("Dask %s: %d worker(s), %d thread(s), ready in %.1f s",
                 config.dask_address or "LocalCluster", len(workers), threads, time.perf_counter() - t0)
        ready = DaskCluster(client, cluster, description, threads)
        try:
            yield ready
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM here: have the workers' tasks stop at their next batch too, so the cluster
            # closes at once instead of waiting for them (a local worker is killed after 4 s otherwise)
            ready.stop_tasks()
            raise


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


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
            from flows.console import quiet_native_startup

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
