"""Tuning (issue 14): real Optuna studies over really trained small LSTMs, judged by backtests.

A 3-trial study in process and on a 2-worker LocalCluster, pruning recorded, the budget (trials and minutes),
best.yaml as a configuration, resuming, the search space, and the tuned-window refusal.
"""
from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from lstm_core import tuning
from lstm_core.config import ConfigError, load_config
from tests.conftest import fast_config, make_frame, prepare

# A small space so a trial trains in a second or two; the rest stays at the configuration's values.
SPACE = {"model.units": [4, 8], "model.layers": None, "training.ensemble_size": None, "training.batch_size": None,
         "training.loss": ["mae", "huber"], "model.deseasonalize": None}


def tiny_config(tmp_path, **over):
    return fast_config(output_url=str(tmp_path / "out"), tuning={"space": SPACE, **over.pop("tuning", {})}, **over)


@pytest.fixture(scope="module")
def panel():
    return prepare(make_frame(n_series=6, length=160), fast_config())[0]


def _valid(result: tuning.TuneResult, config, n: int) -> pd.DataFrame:
    """Checks every trials table must pass; returns the table read back from storage."""
    stored = pd.read_parquet(result.urls["trials"])
    assert len(stored) == n and list(stored["number"]) == list(range(n))
    assert set(stored["state"]) <= {"complete", "pruned", "fail"}
    done = stored[stored["state"] == "complete"]
    assert len(done) and np.isfinite(done["objective"]).all() and (done["objective"] > 0).all()
    assert (stored["seconds"] > 0).all()
    space = tuning.narrow_to_data(tuning.search_space(config), 160)
    for name, dim in space.items():
        if dim.choices is not None:
            assert set(stored[name]) <= set(dim.choices), name
        elif dim.low is not None:
            assert stored[name].between(dim.low, dim.high).all(), name
    # the objective is the pooled backtest MASE of the trial's settings, never a made-up number
    assert (done["seasonal_naive_mase"] > 0).all()
    best = done.loc[done["objective"].idxmin()]
    assert result.best.number == best["number"]
    return stored


def test_three_trial_study_in_process_gives_valid_results(tmp_path, panel):
    cfg = tiny_config(tmp_path)
    result = tuning.tune(panel, cfg, trials=3)
    assert result.new_trials == [0, 1, 2] and result.stopped_by == "trials"
    stored = _valid(result, cfg, 3)
    assert (stored["state"] == "complete").all()  # the median pruner waits for 3 trials before it prunes
    # trial 0 of a new study is the configuration's own settings: the study measures what it must beat
    first = result.study.get_trials()[0]
    assert first.params == tuning.baseline_params(cfg, tuning.search_space(cfg)) and first.user_attrs["baseline"]
    assert first.params["window"] == cfg.window and first.params["training.loss"] == cfg.training.loss
    for name in ("journal", "trials", "plot", "best_yaml", "best_json"):
        assert (tmp_path / "out" / "tuning" / "study=default" / result.urls[name].rsplit("/", 1)[1]).exists()
    # the files' contract: trials.parquet's columns (`window` by that name), best.json's keys, best.yaml = its settings
    assert list(stored.columns[:11]) == ["study", "number", "state", "objective", "seconds", "started_at",
                                         "finished_at", "pruned_epoch", "stopped_by", "seasonal_naive_mase", "error"]
    assert set(stored.columns[11:]) == set(tuning.search_space(cfg)) and "window" in stored.columns
    best_json = json.load(open(result.urls["best_json"]))
    assert list(best_json) == ["metric", "objective", "series", "settings", "study", "trial", "trials", "tuned",
                               "written_at"]  # written with sorted keys
    assert (best_json["study"], best_json["trial"], best_json["trials"], best_json["series"]) == \
        ("default", result.best.number, 3, 6)
    assert best_json["metric"] == "pooled backtest MASE" and best_json["objective"] == result.best.value
    assert best_json["tuned"] == sorted({"window", *result.best.params})
    assert yaml.safe_load(open(result.urls["best_yaml"])) == best_json["settings"]
    assert open(result.urls["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_three_trial_study_on_a_two_worker_local_cluster(tmp_path, panel):
    dask = pytest.importorskip("dask")
    from distributed import Client, LocalCluster

    cfg = tiny_config(tmp_path)
    env = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          env=env) as cluster, Client(cluster) as client:
            result = tuning.tune(panel, cfg, trials=3, client=client)
    stored = _valid(result, cfg, 3)
    trials = result.study.get_trials(deepcopy=False)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both workers ran trials
    for w in workers:  # never two trials on one worker at once
        spans = sorted((t.user_attrs["worker_start"], t.user_attrs["worker_end"]) for t in trials
                       if t.user_attrs["worker"] == w)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # the same settings are drawn as in process (seeded TPE; its first trials are its random start)
    alone = tuning.tune(panel, tiny_config(tmp_path / "alone"), trials=3)
    assert [t.params for t in alone.study.get_trials()] == [t.params for t in trials]
    assert np.allclose(alone.trials["objective"], stored["objective"], rtol=1e-4)


def test_a_pruned_trial_is_recorded_as_pruned(tmp_path, panel):
    # A real pruner with a bar no trial clears: each trial is stopped by the Keras callback after its first
    # epoch's validation loss, and recorded as pruned (with the epoch), not as failed or complete.
    cfg = tiny_config(tmp_path, training={"epochs": 5, "patience": 5})
    result = tuning.tune(panel, cfg, trials=2, pruner=optuna.pruners.ThresholdPruner(upper=1e-9))
    stored = pd.read_parquet(result.urls["trials"])
    assert list(stored["state"]) == ["pruned", "pruned"]
    assert list(stored["pruned_epoch"]) == [1, 1]
    assert stored["objective"].isna().all() and stored["stopped_by"].str.contains("pruned at epoch 1").all()
    assert result.best is None and "best_yaml" not in result.urls  # no best settings from pruned trials


def test_the_median_pruner_stops_a_trial_worse_than_the_others(tmp_path, panel):
    # Three finished trials with low validation errors at every epoch; a trial that does worse after the
    # warm-up is pruned by the study's own median rule.
    cfg = tiny_config(tmp_path, training={"epochs": 8, "patience": 8})
    study = tuning.make_study(cfg)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(tuning.PRUNE_STARTUP_TRIALS):
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=0.1,
                                                  intermediate_values={s: 1e-6 for s in range(1, 9)}))
    trial = study.ask()
    outcome = tuning.evaluate_trial(trial, {}, tuning.tuning_panel(panel, cfg), cfg)
    assert outcome.state == "pruned"
    assert max(study.get_trials()[-1].intermediate_values) == tuning.PRUNE_WARMUP_EPOCHS + 1


