"""A process that races others for run ids on S3: `python -m tests.reliability.lease_racer OUT ENDPOINT TRIALS`.

It prints `ready` once its imports and client are set up, then reads `<start epoch> <gap s>` from
stdin. Trial k starts at start + k * gap in every racer at once: each tries to acquire run id
`race-<k>` (no heartbeat, never released) and prints one JSON line: trial, held, token, error.
"""
from __future__ import annotations

import json
import sys
import time

from lstm_core.errors import RunLockedError
from lstm_core.lease import RunLease
from lstm_core.location import filesystem


def main(out: str, endpoint: str, trials: int) -> None:
    fs, root = filesystem(out, {"endpoint_url": endpoint})
    fs.ls(root.split("/", 1)[0])  # open the connection pool before the race, not during it
    print("ready", flush=True)
    start, gap = map(float, sys.stdin.readline().split())
    for k in range(trials):
        time.sleep(max(0.0, start + k * gap - time.time()))
        result = {"trial": k, "held": False, "token": None, "error": None}
        try:
            lease = RunLease.acquire(fs, root, f"race-{k}", ttl=600, heartbeat=False)
            result.update(held=True, token=lease.token)
        except RunLockedError:
            pass
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            result["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
