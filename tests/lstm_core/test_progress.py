"""The progress bar (rich's columns on one line) draws on a terminal and writes nothing anywhere else."""
from __future__ import annotations

import io
import logging
import re

import pytest

from lstm_core.progress import CLEAR, Progress, _ClearBeforeLog, progress_enabled

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours, which a terminal gets


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows after `text`: lines, with carriage return, erase-line and cursor-up applied
    (blank lines at the bottom left out)."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[K|\x1b\[1A|[\r\n]|[^\x1b\r\n]+", ANSI.sub("", text)):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\x1b[K":
            lines[row] = lines[row][:col]
        elif token == "\x1b[1A":
            row = max(row - 1, 0)
        else:
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + len(token):]
            col += len(token)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_quiet_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("LSTM_FORECAST_PROGRESS", raising=False)
    out = io.StringIO()
    with Progress(out) as p:
        for i in range(5):
            p.update("epoch 1/3", i + 1, 5, force=True)
    assert out.getvalue() == ""


@pytest.fixture
def logged_terminal(monkeypatch):
    """A terminal that the root logger's console handler also writes to: (terminal, handler)."""
    monkeypatch.delenv("LSTM_FORECAST_PROGRESS", raising=False)
    term = FakeTerminal()
    handler = logging.StreamHandler(term)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield term, handler
    finally:
        root.removeHandler(handler)


def test_draws_in_place_on_a_terminal_and_clears_before_log_lines(logged_terminal):
    term, handler = logged_terminal
    with Progress(term, min_interval=0) as p:
        p.update("epoch 2/3", 5, 10, "batches")
        line = ANSI.sub("", term.getvalue())
        # label, bar (half full), done/total, elapsed, ETA, detail
        assert re.fullmatch(re.escape(CLEAR) + r"epoch 2/3 ━{10}╺?━* +5/10 \d+:\d\d:\d\d eta "
                            r"(\d+:\d\d:\d\d|-:--:--) batches", line), line
        assert "\n" not in term.getvalue()
        logging.getLogger("tests.progress").warning("a log line")
        assert term.getvalue().endswith(CLEAR + "a log line\n")
        p.update("epoch 3/3", 10, 10)
        assert ANSI.sub("", term.getvalue()).rsplit(CLEAR, 1)[1].startswith("epoch 3/3 ━")
    assert term.getvalue().endswith(CLEAR)  # closing removes the line
    assert not any(isinstance(f, _ClearBeforeLog) for f in handler.filters)  # detached


def test_open_bars_stack_below_the_log_lines_and_a_closed_one_leaves(logged_terminal):
    """The shards of a run above the backtest windows of the current shard; log lines print above both."""
    term, handler = logged_terminal
    with Progress(term, min_interval=0) as shards:
        shards.update("shards", 1, 3, "4 series forecast")
        with Progress(term, min_interval=0) as windows:
            windows.update("backtest windows", 2, 3)
            shown = screen(term.getvalue())
            assert len(shown) == 2 and shown[0].startswith("shards ") and " 1/3 " in shown[0], shown
            assert shown[1].startswith("backtest windows ") and " 2/3 " in shown[1], shown
            logging.getLogger("tests.progress").warning("shard 2/3 done")
            windows.update("backtest windows", 3, 3)
            shown = screen(term.getvalue())
            assert shown[0] == "shard 2/3 done" and shown[1].startswith("shards ") and " 3/3 " in shown[2], shown
        shown = screen(term.getvalue())  # the windows' bar is gone, the shards' bar stays
        assert len(shown) == 2 and shown[0] == "shard 2/3 done" and shown[1].startswith("shards "), shown
    assert screen(term.getvalue()) == ["shard 2/3 done"]  # the last one wipes its line
    assert not any(isinstance(f, _ClearBeforeLog) for f in handler.filters)


def test_draws_at_most_every_min_interval_but_always_the_last_step(monkeypatch):
    monkeypatch.delenv("LSTM_FORECAST_PROGRESS", raising=False)
    term = FakeTerminal()
    with Progress(term, min_interval=3600) as p:
        for i in range(1, 11):
            p.update("windows", i, 10)
    drawn = [ANSI.sub("", s) for s in term.getvalue().split(CLEAR) if s]
    assert len(drawn) == 2 and "1/10" in drawn[0] and "10/10" in drawn[1], drawn


def test_environment_forces_it_on_or_off(monkeypatch):
    monkeypatch.setenv("LSTM_FORECAST_PROGRESS", "0")
    assert not progress_enabled(FakeTerminal())
    monkeypatch.setenv("LSTM_FORECAST_PROGRESS", "1")
    assert progress_enabled(io.StringIO())


def test_forced_on_a_captured_stream_the_bar_names_its_label_and_count(monkeypatch):
    monkeypatch.setenv("LSTM_FORECAST_PROGRESS", "1")
    out = io.StringIO()
    with Progress(out) as p:
        p.update("shards", 3, 12, "4 series")
        p.update("forecast [s-01]", 2, None)  # total unknown; the label is text, not rich markup
    text = out.getvalue()
    assert "shards" in text and "3/12" in text and "4 series" in text, text
    assert "forecast [s-01]" in text and "2/?" in text, text
    monkeypatch.setenv("LSTM_FORECAST_PROGRESS", "0")
    out = io.StringIO()
    with Progress(out) as p:
        p.update("shards", 3, 12, force=True)
    assert out.getvalue() == ""