def test_the_budget_stops_the_study(tmp_path, panel):
    cfg = tiny_config(tmp_path)
    by_trials = tuning.tune(panel, cfg, trials=2)
    assert by_trials.stopped_by == "trials" and by_trials.new_trials == [0, 1]
    # Minutes: a trial that would train 500 epochs is stopped by the deadline and no further trial starts. Its
    # score is of a model cut short, not comparable with fully trained ones: recorded as pruned, with the reason,
    # and never the best (no best.yaml from it); the earlier study's best is kept.
    cfg = tiny_config(tmp_path / "minutes", training={"epochs": 500, "patience": 500})
    by_minutes = tuning.tune(panel, cfg, trials=None, minutes=0.001)
    assert by_minutes.stopped_by == "minutes" and by_minutes.new_trials == [0]
    trial = by_minutes.study.get_trials()[0]
    assert trial.state.name == "PRUNED" and "time_budget" in trial.user_attrs["stopped_by"]
    assert "time budget ran out before training finished" in trial.user_attrs["pruned"]
    assert by_minutes.best is None and "best_yaml" not in by_minutes.urls
    assert by_trials.best is not None and "best_yaml" in by_trials.urls
    with pytest.raises(ConfigError, match="tuning.trials"):
        tuning.tune(panel, cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"trials": None})}))


def test_best_yaml_loads_as_a_config_and_changes_the_model_key(tmp_path, panel):
    cfg = tiny_config(tmp_path)
    result = tuning.tune(panel, cfg, trials=3)
    best = result.best
    loaded = load_config(result.urls["best_yaml"])  # what run --config does with it
    assert loaded.window == best.params["window"]
    assert loaded.model.units == [best.params["model.units"]]
    assert loaded.training.loss == best.params["training.loss"]
    assert math.isclose(loaded.model.dropout, best.params["model.dropout"])
    assert (loaded.freq, loaded.horizon, loaded.season_length) == ("h", 12, 24)  # tuned for these data
    # the tuned settings change the network: a model of the base configuration is never loaded for it
    base = load_config(overrides={"freq": "h", "horizon": 12, "season_length": 24})
    assert loaded.model_key() != base.model_key()
    untuned = yaml.safe_load(open(result.urls["best_yaml"]))
    assert loaded.model_key() == load_config(overrides=untuned).model_key()


def test_a_resumed_study_continues_its_trial_numbers(tmp_path, panel):
    cfg = tiny_config(tmp_path)
    first = tuning.tune(panel, cfg, trials=2)
    again = tuning.tune(panel, cfg, trials=2)  # a new process would read the same journal from the output URL
    assert first.new_trials == [0, 1] and again.new_trials == [2, 3]
    stored = pd.read_parquet(again.urls["trials"])
    assert list(stored["number"]) == [0, 1, 2, 3]
    params = [t.params for t in again.study.get_trials()]
    assert params[:2] == [t.params for t in first.study.get_trials()]
    assert params[2] != params[0]  # the resumed sampler draws on, it does not repeat the first trials
    other = tuning.tune(panel, tiny_config(tmp_path, tuning={"study": "other"}), trials=1)
    assert other.new_trials == [0]  # another name, another study


