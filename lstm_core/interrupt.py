"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM within seconds, wherever its work is.

The command line arms `handle_signals()` for a run. The first signal sets a process-wide stop flag and raises
`RunInterrupted` in the main thread (where Python runs signal handlers), which stops whatever the main thread
waits for; the work in other threads (training, forecasting, writing) calls `check()` at its safe points (each
training batch, each backtest window, before each output file and before the commit) and raises the same
exception there. Work on other processes (Dask workers) is stopped by closing their cluster, which the
exception unwinds.

`RunInterrupted` is a KeyboardInterrupt, so no `except Exception` on its way swallows it, and exits with the
shell's code for the signal: 128 + its number (130 for SIGINT, 143 for SIGTERM). Nothing here imports Prefect.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_stop = threading.Event()
_received: list[int] = []  # the signals received, in order
_armed = threading.Event()  # handle_signals() is active: run_pipeline re-arms it over the flow engine's


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal (`signum`): it commits nothing and exits with `exit_code`."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's exit status of a process killed by the signal: 128 + its number."""
        return 128 + self.signum


def stop_requested() -> bool:
    """True once a stop was requested (a signal arrived, or `request_stop` was called)."""
    return _stop.is_set()


def check() -> None:
    """Raise RunInterrupted when a stop was requested: call at each safe point of long work."""
    if _stop.is_set():
        raise RunInterrupted(_received[0] if _received else signal.SIGINT)


def request_stop(signum: int = signal.SIGINT) -> None:
    """Ask every thread of this process to stop at its next `check()`."""
    _received.append(int(signum))
    _stop.set()


def reset() -> None:
    """Clear the stop flag (a new run in the same process, and tests)."""
    _stop.clear()
    _received.clear()


def _handler(signum: int, frame: Any) -> None:
    if _stop.is_set():
        if len(_received) >= 2:  # a third signal: the user insists, leave at once
            os._exit(128 + signum)
        _received.append(int(signum))
        print(f"lstm-forecast: already stopping ({signal.Signals(signum).name} again); a further signal exits "
              f"at once, without cleaning up", file=sys.stderr, flush=True)
        return
    request_stop(signum)
    raise RunInterrupted(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the run (see the module's docstring) for the `with` block; the previous
    handlers come back after it. Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _armed.set()
    try:
        yield
    finally:
        _armed.clear()
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def rearmed() -> Iterator[None]:
    """Inside `handle_signals()`, put its handlers back for the `with` block (a flow engine installs its own
    SIGTERM handler around the flow body, which would raise in the main thread but leave other threads
    working); restores what was there after. Does nothing when `handle_signals()` is not active."""
    if not _armed.is_set() or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the `with` block: child processes started (and threads created) in it
    inherit the mask, so a terminal's Ctrl-C, sent to the whole process group, reaches this process only,
    which then stops them in order. A SIGINT that arrives meanwhile is delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
