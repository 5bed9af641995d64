"""The one modelling path, as a notebook calls it: prepare_data -> get_or_train -> forecast -> score.

No Prefect here: the tasks wrap exactly these calls. A real small LSTM trains on a real local store.
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_core.config import ModelSpec
from lstm_core.model_store import ModelStore
from lstm_core.modelling import forecast, get_or_train, prepare_data, score
from lstm_core.validation import validate_for
from tests.conftest import fast_config, make_frame

H = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two get_or_train calls on one store: the first trains and saves, the second loads."""
    cfg = fast_config(output_url=str(tmp_path_factory.mktemp("out")), retrain="auto")
    data = prepare_data(validate_for(make_frame(n_series=4, length=160), cfg), cfg)
    store = ModelStore.of(cfg)
    spec = cfg.model_spec()
    first, first_decision = get_or_train(store, spec, data, calibrate=True)
    second, second_decision = get_or_train(store, spec, data)
    return cfg, data, store, spec, (first, first_decision), (second, second_decision)


def test_first_call_trains_and_saves_under_the_spec_key(run):
    cfg, data, store, spec, (first, decision), _ = run
    assert decision.action == "train" and decision is first.decision
    assert decision.reason == f"no saved model for this configuration (key {spec.key})"
    assert first.model_key == spec.key == cfg.model_key()
    saved = store.url + f"/{spec.key}/{first.version}/metadata.json"
    import os

    assert os.path.exists(saved)
    # training saw only the data before the earliest backtest cutoff
    assert (data.train_panel.lengths == data.panel.lengths - cfg.backtest.windows * H).all()
    assert first.intervals is not None  # calibrate=True: backtested and saved beside the version


def test_second_call_loads_the_same_version_and_forecasts_the_same(run):
    cfg, data, _, _, (first, _), (second, decision) = run
    assert decision.action == "load" and second.version == first.version
    assert decision.reason.startswith(f"model {first.version} is current")
    assert second.intervals is not None and second.intervals.horizon == first.intervals.horizon
    a = first.final.forecast(data.panel, H)
    b = second.final.forecast(data.panel, H)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_forecast_and_score_return_frames(run):
    cfg, data, store, _, (first, _), _ = run
    fc = forecast(first, data, cfg, store=store)
    frame = fc.future
    assert len(frame) == data.panel.n_series * H
    assert {"series_id", "ds", "step", "yhat", "cutoff", "model_version", "yhat_lo_80", "yhat_hi_95"} <= set(frame)
    assert (frame["model_version"] == first.version).all()
    assert (frame["yhat_lo_95"] <= frame["yhat"]).all() and (frame["yhat"] <= frame["yhat_hi_95"]).all()
    assert fc.intervals_source == "model"  # calibrated by get_or_train and reused
    np.testing.assert_allclose(frame["yhat"].to_numpy().reshape(-1, H), first.final.forecast(data.panel, H))
    scored = score(fc, first, data, cfg)
    pooled = scored.metrics[scored.metrics["series_id"].isna() & scored.metrics["backtest_window"].isna()]
    assert set(pooled["model"]) == {"lstm", "seasonal_naive"}
    assert set(pooled.loc[pooled["model"] == "lstm", "model_version"]) == {first.version}
    assert {"mae", "smape", "mase", "coverage_95", "msis_95"} <= set(pooled["metric"])
    assert scored.holdout.actual.shape == (data.panel.n_series, H)


def test_model_spec_is_what_changes_the_network():
    cfg = fast_config()
    spec = cfg.model_spec()
    assert isinstance(spec, ModelSpec) and spec.key == cfg.model_key() and len(spec.key) == 16
    # how the weights are fitted is not the network: same spec, same key
    other_training = fast_config(training={"epochs": 7, "patience": 3})
    assert other_training.model_spec() == spec and hash(other_training.model_spec()) == hash(spec)
    # a different window or width is another network
    assert fast_config(window=36).model_spec().key != spec.key
    assert fast_config(model={"units": [16]}).model_spec().key != spec.key
    assert spec.settings()["window"] == 24
    with pytest.raises(Exception):
        spec.group = "x"  # frozen


def test_retrain_never_without_a_model_names_the_key(tmp_path):
    cfg = fast_config(output_url=str(tmp_path), retrain="never")
    from lstm_core.errors import ArtifactError

    with pytest.raises(ArtifactError, match=cfg.model_key()):
        get_or_train(ModelStore.of(cfg), cfg.model_spec(), None)


def test_a_refit_model_travels_by_reference_with_the_model_that_scores_its_backtest(tmp_path):
    """Under refit the stored version is the model refit on all data; the one trained before the earliest
    cutoff (it scores the backtest) is kept inside that version, so a shard opening the reference gets both."""
    from lstm_core.model_store import BACKTEST_MODEL, ModelRef

    cfg = fast_config(output_url=str(tmp_path), retrain="auto", refit=True)
    data = prepare_data(validate_for(make_frame(n_series=4, length=160), cfg), cfg)
    store = ModelStore.of(cfg)
    trained, _ = get_or_train(store, cfg.model_spec(), data)
    assert trained.forecaster is not trained.final
    ref = ModelRef.of(trained)
    assert ref.refit
    inner = tmp_path / "models" / ref.model_key / ref.version / BACKTEST_MODEL / ref.version / "metadata.json"
    assert inner.exists()
    # the inner model is below the version, never a version of its own
    from lstm_core.artifacts import list_versions

    assert list_versions(store.location, ref.model_key) == [ref.version]
    opened = store.open(ref, cfg)
    for mine, theirs in ((opened.forecaster, trained.forecaster), (opened.final, trained.final)):
        np.testing.assert_allclose(mine.forecast(data.panel, H), theirs.forecast(data.panel, H), rtol=1e-6)
    assert not np.allclose(opened.forecaster.forecast(data.panel, H), opened.final.forecast(data.panel, H))
    # a later run that loads the refit version scores its backtest with the model inside it too: the refit
    # one has seen every backtest window
    again, decision = get_or_train(store, cfg.model_spec(), data)
    assert decision.action == "load" and again.version == ref.version and ModelRef.of(again).refit
    np.testing.assert_allclose(again.forecaster.forecast(data.panel, H), trained.forecaster.forecast(data.panel, H),
                               rtol=1e-6)
    np.testing.assert_allclose(again.final.forecast(data.panel, H), trained.final.forecast(data.panel, H), rtol=1e-6)
    # without refit, one model does both and nothing is kept inside the version
    once = fast_config(output_url=str(tmp_path / "plain"), retrain="auto")
    plain = ModelRef.of(get_or_train(ModelStore.of(once), once.model_spec(), data)[0])
    assert not plain.refit and not (tmp_path / "plain" / "models" / plain.model_key / plain.version /
                                    BACKTEST_MODEL).exists()


def test_shards_of_a_process_share_one_opened_version_so_the_forecast_loop_is_traced_once(run, caplog):
    """Every shard opens its group's version; each fresh copy traced the compiled forecast loop again and
    TensorFlow warned of frequent retracing. The version is opened once per process."""
    import logging

    from lstm_core.model_store import ModelRef

    cfg, data, store, _, (first, _), _ = run
    ref = ModelRef.of(first)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        opened = [store.open(ref, cfg) for _ in range(6)]  # six shards
        for choice in opened:
            choice.final.forecast(data.panel, H)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    assert all(choice.final is opened[0].final for choice in opened)