def test_a_trial_interrupted_by_its_process_is_resumed_as_failed(tmp_path, panel):
    cfg = tiny_config(tmp_path)
    study = tuning.make_study(cfg)
    study.ask()  # running when "the process ended"
    tuning.save_journal(study, cfg)
    trials = tuning.load_trials(cfg)
    assert [t.state.name for t in trials] == ["FAIL"] and "interrupted" in trials[0].user_attrs["error"]


def test_the_space_narrows_widens_and_refuses_by_name(tmp_path):
    cfg = fast_config(tuning={"space": {"model.dropout": None, "training.windows_per_series": [8, 16],
                                        "model.units": {"low": 4, "high": 16, "step": 4}}})
    space = tuning.search_space(cfg)
    assert "model.dropout" not in space  # narrowed: the configuration's own value
    assert space["training.windows_per_series"].choices == (8, 16)  # widened
    assert space["model.units"].is_int and (space["model.units"].low, space["model.units"].high) == (4, 16)
    assert set(tuning.default_space(cfg)) >= {"model.units", "model.layers", "model.dropout", "window",
                                              "training.learning_rate", "training.loss", "training.batch_size",
                                              "model.deseasonalize", "model.chunk", "training.ensemble_size"}
    for bad, message in [({"input_url": ["a", "b"]}, "tuning.space.input_url': not a tunable setting"),
                         ({"model.unit": [4]}, "tuning.space.model.unit': not a tunable setting"),
                         ({"training.learning_rate": {"low": 0, "high": 1, "log": True}}, "log scale needs low"),
                         ({"model.units": [[8, 8]]}, "model.layers"),
                         ({"model.dropout": {"low": 0.5}}, "both low and high")]:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
            tuning.search_space(fast_config(tuning={"space": bad}))
    # window choices the data cannot use are left out; none left is refused naming the setting
    narrowed = tuning.narrow_to_data(tuning.search_space(cfg), 40)
    assert max(narrowed["window"].choices) <= 40
    with pytest.raises(ConfigError, match="tuning.space.window"):
        tuning.narrow_to_data(tuning.search_space(cfg), 5)


def test_error_scale_makes_losses_comparable():
    assert tuning.error_scale("mae", 0.3) == 0.3
    assert math.isclose(tuning.error_scale("mse", 0.09), 0.3)
    assert math.isclose(tuning.error_scale("huber", 0.5 * 0.3 ** 2), 0.3)  # quadratic part
    assert math.isclose(tuning.error_scale("huber", 2.5), 3.0)  # linear part: |e| - 0.5


def test_the_final_window_and_the_sample_stay_out_of_tuning(panel):
    cfg = fast_config(tuning={"max_series": 4})
    data = tuning.tuning_panel(panel, cfg)
    assert data.n_series == 4
    kept = np.isin(panel.series_ids, data.series_ids)
    assert (data.lengths == panel.lengths[kept] - cfg.horizon).all()  # the last H points never enter
    assert list(tuning.tuning_panel(panel, cfg).series_ids) == list(data.series_ids)  # a stable sample


def test_tuned_latest_applies_the_newest_best_settings_and_refuses_a_window_the_data_cannot_use(tmp_path, panel):
    cfg = tiny_config(tmp_path)
    with pytest.raises(ConfigError, match="tuned.*no best settings"):
        tuning.apply_tuned(cfg.model_copy(update={"tuned": "latest"}))
    result = tuning.tune(panel, cfg, trials=2)
    run_cfg = fast_config(output_url=cfg.output_url, tuned="latest", input_url="elsewhere.parquet")
    tuned, record = tuning.apply_tuned(run_cfg)
    best = result.best
    assert record is not None and record.trial == best.number and record.study == "default"
    assert record.objective == best.value and record.settings["window"] == best.params["window"]
    assert tuned.window == best.params["window"] and tuned.model.units == [best.params["model.units"]]
    assert tuned.input_url == "elsewhere.parquet" and tuned.output_url == cfg.output_url  # the run's own
    assert tuned.model_key() != run_cfg.model_key()
    assert tuning.apply_tuned(fast_config()) == (fast_config(), None)  # tuned: off changes nothing
    tuning.check_tuned_fits(tuned, panel)  # 160 points: fits
    long = tuned.model_copy(update={"window": 200})
    with pytest.raises(ConfigError, match=r"setting 'window': the tuned value 200 .* longest series \('s0\d', 160"):
        tuning.check_tuned_fits(long, panel)


def test_a_best_json_naming_a_setting_outside_the_model_is_refused(tmp_path, panel):
    # best.json lives in storage: whoever can write there must not redirect a run's inputs or outputs through it
    cfg = tiny_config(tmp_path)
    result = tuning.tune(panel, cfg, trials=1)
    path = result.urls["best_json"]
    best = json.load(open(path))
    best["tuned"].append("input_url")
    best["settings"]["input_url"] = "s3://elsewhere/data.parquet"
    open(path, "w").write(json.dumps(best))
    with pytest.raises(ConfigError, match="'input_url', which is not a tunable setting"):
        tuning.apply_tuned(cfg.model_copy(update={"tuned": "latest"}))
