"""Deseasonalisation: exact round trip, fitted on the history given only, skipped with a reason where it cannot apply."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from lstm_core import engine
from lstm_core.panel import Panel
from lstm_core.scaling import TargetTransform
from lstm_core.seasonality import MIN_STRENGTH, SeasonalIndices, classical_indices, seasonal_strength
from tests.conftest import fast_config, prepare

M = 24


def panel_of(rows: dict[str, np.ndarray]) -> Panel:
    frames = [pd.DataFrame({"series_id": k, "ds": pd.date_range("2026-01-01", periods=len(v), freq="h"), "y": v})
              for k, v in rows.items()]
    return Panel.from_frame(pd.concat(frames, ignore_index=True).astype({"series_id": "string"}), "h")


def seasonal(n: int, level: float = 50.0, amp: float = 0.3, seed: int = 0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, 0.02 * level, n)
    return level * (1 + amp * np.sin(2 * np.pi * t / M + phase)) + noise


def test_classical_indices_recover_a_known_profile():
    t = np.arange(24 * 20)
    profile = np.sin(2 * np.pi * np.arange(M) / M) * 3
    y = 0.01 * t + profile[t % M]
    np.testing.assert_allclose(classical_indices(y, M), profile - profile.mean(), atol=1e-9)
    with pytest.raises(ValueError, match="at least two seasons"):
        classical_indices(y[:40], M)


def test_seasonal_strength_tells_a_strong_profile_from_noise():
    rng = np.random.default_rng(7)
    t = np.arange(24 * 30)
    strong = np.sin(2 * np.pi * t / M) + rng.normal(0, 0.2, len(t))
    weak = 0.1 * np.sin(2 * np.pi * t / M) + rng.normal(0, 1.0, len(t))
    assert seasonal_strength(strong, M) > 0.9 > MIN_STRENGTH > 0.3 > seasonal_strength(weak, M)
    assert seasonal_strength(strong[:30], M) == 0.0  # under two seasons: nothing to measure
    assert seasonal_strength(np.ones(200), M) == 0.0


def test_remove_then_restore_is_the_identity_on_history_and_future():
    p = panel_of({"a": np.log(seasonal(300)), "b": np.log(seasonal(260, 9.0, seed=1, phase=1.0))})
    s = SeasonalIndices.fit(p, M)
    assert s.active.tolist() == [True, True]
    removed = s.remove(p)
    assert not np.allclose(removed.y, p.y)
    np.testing.assert_allclose(removed.y + s.profile(p), p.y, rtol=0, atol=1e-12)
    # forecasts continue each series' positions: restore() adds the profile at t = n, n + 1, ...
    z = np.zeros((2, 30))
    back = s.restore(z, p.lengths)
    for i, n in enumerate(p.lengths):
        np.testing.assert_allclose(back[i], s.indices[i, (n + np.arange(30)) % M])
    # seasonalise o deseasonalise = identity for forecasts too
    fc = np.random.default_rng(3).normal(size=(2, 30))
    np.testing.assert_allclose(s.restore(fc, p.lengths) - s.future(p.lengths, 30), fc, atol=1e-12)


def test_indices_are_fitted_on_the_training_part_only():
    y = np.log(seasonal(300))
    wild = y.copy()
    wild[-48:] = np.random.default_rng(5).normal(20, 5, 48)
    a = SeasonalIndices.fit(panel_of({"s": y}).drop_last(48), M)
    b = SeasonalIndices.fit(panel_of({"s": wild}).drop_last(48), M)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.allclose(SeasonalIndices.fit(panel_of({"s": wild}), M).indices, a.indices)


def test_series_without_the_season_or_too_short_get_no_profile_and_a_reason():
    rng = np.random.default_rng(2)
    walk = 100 + np.cumsum(rng.normal(0, 1, 300))
    p = panel_of({"walk": walk, "short": seasonal(60), "ok": seasonal(300)})
    s = SeasonalIndices.fit(p, M)
    assert s.active.tolist() == [False, False, True]
    assert s.reasons[0].startswith("seasonal strength 0.") and "at lag 24 is below 0.6" in s.reasons[0]
    assert s.reasons[2] == ""
    assert "shorter than 3 seasons" in s.reasons[1]
    assert not s.indices[:2].any()
    off = SeasonalIndices.fit(p, M, "off")
    assert not off.active.any() and off.remove(p) is p


def test_multiplicative_mode_skips_series_with_zeros_or_negatives_with_the_reason():
    solar = np.clip(seasonal(300, 10.0, amp=1.5), 0, None)  # zero every night
    assert (solar == 0).any()
    p = panel_of({"solar": solar, "load": seasonal(300, seed=4)})
    transform = TargetTransform.fit(p, "auto")
    assert transform.log_mask.tolist() == [False, True]
    shaped = transform.apply(p)
    mult = SeasonalIndices.fit(shaped, M, "multiplicative", transform.log_mask)
    assert mult.active.tolist() == [False, True]
    assert "multiplicative seasonality needs positive values" in mult.reasons[0]
    auto = SeasonalIndices.fit(shaped, M, "auto", transform.log_mask)
    assert auto.active.tolist() == [True, True]  # additive for the series with zeros


def test_the_forecaster_restores_the_seasonal_shape_and_logs_what_it_skipped(caplog):
    rows = {f"s{i}": seasonal(24 * 14, 10.0 * (i + 1), seed=i, phase=i) for i in range(4)}
    rows["flat"] = 30 + np.random.default_rng(9).normal(0, 1, 24 * 14)
    df = pd.concat([pd.DataFrame({"series_id": k, "ds": pd.date_range("2026-01-01", periods=len(v), freq="h"),
                                  "y": v}) for k, v in rows.items()], ignore_index=True)
    cfg = fast_config(horizon=24, window=48, model={"chunk": 12, "patch": 12, "deseasonalize": "auto"},
                      training={"epochs": 2})
    panel, _ = prepare(df.astype({"series_id": "string"}), cfg)
    with caplog.at_level(logging.INFO, logger="lstm_core.engine"):
        f = engine.fit(panel.drop_last(24), cfg)
    assert f.training["deseasonalized_series"] == 4
    assert "deseasonalised 4 of 5 series" in caplog.text and "seasonal strength" in caplog.text
    fc = f.forecast(panel, 24)
    truth = np.stack([seasonal(24 * 15, 10.0 * (i + 1), seed=i, phase=i)[-24:] for i in range(4)])
    # even a barely trained network keeps the daily shape: the profile does the seasonal work
    order = [list(panel.series_ids).index(f"s{i}") for i in range(4)]
    corr = [np.corrcoef(fc[order[i]], truth[i])[0, 1] for i in range(4)]
    assert min(corr) > 0.9, corr
