"""Progress of long work (training epochs and batches, backtest windows, shards) for a person at a terminal.

Built on `rich.progress`: each bar shows its label, the bar, done/total, the elapsed time and the
estimated time left (rich's columns and its speed estimate), one line per bar, redrawn in place at the
bottom of stderr. Bars open at the same time stack (the shards of a run above the training or the
backtest windows of the current shard). They are drawn only when the stream is a terminal; anywhere else
(a log file, a pipe, a worker's captured output) nothing is written, so logs keep only log lines.
`LSTM_FORECAST_PROGRESS=1` or `=0` forces it on or off.

Why the lines are redrawn here rather than by rich's `Live` display: Prefect's console handler prints
through its own rich Console bound to the real stderr, which Live's stdout/stderr redirect does not
reach, and Live's refresh thread would race those lines. So each console log handler wipes the bars
before it prints a record, and the next update draws them again below it.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress
from rich.table import Column

CLEAR = "\r\033[K"  # back to the start of the line and erase it
UP = "\033[1A"  # the cursor one line up


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
    """Wipe the progress bars before a console log record prints, so the two never share a line."""

    def __init__(self, display: _Display) -> None:
        super().__init__()
        self.display = display

    def filter(self, record: logging.LogRecord) -> bool:
        self.display.clear()
        return True


def _columns() -> tuple:
    # markup off: labels and details carry series ids, which may contain '[' ... ']'
    def text(fmt: str) -> TextColumn:
        return TextColumn(fmt, markup=False, table_column=Column(no_wrap=True))

    return (text("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
            text("eta"), TimeRemainingColumn(), text("{task.fields[detail]}"))


class _Display:
    """The bars of every open `Progress` on one stream, drawn together: one line each, in opening order.

    Rich's task list holds their state (its samples feed the ETA); rich is never started (no refresh
    thread): `draw` renders its columns and writes them here.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.rich = _RichProgress(*_columns(), auto_refresh=False, console=Console(file=stream, highlight=False))
        self.members: list[Progress] = []
        self.lines = 0  # lines on screen now
        self.last_draw = 0.0
        self.lock = threading.RLock()
        self.filter = _ClearBeforeLog(self)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.addFilter(self.filter)

    def detach(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.filter)

    def _render(self) -> list[str]:
        """The bars as lines of text (with the terminal's colours when it has them), cut to its width."""
        tasks = {t.id: t for t in self.rich.tasks}
        shown = [tasks[m.task] for m in self.members if m.task in tasks]
        if not shown:
            return []
        console = self.rich.console
        console.width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        with console.capture() as captured:
            console.print(self.rich.make_tasks_table(shown), end="", crop=True, overflow="ellipsis", no_wrap=True)
        return [line.rstrip() for line in captured.get().split("\n")][:len(shown)]

    def _erase(self) -> str:
        """Control codes that wipe the lines on screen (at least the cursor's), leaving the cursor at the
        start of the first."""
        return CLEAR + (UP + CLEAR) * max(self.lines - 1, 0)

    def draw(self) -> None:
        with self.lock:
            lines = self._render()
            self.stream.write(self._erase() + "\n".join(lines))
            self.stream.flush()
            self.lines = len(lines)
            self.last_draw = time.monotonic()

    def clear(self) -> None:
        with self.lock:
            if self.lines:
                self.stream.write(self._erase())
                self.stream.flush()
                self.lines = 0


_DISPLAYS: dict[int, _Display] = {}  # id(stream) -> its bars
_DISPLAYS_LOCK = threading.Lock()


class Progress:
    """One progress bar: `update(label, done, total, detail)` redraws it at most every `min_interval` seconds.

    A new label starts a new bar in its place (its own elapsed time and ETA); a new label and
    `done == total` always draw. `clear()` wipes the bars from the screen (the next update draws them
    again), `close()` removes this one for good; as a context manager it closes on exit. Disabled (see
    `progress_enabled`), every call does nothing.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, min_interval: float = 0.25) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self.min_interval = min_interval
        self.task: TaskID | None = None
        self._label: str | None = None
        self._display: _Display | None = None

    def _join(self) -> _Display:
        """This stream's display, opened (and attached to the console log handlers) by its first bar."""
        with _DISPLAYS_LOCK:
            display = _DISPLAYS.get(id(self.stream))
            if display is None:
                display = _DISPLAYS[id(self.stream)] = _Display(self.stream)
            display.members.append(self)
        return display

    def update(self, label: str, done: int, total: int | None = None, detail: str = "", force: bool = False) -> None:
        """Show `done` of `total` (None: unknown, no ETA) under `label`, with `detail` after the times."""
        if not self.enabled:
            return
        display = self._display = self._display or self._join()
        with display.lock:
            task = self.task
            new_bar = task is None or label != self._label  # no bar yet, or another step's
            if task is not None and not new_bar:
                display.rich.update(task, total=total, completed=done, detail=detail)
            else:
                if task is not None:
                    display.rich.remove_task(task)
                self.task = display.rich.add_task(label, total=total, completed=done, detail=detail)
                self._label = label
            recent = time.monotonic() - display.last_draw < self.min_interval
            if force or new_bar or done == total or not display.lines or not recent:
                display.draw()

    def clear(self) -> None:
        """Wipe the bars from the screen; the next update draws them again."""
        if self._display is not None:
            self._display.clear()

    def close(self) -> None:
        """Remove this bar (the others are drawn again without it); the last one detaches from the log handlers."""
        display, self._display = self._display, None
        if display is None:
            return
        with display.lock:
            display.members.remove(self)
            if self.task is not None:
                display.rich.remove_task(self.task)
            self.task, self._label = None, None
            if display.members:
                display.draw()
                return
            display.clear()
        with _DISPLAYS_LOCK:
            if _DISPLAYS.get(id(self.stream)) is display and not display.members:
                del _DISPLAYS[id(self.stream)]
                display.detach()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
