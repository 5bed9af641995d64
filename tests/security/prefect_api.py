"""Read back what a flow run left in the Prefect database, through the API (logs, artifacts, state, events)."""
from __future__ import annotations

import time
from typing import Iterable


def api_logs(flow_run_id: str, until: Iterable[str] = (), timeout: float = 30.0) -> str:
    """Every log line of the flow run (and its task runs) stored by the server, joined by newlines; waits up
    to `timeout` seconds for each text of `until` to appear (logs reach the server in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    wanted, deadline, text = list(until), time.monotonic() + timeout, ""
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        text = "\n".join(log.message for log in logs)
        if all(w in text for w in wanted) or time.monotonic() > deadline:
            return text
        time.sleep(1)
