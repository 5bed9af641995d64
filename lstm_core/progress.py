"""Progress of long work (training epochs and batches, backtest windows, shards) for a person at a terminal.

Built on `rich.progress`: the label, a bar, done/total, the elapsed time and the estimated time left
(rich's columns and its speed estimate), redrawn in place on one line of stderr. It is drawn only
when the stream is a terminal; anywhere else (a log file, a pipe, a worker's captured output) it writes
nothing, so logs keep only log lines. `LSTM_FORECAST_PROGRESS=1` or `=0` forces it on or off.

Why one line redrawn here rather than rich's `Live` display: Prefect's console handler prints through
its own rich Console bound to the real stderr, which Live's stdout/stderr redirect does not reach, and
Live's refresh thread would race those lines. So each console log handler wipes the line before it
prints a record, and the next update draws the bar again below it.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress
from rich.table import Column

CLEAR = "\r\033[K"  # back to the start of the line and erase it


def progress_enabled(stream: TextIO | None = None) -> bool:
    """Whether to draw: `LSTM_FORECAST_PROGRESS` when set (1/true/yes/on or 0/false/no/off), else
    whether `stream` (default stderr) is a terminal."""
    forced = os.environ.get("LSTM_FORECAST_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _ClearBeforeLog(logging.Filter):
    """Wipe the progress line before a console log record prints, so the two never share a line."""

    def __init__(self, progress: "Progress") -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


def _columns() -> tuple:
    # markup off: labels and details carry series ids, which may contain '[' ... ']'
    def text(fmt: str, **kw) -> TextColumn:
        return TextColumn(fmt, markup=False, table_column=Column(no_wrap=True, **kw))

    return (text("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
            text("eta"), TimeRemainingColumn(), text("{task.fields[detail]}"))


class Progress:
    """One progress line: `update(label, done, total, detail)` redraws it at most every `min_interval` seconds.

    A new label starts a new bar (its own elapsed time and ETA); a new label and `done == total` always draw. `clear()`
    wipes the line (the next update draws it again), `close()` also detaches from the log handlers; as a
    context manager it closes on exit. Disabled (see `progress_enabled`), every call does nothing.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, min_interval: float = 0.25) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self.min_interval = min_interval
        self._last_draw = 0.0
        self._shown = False
        self._filter: _ClearBeforeLog | None = None
        self._bars: _RichProgress | None = None
        self._task: TaskID | None = None
        self._label: str | None = None

    def _attach(self) -> None:
        """Console log handlers clear the line before they print (attached on first draw, until close)."""
        self._filter = _ClearBeforeLog(self)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.addFilter(self._filter)

    def _track(self, label: str, done: int, total: int | None, detail: str) -> None:
        """Record the state in rich's task (samples feed its speed estimate); a new label, a new task."""
        if self._bars is None:
            # rendered by hand (see `_render`): never started, so no refresh thread
            self._bars = _RichProgress(*_columns(), auto_refresh=False,
                                       console=Console(file=self.stream, highlight=False))
        if label != self._label:
            if self._task is not None:
                self._bars.remove_task(self._task)
            self._task = self._bars.add_task(label, total=total, completed=done, detail=detail)
            self._label = label
        else:
            self._bars.update(self._task, total=total, completed=done, detail=detail)

    def _render(self) -> str:
        """The current bar as one line of text (with the terminal's colours when it has them)."""
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        console = self._bars.console
        console.width = width
        table = self._bars.make_tasks_table([self._bars.tasks[-1]])
        with console.capture() as captured:
            console.print(table, end="", crop=True, overflow="ellipsis", no_wrap=True)
        return captured.get().split("\n", 1)[0].rstrip()

    def update(self, label: str, done: int, total: int | None = None, detail: str = "", force: bool = False) -> None:
        """Show `done` of `total` (None: unknown, no ETA) under `label`, with `detail` after the times."""
        if not self.enabled:
            return
        new_bar = label != self._label
        self._track(label, done, total, detail)
        now = time.monotonic()
        if not (force or new_bar) and self._shown and now - self._last_draw < self.min_interval and done != total:
            return
        self._last_draw = now
        if self._filter is None:
            self._attach()
        self.stream.write(CLEAR + self._render())
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Wipe the line if it is shown."""
        if self.enabled and self._shown:
            self.stream.write(CLEAR)
            self.stream.flush()
            self._shown = False

    def close(self) -> None:
        """Remove the line and detach from the log handlers."""
        self.clear()
        if self._filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._filter)
            self._filter = None
        self._bars, self._task, self._label = None, None, None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
