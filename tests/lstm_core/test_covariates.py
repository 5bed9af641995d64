"""Covariate roles in the Panel, calendar features, static encoding, and the one covariate path that the
holdout and the published forecast share."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_core import artifacts, engine
from lstm_core.covariates import (StaticEncoder, calendar_names, calendar_values, resolve_calendar_features,
                                  suited_calendar_features)
from tests.conftest import Holdout, fast_config, make_frame, prepare

H = 12


def covariate_frame(n: int = 4, length: int = 100) -> pd.DataFrame:
    """visits (historic), price (future, with H future rows), region (static, categorical), size (static)."""
    frames = []
    rng = np.random.default_rng(3)
    for i, g in make_frame(n_series=n, length=length).groupby("series_id"):
        g = g.reset_index(drop=True)
        future = pd.DataFrame({"series_id": g["series_id"].iloc[0],
                               "ds": pd.date_range(g["ds"].iloc[-1], periods=H + 1, freq="h")[1:], "y": np.nan})
        g = pd.concat([g, future], ignore_index=True)
        g["visits"] = rng.normal(100, 5, len(g))
        g["price"] = 10.0 + np.arange(len(g)) % 5
        g["region"] = ["eu", "us", "eu", "apac"][int(i[1:]) % 4]
        g["size"] = float(int(i[1:]) + 1)
        frames.append(g)
    return pd.concat(frames, ignore_index=True)


SPEC = {"historic_covariates": ["visits"], "future_covariates": ["price"], "static_covariates": ["region", "size"],
        "calendar_features": ["hour", "dayofweek"]}


@pytest.fixture(scope="module")
def prepared():
    cfg = fast_config(**SPEC, training={"epochs": 2})
    df = covariate_frame()
    panel, result = prepare(df, cfg)
    return cfg, df, panel, result


def test_panel_feature_order_roles_and_future_block(prepared):
    cfg, df, panel, result = prepared
    assert result.skipped == []
    assert panel.feature_names == ("y", "visits", "price", "hour_sin", "hour_cos", "dayofweek_sin", "dayofweek_cos",
                                   "region=apac", "region=eu", "region=us", "size")
    assert panel.roles == ("target", "historic", "future", *("calendar",) * 4, *("static",) * 4)
    assert panel.future.shape == (4, H, 9)  # known ahead: price, 4 calendar, 4 static, in feature order
    # price: the given future rows; calendar: from the dates after each series' end; static: constant
    s01 = df[(df["series_id"] == "s01") & df["y"].isna()]
    np.testing.assert_array_equal(panel.future[1, :, 0], s01["price"].to_numpy())
    dates = pd.date_range(panel.last_ds[1], periods=H + 1, freq="h")[1:]
    np.testing.assert_allclose(panel.future[1, :, 1:5], calendar_values(dates, ["hour", "dayofweek"]))
    np.testing.assert_array_equal(panel.future[1, :, 5:], np.repeat(panel.future[1, :1, 5:], H, axis=0))
    assert list(panel.future[1, 0, 5:8]) == [0.0, 0.0, 1.0]  # s01 is in 'us'
    # static numeric standardised over the training series (mean 2.5, std of 1..4)
    np.testing.assert_allclose(panel.future[:, 0, 8], (np.arange(1, 5) - 2.5) / np.std(np.arange(1, 5)))


def test_drop_last_keeps_the_true_known_values_as_the_holdouts_future(prepared):
    _, _, panel, _ = prepared
    history = panel.drop_last(H)
    assert history.future.shape == (4, 2 * H, 9)
    np.testing.assert_array_equal(history.future[:, :H], panel.last_values(H)[:, :, panel.known_index])
    np.testing.assert_array_equal(history.known_ahead(H), panel.last_values(H)[:, :, panel.known_index])


def test_holdout_and_published_forecast_take_the_same_covariate_path(prepared):
    cfg, _, panel, _ = prepared
    model = engine.fit(panel.drop_last(H), cfg)
    ev = Holdout(model, panel, cfg)
    history = panel.drop_last(H)
    np.testing.assert_array_equal(ev.forecasts["lstm"], model.forecast(history, H))
    # historic columns are carried forward: their true holdout values are not used ...
    idx_visits, idx_price = 1, 2
    changed = panel.values.copy()
    tail = np.concatenate([np.arange(e - H, e) for e in panel.offsets[1:]])
    changed[tail, idx_visits] = 1e4
    other = type(panel)(**{**panel.__dict__, "values": changed})
    np.testing.assert_array_equal(Holdout(model, other, cfg).forecasts["lstm"], ev.forecasts["lstm"])
    # ... known-ahead ones are, at their true values, as the published forecast uses the given ones
    changed = panel.values.copy()
    changed[tail, idx_price] = 1e4
    other = type(panel)(**{**panel.__dict__, "values": changed})
    assert np.abs(Holdout(model, other, cfg).forecasts["lstm"] - ev.forecasts["lstm"]).max() > 1e-6
    published = model.forecast(panel, H)
    future = panel.future.copy()
    future[:, :, 0] = 1e4
    assert np.abs(model.forecast(panel, H, future) - published).max() > 1e-6


def test_static_vocabulary_is_saved_with_the_model_and_unseen_categories_encode_as_zeros(prepared, tmp_path):
    cfg, df, panel, _ = prepared
    model = engine.fit(panel.drop_last(H), cfg)
    version = artifacts.save(model, str(tmp_path), cfg.model_key(), config=cfg.public_dict(),
                             fingerprint=artifacts.data_fingerprint(panel))
    loaded = artifacts.load(str(tmp_path), cfg.model_key(), version).forecaster
    assert loaded.static_encoder == model.static_encoder
    assert loaded.static_encoder.categories == {"region": ("apac", "eu", "us")}
    np.testing.assert_allclose(loaded.forecast(panel, H), model.forecast(panel, H), rtol=1e-6)
    # new data: one series moved to a region the model never saw, and only two regions left
    new = df.assign(region=df["region"].replace({"apac": "latam", "us": "eu"}))
    new_panel, _ = prepare(new, cfg)
    assert "region=latam" in new_panel.feature_names  # its own vocabulary ...
    adapted = loaded.adapt(new_panel)
    assert adapted.feature_names == model.feature_names  # ... read through the model's
    s03 = list(adapted.series_ids).index("s03")
    assert list(adapted.future[s03, 0, 5:8]) == [0.0, 0.0, 0.0]  # latam: unseen -> all zeros
    fc = loaded.forecast(new_panel, H)
    assert fc.shape == (4, H) and np.isfinite(fc).all()


def test_static_encoder_round_trip_and_numbers_as_categories():
    static = pd.DataFrame({"region": ["eu", "us", "eu"], "tier": [1, 2, 3], "flag": [True, False, True]},
                          index=["a", "b", "c"])
    enc = StaticEncoder.fit(static)
    assert enc.names == ("region=eu", "region=us", "tier", "flag=False", "flag=True")
    assert StaticEncoder.from_dict(enc.to_dict()) == enc
    values = enc.transform(static)
    np.testing.assert_array_equal(values[:, :2], [[1, 0], [0, 1], [1, 0]])
    np.testing.assert_allclose(values[:, 2], (np.array([1, 2, 3]) - 2) / np.std([1, 2, 3]))


@pytest.mark.parametrize("freq, suited", [
    ("h", ("hour", "dayofweek")), ("15min", ("minute", "hour", "dayofweek")), ("D", ("dayofweek", "dayofmonth", "month")),
    ("W-MON", ("weekofyear",)), ("MS", ("month",)), ("QS", ("quarter",)), ("YS", ()),
])
def test_calendar_features_suited_to_each_frequency(freq, suited):
    assert suited_calendar_features(freq) == suited
    assert resolve_calendar_features("on", freq) == suited
    assert resolve_calendar_features("off", freq) == ()
    assert resolve_calendar_features(["month"], freq) == ("month",)


def test_calendar_auto_follows_one_rule(monkeypatch):
    from lstm_core import covariates

    assert resolve_calendar_features("auto", "h") == ()  # until the accuracy benchmark says otherwise
    monkeypatch.setitem(covariates.AUTO_CALENDAR, "subdaily", True)
    assert resolve_calendar_features("auto", "h") == ("hour", "dayofweek")
    assert resolve_calendar_features("auto", "D") == ()


def test_calendar_values_are_cycles():
    ds = pd.date_range("2026-01-05", periods=48, freq="h")  # a Monday
    v = calendar_values(ds, ["hour", "dayofweek"])
    assert v.shape == (48, 4) and calendar_names(["hour", "dayofweek"]) == ("hour_sin", "hour_cos",
                                                                          "dayofweek_sin", "dayofweek_cos")
    np.testing.assert_allclose(v[0], [0.0, 1.0, 0.0, 1.0], atol=1e-12)  # midnight, Monday
    np.testing.assert_allclose(v[24, :2], v[0, :2], atol=1e-12)  # the next midnight: the same hour
    assert not np.allclose(v[24, 2:], v[0, 2:])  # another day
