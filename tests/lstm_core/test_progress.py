"""The progress line draws on a terminal and writes nothing anywhere else."""
from __future__ import annotations

import io
import logging

from lstm_core.progress import CLEAR, Progress, _ClearBeforeLog, progress_enabled


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("LSTM_FORECAST_PROGRESS", raising=False)
    out = io.StringIO()
    with Progress(out) as p:
        for i in range(5):
            p.update("epoch 1/3", i + 1, 5, force=True)
    assert out.getvalue() == ""


def test_draws_in_place_on_a_terminal_and_clears_before_log_lines(monkeypatch):
    monkeypatch.delenv("LSTM_FORECAST_PROGRESS", raising=False)
    term = FakeTerminal()
    handler = logging.StreamHandler(term)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with Progress(term, min_interval=0) as p:
            p.update("epoch 2/3", 5, 10, "batches")
            assert term.getvalue().startswith(CLEAR) and "epoch 2/3 [##########----------] 5/10" in term.getvalue()
            assert "\n" not in term.getvalue()
            logging.getLogger("tests.progress").warning("a log line")
            assert term.getvalue().endswith(CLEAR + "a log line\n")
            p.update("epoch 3/3", 10, 10)
        assert term.getvalue().endswith(CLEAR)  # closing removes the line
        assert not any(isinstance(f, _ClearBeforeLog) for f in handler.filters)  # detached
    finally:
        root.removeHandler(handler)


def test_environment_forces_it_on_or_off(monkeypatch):
    monkeypatch.setenv("LSTM_FORECAST_PROGRESS", "0")
    assert not progress_enabled(FakeTerminal())
    monkeypatch.setenv("LSTM_FORECAST_PROGRESS", "1")
    assert progress_enabled(io.StringIO())
