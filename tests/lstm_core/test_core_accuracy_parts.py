"""The general accuracy devices: log target, snapshot ensemble (deseasonalisation: test_core_seasonality)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dataclasses import replace

from lstm_core.engine import fit
from lstm_core.panel import Panel
from lstm_core.scaling import TargetTransform
from tests.conftest import fast_config, make_frame, prepare


def _panel(rows: dict[str, np.ndarray]) -> Panel:
    frames = [pd.DataFrame({"series_id": k, "ds": pd.date_range("2026-01-01", periods=len(v), freq="h"), "y": v})
              for k, v in rows.items()]
    df = pd.concat(frames, ignore_index=True)
    df["series_id"] = df["series_id"].astype("string")
    return Panel.from_frame(df, "h")


def test_log_transform_only_for_positive_series_and_inverts_exactly():
    rng = np.random.default_rng(0)
    pos, mixed = rng.uniform(1, 100, 50), rng.normal(0, 1, 50)
    panel = _panel({"a": pos, "b": mixed})
    t = TargetTransform.fit(panel, "auto")
    assert t.log_mask.tolist() == [True, False]
    shaped = t.apply(panel)
    np.testing.assert_allclose(shaped.y[:50], np.log(pos))
    np.testing.assert_array_equal(shaped.y[50:], mixed)
    np.testing.assert_allclose(t.inverse(np.stack([np.log(pos[:5]), mixed[:5]])), np.stack([pos[:5], mixed[:5]]))
    assert not TargetTransform.fit(panel, "none").log_mask.any()
    from lstm_core.errors import DataValidationError

    with pytest.raises(DataValidationError, match=r"needs positive values; series \['b'\]"):
        TargetTransform.fit(panel, "log")


def test_snapshot_ensemble_keeps_the_best_epochs_as_members():
    cfg = fast_config(training={"epochs": 4, "patience": 10, "snapshots": 3})
    panel, _ = prepare(make_frame(n_series=4, length=120), cfg)
    trained = fit(panel.drop_last(cfg.horizon), cfg)
    assert len(trained.members) == 3
    kept = trained.training["members"][0]["snapshot_epochs"]
    val = trained.training["members"][0]["history"]["val_loss"]
    assert kept == sorted(kept, key=lambda e: val[e - 1])[:3] and kept[0] == int(np.argmin(val)) + 1
    w = [m.get_weights()[0] for m in trained.members]
    assert not np.array_equal(w[0], w[1])
    yhat = trained.forecast(panel, cfg.horizon)
    members = [replace(trained, members=[m]).forecast(panel, cfg.horizon) for m in trained.members]
    np.testing.assert_allclose(yhat, _mean_in_model_space(members, trained, panel), rtol=1e-5)


def _mean_in_model_space(per_member: list[np.ndarray], trained, panel) -> np.ndarray:
    """Members are averaged in model space (log here), so the ensemble is their geometric mean."""
    mask = TargetTransform.fit(panel, trained.target_transform).log_mask
    stacked = np.stack(per_member)
    out = stacked.mean(axis=0)
    out[mask] = np.exp(np.log(stacked[:, mask]).mean(axis=0))
    return out
