"""A saved model is loaded only when its archive holds what the model builder makes (issue 16, point 1).

Each case is a real crafted `.keras` file in a real (local) model store, with its recorded sha256
forged to match, so the allowlist is what has to refuse it. The decision must be "train" with the
reason, and the payload's side effect must not have happened.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import keras
import pytest

from lstm_core import artifacts
from lstm_core.engine import fit
from lstm_core.model import build_lstm
from lstm_core.model_guard import builder_vocabulary, check_archive, serialized_objects
from lstm_core.retrain import decide
from tests.conftest import fast_config, make_frame, prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained by the engine and saved to a local model store; copied afresh per test."""
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


def _decide(cfg, train, root, **kw):
    return decide("auto", str(root), cfg.model_key(), train, window=cfg.window,
                  validation_steps=cfg.validation_steps, loss=cfg.training.loss, max_age=timedelta(days=1),
                  tolerance=10.0, **kw)


def _forge_checksum(version_dir: Path, name: str = "member-0.keras") -> None:
    path = version_dir / "metadata.json"
    meta = json.loads(path.read_text())
    meta["sha256"][name] = hashlib.sha256((version_dir / name).read_bytes()).hexdigest()
    path.write_text(json.dumps(meta))


def _rewrite_member(version_dir: Path, edit) -> None:
    """Apply `edit(config_dict, entries)` to member-0's config.json and re-zip it; forge its checksum."""
    member = version_dir / "member-0.keras"
    with zipfile.ZipFile(member) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    config = json.loads(entries["config.json"])
    edit(config, entries)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(member, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    _forge_checksum(version_dir)


def _input_tensor(config: dict) -> dict:
    window = config["config"]["layers"][0]
    return {"class_name": "__keras_tensor__",
            "config": {"shape": window["config"]["batch_shape"], "dtype": "float32",
                       "keras_history": [window["name"], 0, 0]}}


def _dangling_lambda(module: str, fn: str, arguments: dict | None = None):
    """A Lambda layer wrapping an exported Keras function, called on the input, connected to no output:
    functional reconstruction calls it while the model loads."""
    def edit(config, entries):
        config["config"]["layers"].append({
            "module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "payload",
            "config": {"name": "payload", "trainable": True,
                       "function": {"module": module, "class_name": "function", "config": fn,
                                    "registered_name": fn},
                       "arguments": arguments or {}},
            "inbound_nodes": [{"args": [_input_tensor(config)], "kwargs": {}}]})
    return edit


def _unknown_class(config, entries):
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["class_name"] = "EinsumDense"  # a real Keras layer, but not one the builder uses


def _foreign_module(config, entries):
    level = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "LevelNorm")
    level["module"], level["registered_name"] = "payload.module", "payload>LevelNorm"


def _function_entry(config, entries):
    for _, _, obj in serialized_objects(config):
        if obj.get("class_name") == "LSTM":
            obj["config"]["activation"] = {"module": "keras.config", "class_name": "function",
                                           "config": "set_epsilon", "registered_name": "set_epsilon"}


def _python_lambda(config, entries):
    config["config"]["layers"].append({
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None, "name": "payload",
        "config": {"name": "payload", "function": {"class_name": "__lambda__", "config": {
            "code": "YQ==", "defaults": None, "closure": None}}},
        "inbound_nodes": [{"args": [_input_tensor(config)], "kwargs": {}}]})


def _extra_entry(config, entries):
    entries["assets/../../payload.sh"] = b"#!/bin/sh\necho owned\n"


def _nested_model(version_dir: Path) -> None:
    """A real model holding a model: what the builder makes, wrapped in another Functional."""
    meta = json.loads((version_dir / "metadata.json").read_text())
    inner = build_lstm(meta["window"], len(meta["feature_names"]), units=(8,), seed=1)
    inputs = keras.Input((meta["window"], len(meta["feature_names"])), name="window")
    keras.Model(inputs, inner(inputs), name="outer").save(version_dir / "member-0.keras")
    _forge_checksum(version_dir)


