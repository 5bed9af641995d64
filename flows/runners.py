"""Where a run's tasks execute: in the flow's own process, or on a Dask cluster through prefect-dask.

- no `workers` / `dask_address`: tasks run one after another in the flow's process (as always).
- `workers: N`: a temporary `distributed.LocalCluster` of N worker processes (spawned, not forked:
  TensorFlow hangs in forked children), one thread each, for the length of the run.
- `dask_address: tcp://host:port`: the scheduler of an existing cluster.

Tasks on Dask workers report to the same Prefect API as the flow: without `PREFECT_API_URL`, the
flow's temporary local API is exported to the workers (otherwise each would start its own).
"""
from __future__ import annotations

import builtins
import json
import logging
import os
import re
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

from lstm_core import errors
from lstm_core.config import ForecastConfig


class InProcess:
    """Tasks called directly, in order, in the flow's process: `submit` returns the result itself."""

    kind = "in-process"
    capacity = 1  # shards in flight

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def submit(self, task, chain: list | None = None, **params: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return task(**params)
        finally:
            self.seconds[task.name] += time.perf_counter() - t0

    def result(self, value: Any, chain: list | None = None) -> Any:
        return value

    def describe(self) -> dict[str, Any]:
        return {"runner": "in-process"}

    def task_seconds(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


class OnDask:
    """Tasks submitted to a `DaskTaskRunner`: `submit` returns a future; data stays on the workers."""

    kind = "dask"

    def __init__(self, runner, description: dict[str, Any]) -> None:
        self.runner = runner
        self.description = description
        info = runner.client.scheduler_info(n_workers=-1) if _takes_n_workers(runner.client) \
            else runner.client.scheduler_info()
        workers = info.get("workers", {})
        self.threads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        self.description.update({"workers": len(workers), "threads": self.threads})

    @property
    def capacity(self) -> int:
        """Shards in flight: one per worker thread, so each worker holds about one shard at a time."""
        return self.threads

    def submit(self, task, chain: list | None = None, **params: Any) -> Any:
        future = self.runner.submit(task, params)
        if chain is not None:
            chain.append((task.name, future.task_run_id))
        return future

    def result(self, future: Any, chain: list | None = None) -> Any:
        """The task's result; when it never ran because an upstream task failed, that task's error."""
        from prefect.exceptions import UnfinishedRun

        try:
            return future.result()
        except UnfinishedRun:
            cause = _root_cause(chain or [])
            if cause is not None:
                raise cause from None
            raise

    def describe(self) -> dict[str, Any]:
        return dict(self.description)

    def task_seconds(self) -> dict[str, float]:
        """Run time of this flow run's tasks, summed per task name (from the Prefect API)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            return {}
        out: dict[str, float] = defaultdict(float)
        with get_client(sync_client=True) as client:
            offset = 0
            while True:
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[ctx.flow_run.id])), limit=200,
                    offset=offset)
                for r in runs:
                    seconds = r.total_run_time.total_seconds() if r.total_run_time else 0.0
                    out[r.name.rsplit("-", 1)[0]] += seconds
                if len(runs) < 200:
                    break
                offset += 200
        return {k: round(v, 3) for k, v in out.items()}


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


_KNOWN = {"DataValidationError": errors.DataValidationError, "ArtifactError": errors.ArtifactError,
          "StorageError": errors.StorageError, "LstmForecastError": errors.LstmForecastError}


def _root_cause(chain: list[tuple[str, Any]]) -> BaseException | None:
    """Rebuild the error of the first failed task of a chain from its state in the Prefect API.

    The exception object lived on the worker; its type and message are in the failed state's message.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name, run_id in chain:
            state = client.read_task_run(run_id).state
            if state is None or not (state.is_failed() or state.is_crashed()):
                continue
            message = state.message or ""
            m = re.search(r"exception (?:[\w.]+\.)?(\w+): (.*)$", message, re.S)
            if not m:
                return RuntimeError(f"task {name} {state.type.value.lower()}: {message}")
            kind, text = m.group(1), m.group(2).strip()
            cls = _KNOWN.get(kind) or getattr(builtins, kind, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                try:
                    return cls(text)
                except Exception:  # noqa: BLE001 - a type that takes other arguments
                    pass
            return RuntimeError(f"task {name} failed: {kind}: {text}")
    return None


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


def worker_env(workers: int, config: ForecastConfig | None = None) -> dict[str, str]:
    """Environment of each local worker: TensorFlow threads split between the workers, and the run's storage
    options, credentials included. They reach the worker processes from this one, never through the
    scheduler: tasks get the configuration without them (ForecastConfig pickles without secrets)."""
    cores = os.cpu_count() or 1
    per_worker = max(1, cores // max(workers, 1))
    secrets = {"LSTM_FORECAST_STORAGE_OPTIONS": json.dumps(config.storage_options)} \
        if config is not None and config.storage_options else {}
    return {**secrets,
        "TF_NUM_INTRAOP_THREADS": str(per_worker),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": str(per_worker),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DASK_LOGGING__DISTRIBUTED": os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning"),
    }


@contextmanager
def execution(config: ForecastConfig, logger: logging.Logger | None = None) -> Iterator[InProcess | OnDask]:
    """The runner the configuration asks for, started for the length of the `with` block."""
    if config.workers is None and config.dask_address is None:
        yield InProcess()
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
                runner = DaskTaskRunner(
                    cluster_class="distributed.LocalCluster",
                    cluster_kwargs={"n_workers": config.workers, "threads_per_worker": 1, "processes": True,
                                    "dashboard_address": ":0", "silence_logs": logging.WARNING,
                                    "env": worker_env(config.workers, config)},
                )
                description = {"runner": "dask", "cluster": "LocalCluster"}
            quiet = logging.getLogger("distributed")
            if quiet.level == logging.NOTSET:  # scheduler and nanny chatter; the run's own logs say enough
                quiet.setLevel(logging.WARNING)
            with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
                with runner:
                    t0 = time.perf_counter()
                    if config.workers is not None:
                        runner.client.wait_for_workers(config.workers, timeout=600)
                    ex = OnDask(runner, description)
                    log.info("Dask %s: %d worker(s), %d thread(s), ready in %.1f s",
                             config.dask_address or "LocalCluster", ex.description["workers"], ex.threads,
                             time.perf_counter() - t0)
                    yield ex
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
