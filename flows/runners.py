"""Where a run's tasks execute: in the flow's own process, or on a Dask cluster through prefect-dask.

- no `workers` / `dask_address`: tasks run one after another in the flow's process (as always).
- `workers: N`: a temporary `distributed.LocalCluster` of N worker processes (spawned, not forked:
  TensorFlow hangs in forked children), one thread each, for the length of the run.
- `dask_address: tcp://host:port`: the scheduler of an existing cluster.

The cluster itself (started or reached, its workers readied) is `flows.cluster.dask_cluster`, the same
recipe the tune flow's trials run on; here prefect-dask's task runner is put on it.

Tasks on Dask workers report to the same Prefect API as the flow: without `PREFECT_API_URL`, the
flow's temporary local API is exported to the workers (otherwise each would start its own).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.cluster import dask_cluster
from lstm_core.config import ForecastConfig
from lstm_core.interrupt import sigint_blocked
from lstm_core.records import Execution


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
        self.description = Execution(runner="in-process")
        self.capacity = 1  # tasks that run at once: the cluster's worker threads

    def duplicate(self) -> RunTaskRunner:
        """A fresh, unstarted runner (Prefect copies a flow's runner for each run)."""
        return type(self)()

    @contextmanager
    def started(self, config: ForecastConfig, logger: logging.Logger | None = None) -> Iterator[RunTaskRunner]:
        """Start the runner `config` asks for, for the length of the `with` block."""
        with _real_runner(config, logger) as (inner, description, capacity):
            self._inner, self.description, self.capacity = inner, description, capacity
            try:
                yield self
            finally:
                self._inner = None

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        """Submit `task` to the started runner; RuntimeError when `started` has not been entered."""
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
        # a runner handed in with `with_options` gets the two fields ours has
        runner.description = Execution(runner=runner.name)  # type: ignore[attr-defined]
        runner.capacity = 1  # type: ignore[attr-defined]
    yield runner


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


@contextmanager
def _real_runner(config: ForecastConfig, logger: logging.Logger | None = None
                 ) -> Iterator[tuple[TaskRunner, Execution, int]]:
    """(runner, description, capacity) as the configuration asks, started for the `with` block: a thread of
    one, or prefect-dask's runner on the run's Dask cluster (`flows.cluster.dask_cluster`)."""
    if config.workers is None and config.dask_address is None:
        thread: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1)
        with thread:
            yield thread, Execution(runner="in-process"), 1
        return

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    log = logger or logging.getLogger("flows.runners")
    configured = bool(PREFECT_API_URL.value())
    api = shared_api_url()
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api  # spawned workers inherit it
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):  # and it travels in each task's context
            if config.dask_address is not None and not configured:
                log.warning("PREFECT_API_URL is not set: the workers of %s must reach this run's temporary "
                            "API at %s; set PREFECT_API_URL to a server both can reach", config.dask_address, api)
            with dask_cluster(config, log) as cluster, ExitStack() as stack:
                runner = DaskTaskRunner(address=config.dask_address) if cluster.cluster is None \
                    else DaskTaskRunner(cluster=cluster.cluster)
                with sigint_blocked():  # its client's threads too start with SIGINT blocked (see dask_cluster)
                    stack.enter_context(runner)
                    runner.client  # noqa: B018 - connects now, not at the first task
                try:
                    yield runner, cluster.description, cluster.threads
                except KeyboardInterrupt:
                    cluster.stop_tasks()  # before the runner's client closes (dask_cluster asks again after)
                    raise
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
