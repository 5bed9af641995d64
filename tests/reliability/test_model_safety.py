"""A corrupt, incompatible or unsafe saved model is never loaded: the run retrains and says why.

Models load only after the archive allowlist, then through Keras safe mode; nothing in the product unpickles data.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import keras
import numpy as np
import pytest

from lstm_core import artifacts
from lstm_core.engine import fit
from lstm_core.retrain import decide
from tests.conftest import fast_config, make_frame, prepare
from tests.reliability.conftest import FAST, direct_fs, put_frame

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model saved to a local model store, copied afresh for each test."""
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=3, length=80), cfg)
    train = panel.drop_last(cfg.horizon)
    store = tmp_path_factory.mktemp("store")
    version = artifacts.save(fit(train, cfg), str(store), cfg.model_key(), config=cfg.public_dict(),
                             fingerprint="test")
    return cfg, train, store, version


@pytest.fixture
def store(trained, tmp_path):
    cfg, train, original, version = trained
    copy = tmp_path / "store"
    shutil.copytree(original, copy)
    return cfg, train, copy, copy / cfg.model_key() / version


def _decide(cfg, train, store):
    return decide("auto", str(store), cfg.model_key(), train, window=cfg.window,
                  validation_steps=cfg.validation_steps, loss=cfg.training.loss, max_age=timedelta(days=1),
                  tolerance=10.0)


def _edit_metadata(version_dir: Path, **changes) -> None:
    path = version_dir / "metadata.json"
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(meta.get(k), dict):
            meta[k] = {**meta[k], **v}
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


def test_intact_model_is_loaded(store):
    cfg, train, root, version_dir = store
    decision = _decide(cfg, train, root)
    assert decision.action == "load", decision.reason


def _unsafe_member(version_dir: Path, marker: Path) -> None:
    """Replace member-0 with a model holding a Lambda layer whose code would create `marker` if run."""
    path = str(marker)
    meta = json.loads((version_dir / "metadata.json").read_text())
    inputs = keras.Input((meta["window"], len(meta["feature_names"])))
    # Loadable and runnable with safe_mode=False (the decision's validation predict would run it).
    outputs = keras.layers.Lambda(lambda x: (open(path, "w").close(), x)[1] * 1.0,
                                  output_shape=(meta["window"], len(meta["feature_names"])))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(outputs)))
    marker.unlink(missing_ok=True)  # building the model ran the lambda once; only loading counts
    model.save(version_dir / "member-0.keras")
    # Forge the recorded checksum too, so that the load-time checks (allowlist, then safe mode) must refuse it.
    digest = hashlib.sha256((version_dir / "member-0.keras").read_bytes()).hexdigest()
    _edit_metadata(version_dir, sha256={"member-0.keras": digest})


CASES = {
    "truncated member": (lambda d, m: (d / "member-0.keras").write_bytes((d / "member-0.keras").read_bytes()[:500]),
                         "member-0.keras is corrupt"),
    "member not a zip": (lambda d, m: (d / "member-0.keras").write_bytes(b"\x80\x04\x95 pickle? no thanks"),
                         "member-0.keras is corrupt"),
    "member missing": (lambda d, m: (d / "member-0.keras").unlink(), "member-0.keras missing"),
    "metadata not JSON": (lambda d, m: (d / "metadata.json").write_text("{not json"), "metadata.json is corrupt"),
    "scaler not JSON": (lambda d, m: (d / "scaler.json").write_text("[1, 2"), "scaler.json is corrupt"),
    "other Keras major": (lambda d, m: _edit_metadata(d, versions={"keras": "2.15.0"}),
                          f"saved with Keras 2.15.0, running {keras.__version__}"),
    "other artifact format": (lambda d, m: _edit_metadata(d, format_version=99), "artifact format 99 is not supported"),
    # as many features as the network takes (fewer or more is a corrupt model: its metadata disagrees with it)
    "other feature schema": (lambda d, m: _edit_metadata(d, feature_names=["temperature"]),
                             "feature schema ['temperature'] differs"),
    "other window": (lambda d, m: _edit_metadata(d, window=7), "window 7 differs from the configured 24"),
    "unsafe Lambda layer": (_unsafe_member, "member-0.keras is corrupt or unsafe"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unusable_model_is_not_loaded_and_the_reason_is_given(store, case, tmp_path):
    cfg, train, root, version_dir = store
    marker = tmp_path / "lambda-ran"
    spoil, fragment = CASES[case]
    spoil(version_dir, marker)
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and decision.loaded is None
    assert decision.reason.startswith("no loadable model:") and fragment in decision.reason, decision.reason
    assert not marker.exists(), "the saved model's code ran"


def test_unsafe_model_is_refused_by_keras_safe_mode(store, tmp_path):
    cfg, train, root, version_dir = store
    _unsafe_member(version_dir, tmp_path / "lambda-ran")
    decision = _decide(cfg, train, root)
    assert re.search(r"lambda|arbitrary code|safe_mode", decision.reason, re.I), decision.reason


def test_newest_model_corrupt_retrains_rather_than_serving_an_older_one(store):
    cfg, train, root, version_dir = store
    newer = version_dir.parent / (version_dir.name[:-1] + "z")  # sorts after the intact version
    shutil.copytree(version_dir, newer)
    _edit_metadata(newer, version=newer.name)
    (newer / "member-0.keras").write_bytes(b"garbage")
    decision = _decide(cfg, train, root)
    assert decision.action == "train"
    assert decision.reason.startswith("newest saved model cannot be used:") and newer.name in decision.reason


def test_product_code_never_unpickles_and_loads_models_only_in_safe_mode():
    sources = [p for pkg in ("lstm_core", "tasks", "flows") for p in (ROOT / pkg).rglob("*.py")]
    assert sources
    forbidden = re.compile(r"\bimport pickle\b|\bcloudpickle\b|pickle\.loads?\(|read_pickle|allow_pickle\s*=\s*True|"
                           r"safe_mode\s*=\s*False|joblib\.load|yaml\.load\(|\beval\(|\bexec\(|unsafe_load")
    for path in sources:
        text = path.read_text()
        assert not forbidden.search(text), (path, forbidden.search(text).group(0))
        for call in re.finditer(r"\.load_model\(([^)]*)\)", text):
            assert "safe_mode=True" in call.group(1), (path, call.group(0))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_corrupt_saved_model_makes_the_run_retrain_and_record_why(s3_bucket, s3_endpoint):
    from flows.batch_forecast import batch_forecast

    fs = direct_fs(s3_endpoint)
    put_frame(fs, f"{s3_bucket}/in/series.parquet", make_frame(n_series=4, length=100))
    settings = {**FAST, "input_url": f"{s3_bucket}/in/series.parquet", "output_url": f"{s3_bucket}/out"}
    first = batch_forecast(settings={**settings, "run_id": "first"})
    member = f"{s3_bucket}/out/models/{first['model_key']}/{first['model_version']}/member-0.keras"
    fs.pipe_file(member, fs.cat_file(member)[:300])  # a half-written or damaged artifact
    second = batch_forecast(settings={**settings, "run_id": "second"})
    stored = json.loads(fs.cat_file(f"{s3_bucket}/out/runs/second/manifest.json"))
    assert stored["status"] == "succeeded"
    assert stored["retrain"]["action"] == "train"
    assert "member-0.keras is corrupt" in stored["retrain"]["reason"]
    assert first["model_version"] in stored["retrain"]["reason"]
    assert stored["model_version"] == second["model_version"] != first["model_version"]
    assert np.isfinite(stored["overall_metrics"][stored["model_version"]]["mae"])
