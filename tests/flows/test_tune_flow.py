"""The tune flow and its reuse by the nightly run (issue 14), on a real Prefect test server, models really trained.

tune flow -> trials.parquet, best.yaml, objective.png and the trials table artifact; `tuned: latest` in the
nightly run uses the newest best settings and records them in the manifest; a tuned window longer than the
data's longest series is refused naming the setting; the CLI's tune flags.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from flows.batch_forecast import batch_forecast
from flows.cli import build_parser, main, settings_from_args
from flows.tune import tune
from tasks.tuning import artifact_key
from tests.conftest import make_frame

H = 12
FAST = {
    "freq": "h", "horizon": H, "season_length": 24, "window": 24,
    "model": {"units": [8]},
    "training": {"epochs": 3, "patience": 2, "windows_per_series": 16, "batch_size": 64, "snapshots": 1},
}
SPACE = {"model.units": [4, 8], "model.layers": None, "training.ensemble_size": None, "training.batch_size": None,
         "model.deseasonalize": None, "model.chunk": None, "window": [24, 48]}


def test_tune_flags_become_the_tuning_settings():
    args = build_parser().parse_args(["tune", "--input", "in.parquet", "--output", "out", "--horizon", "12",
                                      "--study", "weekly", "--trials", "7", "--minutes", "2.5", "--workers", "2"])
    settings = settings_from_args(args)
    assert settings["tuning"] == {"study": "weekly", "trials": 7, "minutes": 2.5}
    assert (settings["input_url"], settings["output_url"], settings["horizon"], settings["workers"]) == \
        ("in.parquet", "out", 12, 2)
    assert "tuning" not in settings_from_args(build_parser().parse_args(["run", "--input", "x"]))


def test_a_bad_study_name_is_exit_code_2_before_any_work(tmp_path, capsys):
    frame = make_frame(n_series=2, length=100)
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    code = main(["tune", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
                 "--study", "../escape"])
    assert code == 2 and "tuning.study" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_tune_flow_writes_results_and_the_nightly_run_uses_them(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    frame = make_frame(n_series=5, length=150)
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    out = tmp_path / "out"
    base = {**FAST, "input_url": str(tmp_path / "in.parquet"), "output_url": str(out)}
    summary = tune(settings={**base, "tuning": {"study": "nightly", "trials": 2, "space": SPACE}})
    assert summary.trials == 2 and summary.new_trials == [0, 1] and summary.stopped_by == "trials"
    study = out / "tuning" / "study=nightly"
    trials = pd.read_parquet(study / "trials.parquet")
    assert list(trials["number"]) == [0, 1] and set(trials["state"]) <= {"complete", "pruned", "fail"}
    assert {"objective", "state", "seconds", "window", "model.units"} <= set(trials.columns)
    assert (study / "objective.png").read_bytes()[:4] == b"\x89PNG"
    best = summary.best
    assert best is not None and best.objective == trials["objective"].min()
    assert summary.urls["best_yaml"] == str(study / "best.yaml") and sum(summary.states.values()) == 2
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=[artifact_key("nightly")])
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    assert arts and arts[0].type == "table"
    rows = json.loads(arts[0].data) if isinstance(arts[0].data, str) else arts[0].data
    assert [r["number"] for r in rows] == [0, 1]

    # The nightly run with tuned: latest takes the study's best settings and says so in its manifest.
    manifest = batch_forecast(settings={**base, "tuned": "latest", "tuning": {"study": "nightly"}})
    assert manifest["status"] == "succeeded"
    assert manifest["tuned"]["study"] == "nightly" and manifest["tuned"]["trial"] == best.trial
    assert manifest["config"]["window"] == best.params["window"]
    assert manifest["config"]["model"]["units"] == [best.params["model.units"]]
    from lstm_core.config import load_config
    from lstm_core.tuning import apply_tuned

    tuned_config, _ = apply_tuned(load_config(overrides={**base, "tuned": "latest", "tuning": {"study": "nightly"}}))
    assert manifest["model_key"] == tuned_config.model_key()  # the model key follows the tuned settings
    plain = batch_forecast(settings=base)
    assert plain["tuned"] is None

    # best.yaml is a configuration file the run accepts as it is
    assert yaml.safe_load((study / "best.yaml").read_text())["window"] == best.params["window"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_tuned_window_longer_than_the_longest_series_is_refused(tmp_path):
    frame = make_frame(n_series=4, length=150)
    frame.to_parquet(tmp_path / "long.parquet", index=False)
    out = tmp_path / "out"
    space = {**SPACE, "window": [120]}  # fits the 150-point series it is tuned on
    tune(settings={**FAST, "input_url": str(tmp_path / "long.parquet"), "output_url": str(out),
                   "tuning": {"trials": 1, "space": space}})
    # shorter series are padded at the front (issue 22); a window no series fills cannot be used
    short = pd.concat([frame[frame["series_id"] != "s03"].groupby("series_id").tail(80),
                       frame[frame["series_id"] == "s03"].tail(90)], ignore_index=True)
    short.to_parquet(tmp_path / "short.parquet", index=False)
    from lstm_core.config import ConfigError

    with pytest.raises(ConfigError, match=r"setting 'window': the tuned value 120 .*longest series \('s03', 90 points"):
        batch_forecast(settings={**FAST, "input_url": str(tmp_path / "short.parquet"), "output_url": str(out),
                                 "tuned": "latest", "run_id": "short"})
    manifest = json.loads((out / "runs" / "short" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "'window'" in manifest["error"]
    assert manifest["tuned"]["settings"]["window"] == 120
    assert not (out / "predictions" / "run=short").exists() or not any((out / "predictions" / "run=short").iterdir())
