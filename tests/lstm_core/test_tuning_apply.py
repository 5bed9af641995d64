"""What a nightly run reads of tuning (issue 24, step 3): `lstm_core.tuning.apply` and the `best.json` record.

- The batch flow and `tuned: latest` never import the study code (Optuna, the trial, the study loop, the
  results writer): checked in a fresh interpreter, after really applying a best.json.
- A best.json written by the code before the tuning package was split (kept here as it was written) reads into
  `BestRecord`, writes back byte for byte, and applies as it did.
- Whatever a best.json holds (it lives in storage others can write), `tuned: latest` either applies it or
  refuses it with a ConfigError naming the file: never another exception.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_core.tuning as tuning
from lstm_core.config import ConfigError, load_config
from lstm_core.records import Tuned
from lstm_core.tuning import BestRecord, apply_tuned

ROOT = Path(__file__).resolve().parents[2]
STUDY_CODE = ("optuna", "optuna_integration", "lstm_core.tuning.study", "lstm_core.tuning.trial",
              "lstm_core.tuning.journal", "lstm_core.tuning.results")

# Written by `tune` (lstm_core/tuning.py before the split, a 2-trial study named 'pinned'), unchanged.
OLD_BEST_JSON = """{
  "metric": "pooled backtest MASE",
  "objective": 0.8829312451677899,
  "series": 6,
  "settings": {
    "calendar_features": "auto",
    "extra_season_lengths": [],
    "freq": "h",
    "future_covariates": [],
    "historic_covariates": [],
    "horizon": 12,
    "mode": "global",
    "model": {
      "chunk": 6,
      "dropout": 0.21959818254342153,
      "units": [
        8
      ]
    },
    "scaler": "naive",
    "season_length": 24,
    "seed": 42,
    "static_covariates": [],
    "target_transform": "auto",
    "training": {
      "learning_rate": 0.0011906379991333106,
      "loss": "huber"
    },
    "tuning": {
      "study": "pinned"
    },
    "window": 48
  },
  "study": "pinned",
  "trial": 1,
  "trials": 2,
  "tuned": [
    "model.chunk",
    "model.dropout",
    "model.units",
    "training.learning_rate",
    "training.loss",
    "window"
  ],
  "written_at": "2026-12-06T17:35:26.412015+00:00"
}"""
APPLIED = {"model.chunk": 6, "model.dropout": 0.21959818254342153, "model.units": [8],
           "training.learning_rate": 0.0011906379991333106, "training.loss": "huber", "window": 48}


def _study(out: Path, text: str, study: str = "pinned") -> Path:
    folder = out / "tuning" / f"study={study}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.json").write_text(text)
    return folder


def _run_config(out: Path, study: str = "pinned"):
    return load_config(overrides={"output_url": str(out), "tuned": "latest", "freq": "h", "horizon": 12,
                                  "tuning": {"study": study}})


def test_the_batch_flow_and_tuned_latest_never_import_the_study_code(tmp_path):
    _study(tmp_path / "out", OLD_BEST_JSON)
    script = f"""
import json, sys
import flows.batch_forecast  # the nightly flow, as the CLI and a deployment import it
loaded = sorted(sys.modules)
from lstm_core.config import load_config
from lstm_core.tuning import apply_tuned, check_tuned_fits
config, record = apply_tuned(load_config(overrides={{"output_url": {str(tmp_path / "out")!r}, "tuned": "latest",
                                                    "freq": "h", "tuning": {{"study": "pinned"}}}}))