CASES = {
    "Lambda calling keras.config.set_epsilon": (_dangling_lambda("keras.config", "set_epsilon"),
                                                r"function entry at /config/layers/\d+/config/function "
                                                r"\(keras.config.set_epsilon"),
    "unknown Keras class": (_unknown_class, "class the model builder never uses .*EinsumDense"),
    "LevelNorm from another module": (_foreign_module, "payload.module.LevelNorm"),
    "function entry as an activation": (_function_entry, "function entry at .*activation"),
    "python lambda": (_python_lambda, "__lambda__ entry"),
    "extra zip entry": (_extra_entry, r"unexpected entries \['assets/../../payload.sh'\]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_member_is_refused_and_the_run_retrains(store, case):
    cfg, train, root, version_dir = store
    edit, pattern = CASES[case]
    _rewrite_member(version_dir, edit)
    epsilon = keras.config.epsilon()
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and decision.loaded is None
    assert decision.reason.startswith("no loadable model:") and "member-0.keras is corrupt or unsafe" in decision.reason
    assert re.search(pattern, decision.reason), decision.reason
    assert keras.config.epsilon() == epsilon == 1e-7, "the artifact changed a process-wide Keras setting"


def test_nested_model_is_refused(store):
    cfg, train, root, version_dir = store
    _nested_model(version_dir)
    decision = _decide(cfg, train, root)
    assert decision.action == "train"
    assert "a nested model at /config/layers/1: keras.src.models.functional.Functional" in decision.reason, \
        decision.reason


def test_oversized_member_is_refused_before_it_is_read(store, tmp_path):
    cfg, train, root, version_dir = store
    meta = json.loads((version_dir / "metadata.json").read_text())
    # A valid archive of the builder's own classes, only far larger than this configuration's model.
    big = build_lstm(meta["window"], len(meta["feature_names"]), units=(256, 256), seed=1)
    big.save(version_dir / "member-0.keras")
    _forge_checksum(version_dir)
    size = (version_dir / "member-0.keras").stat().st_size
    assert size > 2_000_000
    decision = _decide(cfg, train, root, max_model_bytes=1_000_000)
    assert decision.action == "train"
    assert f"member-0.keras is {size:,} bytes, more than the 1,000,000 allowed" in decision.reason
    # The same file within the cap is the builder's own: loadable (it is then too large for nothing else).
    assert _decide(cfg, train, root, max_model_bytes=10**8).action in ("load", "train")


def test_archive_that_unpacks_past_the_cap_is_refused(tmp_path):
    # A small file whose weights entry unpacks to 50 MB of zeros (a zip bomb, in miniature).
    model = tmp_path / "m.keras"
    build_lstm(8, 1, units=(4,), seed=1).save(model)
    with zipfile.ZipFile(model) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    entries["model.weights.h5"] = bytes(50 * 2**20)
    with zipfile.ZipFile(model, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    assert model.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"unpack to 52,4\d\d,\d\d\d bytes, more than max_model_bytes 10,000,000"):
        check_archive(str(model), 10_000_000)


def test_every_option_of_the_builder_is_allowed(tmp_path):
    """The allowlist comes from the builder: any model it builds passes, whatever the options."""
    for kwargs in ({}, {"bidirectional": True, "dropout": 0.2}, {"level_normalization": False, "patch": 4},
                   {"units": (8, 4, 2), "n_features": 3, "seed": 7, "chunk": 3, "n_future": 2, "patch": 2}):
        path = tmp_path / "m.keras"
        build_lstm(8, **{"n_features": 1, **kwargs}).save(path)
        check_archive(str(path), 10**8)
    vocab = builder_vocabulary()
    assert {c for _, c, _ in vocab.inner} >= {"InputLayer", "LevelNorm", "Reshape", "LSTM", "Concatenate",
                                              "Flatten", "Dense", "AddLevel"}
    assert vocab.entries == {"config.json", "metadata.json", "model.weights.h5"}


def test_the_lambda_payload_is_live_under_keras_safe_mode_alone(tmp_path):
    """Why the allowlist exists: the crafted archive changes a process-wide setting under safe mode alone
    (checked in a child process, so this one stays clean)."""
    path = tmp_path / "member.keras"
    build_lstm(8, 1, units=(4,), seed=1).save(path)
    _rewrite_member_file(path, _dangling_lambda("keras.config", "set_epsilon"))
    code = ("import keras, lstm_core.model\n"
            f"try:\n    keras.saving.load_model({str(path)!r}, compile=False, safe_mode=True)\n"
            "except Exception:\n    pass\n"
            "print('EPSILON', type(keras.config.epsilon()).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "EPSILON float" not in out.stdout and "EPSILON" in out.stdout, (out.stdout, out.stderr[-2000:])
    with pytest.raises(ValueError, match="function entry .*set_epsilon"):
        check_archive(str(path), 10**8)
    assert keras.config.epsilon() == 1e-7


def _rewrite_member_file(member: Path, edit) -> None:
    with zipfile.ZipFile(member) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    config = json.loads(entries["config.json"])
    edit(config, entries)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(member, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
