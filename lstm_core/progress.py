"""A one-line progress display for long work (epochs, batches, series) when a person is watching.

On a terminal the line is redrawn in place; anywhere else (a log file, a pipe, a
worker's captured output) it writes nothing, so logs keep only the log lines.
`LSTM_FORECAST_PROGRESS=1` or `=0` forces it on or off.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import TextIO

CLEAR = "\r\033[K"


def progress_enabled(stream: TextIO | None = None) -> bool:
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


class Progress:
    """`update("training", done, total, detail)` redraws one line at most every `min_interval` seconds."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, min_interval: float = 0.25) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self.min_interval = min_interval
        self._last_draw = 0.0
        self._shown = False
        self._started: dict[str, float] = {}
        self._filter: _ClearBeforeLog | None = None

    def _attach(self) -> None:
        """Console log handlers clear the line before they print (attached on first draw, until close)."""
        self._filter = _ClearBeforeLog(self)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.addFilter(self._filter)

    def update(self, label: str, done: int, total: int | None = None, detail: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        start = self._started.setdefault(label, now)
        if not force and self._shown and now - self._last_draw < self.min_interval and done != total:
            return
        self._last_draw = now
        if self._filter is None:
            self._attach()
        width = shutil.get_terminal_size((100, 20)).columns
        if total:
            frac = min(max(done / total, 0.0), 1.0)
            bar_len = 20
            bar = "#" * int(frac * bar_len) + "-" * (bar_len - int(frac * bar_len))
            eta = (now - start) / frac * (1 - frac) if frac > 0 else None
            text = f"{label} [{bar}] {done}/{total}" + (f" eta {eta:.0f}s" if eta is not None else "")
        else:
            text = f"{label} {done}"
        if detail:
            text += f"  {detail}"
        self.stream.write(CLEAR + text[: max(10, width - 1)])
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
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

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