print(json.dumps({{"after_import": loaded, "after_apply": sorted(sys.modules), "window": config.window,
                  "trial": record.trial}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (seen["window"], seen["trial"]) == (48, 1)  # the best.json was really applied
    assert "lstm_core.tuning.apply" in seen["after_import"]  # the batch flow's way to tuned settings
    for when in ("after_import", "after_apply"):
        study_code = [m for m in seen[when] if m.split(".")[0] in STUDY_CODE or m.startswith(STUDY_CODE)]
        assert study_code == [], (when, study_code)


def test_a_best_json_written_before_the_split_reads_writes_back_and_applies_as_it_did(tmp_path):
    record = BestRecord.parse(OLD_BEST_JSON, "best.json")
    assert (record.study, record.trial, record.trials, record.series) == ("pinned", 1, 2, 6)
    # the same bytes as `write_json` writes them: the file's JSON is unchanged by the typed record
    assert json.dumps(record.to_json(), indent=2, sort_keys=True) == OLD_BEST_JSON
    _study(tmp_path / "out", OLD_BEST_JSON)
    run = _run_config(tmp_path / "out")
    tuned, applied = apply_tuned(run)
    assert isinstance(applied, Tuned)
    assert applied.settings == APPLIED and (applied.study, applied.trial, applied.objective) == \
        ("pinned", 1, 0.8829312451677899)
    assert applied.metric == "pooled backtest MASE" and applied.written_at == "2026-12-06T17:35:26.412015+00:00"
    assert applied.best_yaml == str(tmp_path / "out" / "tuning" / "study=pinned" / "best.yaml")
    assert (tuned.window, tuned.model.units, tuned.model.chunk, tuned.training.loss) == (48, [8], 6, "huber")
    assert tuned.model.dropout == APPLIED["model.dropout"]
    assert tuned.training.learning_rate == APPLIED["training.learning_rate"]
    assert tuned.horizon == 12 and tuned.output_url == run.output_url  # data settings and outputs: the run's
    # its settings are the best.yaml a tune wrote beside it: a configuration file `run --config` accepts
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(record.settings, sort_keys=True))
    assert load_config(str(path)).window == 48


def test_a_best_json_without_the_keys_a_tune_adds_applies():
    # a hand-written one (the security tests plant such files): no trials, no series
    text = json.dumps({"study": "pinned", "trial": 3, "objective": 0.9, "metric": "pooled backtest MASE",
                       "settings": {"model": {"units": [8]}, "window": 24}, "tuned": ["model.units", "window"],
                       "written_at": "2026-12-01T00:00:00+00:00"})
    with tempfile.TemporaryDirectory() as tmp:
        _study(Path(tmp), text)
        tuned, applied = apply_tuned(_run_config(Path(tmp)))
    assert applied is not None and applied.settings == {"model.units": [8], "window": 24} and tuned.window == 24


@pytest.mark.parametrize("text, message", [
    ("{not json", "not a JSON document"),
    ('["window"]', "field '\\(the document\\)'"),
    ('{"trial": "third", "tuned": ["window"]}', "field 'trial'"),
    ('{"tuned": "window"}', "field 'tuned'"),
    ('{"tuned": [7]}', "field 'tuned.0'"),
    ('{"settings": [48], "tuned": ["window"]}', "field 'settings'"),
])
def test_a_best_json_that_is_not_one_is_refused_naming_the_file_and_field(tmp_path, text, message):
    _study(tmp_path / "out", text)
    with pytest.raises(ConfigError, match=r"study 'pinned' \(.*study=pinned/best\.json\): " + message):
        apply_tuned(_run_config(tmp_path / "out"))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=6)
SETTINGS = st.fixed_dictionaries({}, optional={
    "window": JSON | st.integers(2, 200),
    "model": st.dictionaries(st.sampled_from(["units", "dropout", "chunk", "layers"]),
                             JSON | st.lists(st.integers(1, 64), max_size=3), max_size=3),
    "training": st.dictionaries(st.sampled_from(["loss", "epochs", "learning_rate"]), JSON, max_size=2),
    "input_url": JSON})
BEST = st.fixed_dictionaries({}, optional={
    "study": JSON, "trial": JSON, "objective": JSON, "metric": JSON, "written_at": JSON, "trials": JSON,
    "series": JSON, "settings": SETTINGS | JSON,
    "tuned": st.lists(st.sampled_from(["window", "model.units", "model.dropout", "model.chunk", "model.layers",
                                       "training.loss", "training.epochs", "input_url", "dask_address"]),
                      max_size=4) | JSON})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(best=BEST | JSON)
def test_whatever_a_best_json_holds_it_is_applied_or_refused_with_a_config_error(best):
    with tempfile.TemporaryDirectory() as tmp:
        _study(Path(tmp), json.dumps(best))
        run = _run_config(Path(tmp))
        try:
            tuned, applied = apply_tuned(run)
        except ConfigError as exc:
            assert "pinned" in str(exc)  # names the study (and the file, for one that is not a best.json)
            return
    assert isinstance(applied, Tuned)
    for dotted in applied.settings:  # only tunable settings ever change
        assert tuning.tunable(dotted), dotted
    assert (tuned.input_url, tuned.output_url, tuned.horizon, tuned.freq) == \
        (run.input_url, run.output_url, run.horizon, run.freq)  # the run's own: a best.json changes the model only


def test_every_name_the_package_gives_resolves():
    assert sorted(tuning.__all__) == sorted(tuning._WHERE)
    for name in tuning.__all__:
        assert getattr(tuning, name) is not None, name
