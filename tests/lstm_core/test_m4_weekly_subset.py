"""Real data: on 40 M4 weekly series, the default configuration beats seasonal naive on MASE.

The data come from `../shared/data/m4-weekly`; without them the test skips locally and fails in CI.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core.config import load_config
from lstm_core.metrics import mase_scale, per_series, seasonal_naive
from tests.conftest import shared_path


@pytest.mark.slow
def test_default_configuration_beats_seasonal_naive_on_m4_weekly_subset():
    from lstm_core.engine import fit, prepare  # TensorFlow: when the test runs, not when it is collected

    train = pd.read_parquet(shared_path("data", "m4-weekly", "train.parquet"))
    test = pd.read_parquet(shared_path("data", "m4-weekly", "test.parquet"))
    ids = sorted(train["series_id"].unique())[::9][:40]  # spread over the set, fixed
    train, test = train[train["series_id"].isin(ids)], test[test["series_id"].isin(ids)]
    cfg = load_config(overrides={"freq": "W-MON", "horizon": 13, "season_length": 52}, environ={})

    panel, report = prepare(train, cfg)
    assert panel.n_series == 40 and not report.skipped
    model = fit(panel.drop_last(cfg.horizon), cfg)
    yhat = model.forecast(panel, cfg.horizon)

    actual = test.sort_values(["series_id", "ds"])["y"].to_numpy().reshape(40, cfg.horizon)
    scale = mase_scale(panel, 1)  # M4's weekly MASE period
    lstm = per_series(actual, yhat, scale)["mase"].mean()
    snaive = per_series(actual, seasonal_naive(panel, cfg.horizon, cfg.season_length), scale)["mase"].mean()
    naive = per_series(actual, seasonal_naive(panel, cfg.horizon, 1), scale)["mase"].mean()
    assert np.isfinite(lstm)
    assert lstm < snaive, (lstm, snaive, naive)
