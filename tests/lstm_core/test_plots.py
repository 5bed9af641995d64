"""Run plots: PNG bytes from plain data, readable in edge cases (NaN errors, one series, no history)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.image import imread

from lstm_core import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _image(data: bytes) -> np.ndarray:
    assert data[:8] == PNG
    return imread(io.BytesIO(data), format="png")


def test_loss_curves_draw_each_member_and_the_note():
    hist = {"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.7, 0.72]}
    img = _image(plots.loss_curves([hist, hist], title="model v1", best_epochs=[2, 2], note="loaded"))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img.std() > 0.05  # something is drawn, not a blank canvas


def test_loss_curves_without_history_still_render():
    assert plots.loss_curves([{}], title="nothing recorded")[:8] == PNG


def test_pick_examples_ignores_nan_and_orders_by_error():
    mase = np.array([0.9, np.nan, 0.2, 1.5, 0.7])
    assert plots.pick_examples(mase) == {"best": 2, "median": 4, "worst": 3}
    assert plots.pick_examples(np.array([np.nan, np.inf])) == {}
    assert plots.pick_examples(np.array([0.4])) == {"best": 0, "median": 0, "worst": 0}


def test_holdout_examples_and_error_distribution():
    ds = pd.date_range("2026-01-01", periods=60, freq="h").to_numpy()
    ex = plots.SeriesExample("best", "s01", ds[:48], np.sin(np.arange(48)), ds[48:], np.sin(np.arange(48, 60)),
                             {"LSTM": np.zeros(12), "seasonal naive": np.ones(12)}, {"LSTM": 0.5, "naive": 0.8})
    img = _image(plots.holdout_examples([ex, ex, ex]))
    assert img.shape[0] > img.shape[1] * 0.6  # three stacked panels
    assert plots.holdout_examples([])[:8] == PNG
    a = np.array([0.5, 0.7, np.nan, 1.2])
    b = np.array([0.6, 0.6, 0.9, np.inf])
    assert _image(plots.error_distribution(a, b)).std() > 0.05
    assert plots.error_distribution(np.array([np.nan]), np.array([np.nan]))[:8] == PNG
