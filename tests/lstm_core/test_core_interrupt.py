"""lstm_core.interrupt: a stop request ends training within a batch, and the backtest within a window."""
from __future__ import annotations

import signal

import pytest

from lstm_core import interrupt
from lstm_core.backtest import backtest
from lstm_core.engine import fit
from lstm_core.interrupt import RunInterrupted
from lstm_core.metrics import seasonal_naive
from lstm_core.panel import Panel
from tests.conftest import fast_config, make_frame


@pytest.fixture(autouse=True)
def _clear():
    interrupt.reset()
    yield
    interrupt.reset()


def test_check_raises_once_a_stop_is_requested_with_the_signal_s_exit_code():
    interrupt.check()  # nothing requested: no-op
    interrupt.request_stop(signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="interrupted by SIGTERM") as info:
        interrupt.check()
    assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
    assert RunInterrupted(signal.SIGINT).exit_code == 130


def test_training_stops_at_the_batch_after_the_request():
    cfg = fast_config()
    panel = Panel.from_frame(make_frame(n_series=4, length=160), "h")
    batches = []

    def on_batch(*args) -> None:  # the progress hook: request the stop at the third batch
        batches.append(args)
        if len(batches) == 3:
            interrupt.request_stop(signal.SIGINT)

    with pytest.raises(RunInterrupted, match="SIGINT"):
        fit(panel, cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 50})}),
            on_batch=on_batch)
    assert len(batches) == 3  # not one batch more


def test_the_backtest_stops_before_its_next_window():
    panel = Panel.from_frame(make_frame(n_series=3, length=200), "h")
    seen = []

    def on_window(done: int, total: int) -> None:
        seen.append(done)
        if done == 1:
            interrupt.request_stop(signal.SIGINT)

    naive = lambda history, horizon, future: seasonal_naive(history, horizon, 24)
    with pytest.raises(RunInterrupted):
        backtest(panel, naive, horizon=12, season_length=24, windows=3, on_window=on_window)
    assert seen == [0, 1]
