"""Malformed metadata.json of any shape is a corrupt model: the run retrains and says why (issue 16, point 2).

Signed metadata (LSTM_FORECAST_MODEL_SIGNING_KEY): a changed artifact, an unsigned one or one signed
with another key is not loaded; without a key the checksums catch corruption only.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lstm_core import artifacts
from lstm_core.config import ConfigError
from lstm_core.engine import fit
from lstm_core.errors import ArtifactError
from lstm_core.retrain import decide
from tests.conftest import fast_config, make_frame, prepare

KEY = "k3y-for-tests-" + "x" * 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = fast_config()
    panel, _ = prepare(make_frame(n_series=3, length=80), cfg)
    train = panel.drop_last(cfg.horizon)
    forecaster = fit(train, cfg)
    stores = {}
    for signed in (False, True):
        store = tmp_path_factory.mktemp("signed" if signed else "plain")
        mp = pytest.MonkeyPatch()
        if signed:
            mp.setenv(artifacts.SIGNING_KEY_ENV, KEY)
        else:
            mp.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
        stores[signed] = (store, artifacts.save(forecaster, str(store), cfg.model_key(), config=cfg.public_dict(),
                                                fingerprint="test"))
        mp.undo()
    return cfg, train, stores


@pytest.fixture
def plain(trained, tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.SIGNING_KEY_ENV, raising=False)
    return _copy(trained, tmp_path, signed=False)


@pytest.fixture
def signed(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, KEY)
    return _copy(trained, tmp_path, signed=True)


def _copy(trained, tmp_path, signed):
    cfg, train, stores = trained
    original, version = stores[signed]
    copy = tmp_path / "store"
    shutil.copytree(original, copy)
    return cfg, train, copy, copy / cfg.model_key() / version


def _decide(cfg, train, root):
    return decide("auto", str(root), cfg.model_key(), train, window=cfg.window,
                  validation_steps=cfg.validation_steps, loss=cfg.training.loss, max_age=timedelta(days=1),
                  tolerance=10.0)


def _meta(version_dir: Path) -> dict:
    return json.loads((version_dir / "metadata.json").read_text())


def _write_meta(version_dir: Path, meta) -> None:
    (version_dir / "metadata.json").write_text(json.dumps(meta))


def _future() -> str:
    return (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()


# (change to metadata.json, the field the reason names)
MALFORMED = {
    "members as a string": (lambda m: {**m, "members": "x"}, "field 'members'"),
    "created_at missing": (lambda m: {k: v for k, v in m.items() if k != "created_at"}, "field 'created_at'"),
    "versions as a list": (lambda m: {**m, "versions": ["keras", "3"]}, "field 'versions'"),
    "window as a string": (lambda m: {**m, "window": "24"}, "field 'window'"),
    "members zero": (lambda m: {**m, "members": 0}, "field 'members'"),
    "members as a boolean": (lambda m: {**m, "members": True}, "field 'members'"),
    "members a million": (lambda m: {**m, "members": 10**6}, "field 'members'"),
    "feature_names a string": (lambda m: {**m, "feature_names": "y"}, "field 'feature_names'"),
    "feature_names empty": (lambda m: {**m, "feature_names": []}, "field 'feature_names'"),
    "training as a list": (lambda m: {**m, "training": []}, "field 'training'"),
    "best_val_loss a word": (lambda m: {**m, "training": {**m["training"], "best_val_loss": "low"}},
                             "field 'training.best_val_loss'"),
    "training.members a string": (lambda m: {**m, "training": {**m["training"], "members": "x"}},
                                  "field 'training.members'"),
    "history as a list": (lambda m: {**m, "training": {**m["training"], "members": [{"history": [1, 2]}]}},
                          "field 'training.members.0.history'"),
    "sha256 a number": (lambda m: {**m, "sha256": {"member-0.keras": 5}}, "field 'sha256.member-0.keras'"),
    "sha256 a list": (lambda m: {**m, "sha256": ["abc"]}, "field 'sha256'"),
    "created_at naive": (lambda m: {**m, "created_at": "2026-01-01T00:00:00"}, "field 'created_at'"),
    "created_at a word": (lambda m: {**m, "created_at": "yesterday"}, "field 'created_at'"),
    "created_at a number": (lambda m: {**m, "created_at": 1700000000}, "field 'created_at'"),
    "created_at in the future": (lambda m: {**m, "created_at": _future()}, "is in the future"),
    "scaler_kind unknown": (lambda m: {**m, "scaler_kind": "robust"}, "field 'scaler_kind'"),
    "target_transform unknown": (lambda m: {**m, "target_transform": "sqrt"}, "field 'target_transform'"),
    "format_version a string": (lambda m: {**m, "format_version": "1"}, "artifact format '1' is not supported"),
    "model_key another": (lambda m: {**m, "model_key": "0123456789abcdef"}, "describes 0123456789abcdef/"),
    "not an object": (lambda m: [m], "metadata.json is corrupt: not an object"),
    "null": (lambda m: None, "metadata.json is corrupt: not an object"),
    "group a number": (lambda m: {**m, "group": 3}, "field 'group'"),
    "keras version missing": (lambda m: {**m, "versions": {"numpy": "2"}}, "saved with Keras , running"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_metadata_is_a_corrupt_model_and_the_run_retrains(plain, case):
    cfg, train, root, version_dir = plain
    change, reason = MALFORMED[case]
    _write_meta(version_dir, change(_meta(version_dir)))
    decision = _decide(cfg, train, root)  # never raises
    assert decision.action == "train" and decision.loaded is None
    assert decision.reason.startswith("no loadable model:") and reason in decision.reason, decision.reason


def test_metadata_too_deep_or_too_large_is_corrupt(plain):
    cfg, train, root, version_dir = plain
    (version_dir / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "metadata.json is corrupt" in _decide(cfg, train, root).reason
    (version_dir / "metadata.json").write_bytes(b" " * (artifacts.MAX_METADATA_BYTES + 1))
    assert "metadata.json is " in _decide(cfg, train, root).reason and "allowed" in _decide(cfg, train, root).reason


def test_intact_models_load_signed_and_unsigned(plain, trained, tmp_path, monkeypatch):
    cfg, train, root, version_dir = plain
    assert "signature" not in _meta(version_dir) and "scaler.json" in _meta(version_dir)["sha256"]
    assert _decide(cfg, train, root).action == "load"
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, KEY)
    cfg, train, root, version_dir = _copy(trained, tmp_path / "s", signed=True)
    meta = _meta(version_dir)
    assert meta["signature"]["algorithm"] == "hmac-sha256" and len(meta["signature"]["value"]) == 64
    decision = _decide(cfg, train, root)
    assert decision.action == "load", decision.reason


def _tamper_member_and_checksum(version_dir: Path) -> None:
    """What someone with write access to the store can do: replace a member and fix its recorded sha256."""
    member = version_dir / "member-0.keras"
    with zipfile.ZipFile(member, "a") as z:  # a changed archive that is still a valid model
        z.comment = b"tampered"
    meta = _meta(version_dir)
    meta["sha256"]["member-0.keras"] = hashlib.sha256(member.read_bytes()).hexdigest()
    _write_meta(version_dir, meta)


TAMPERING = {
    "member replaced, checksum fixed": (_tamper_member_and_checksum, "signature does not match"),
    "recorded loss lowered": (lambda d: _write_meta(d, {**_meta(d), "training": {
        **_meta(d)["training"], "best_val_loss": 99.0}}), "signature does not match"),
    "created_at moved": (lambda d: _write_meta(d, {**_meta(d), "created_at": datetime.now(timezone.utc).isoformat()}),
                         "signature does not match"),
    "signature removed": (lambda d: _write_meta(d, {k: v for k, v in _meta(d).items() if k != "signature"}),
                          "not signed, and LSTM_FORECAST_MODEL_SIGNING_KEY is set"),
    "signature garbage": (lambda d: _write_meta(d, {**_meta(d), "signature": "yes"}), "not signed"),
    "scaler changed": (lambda d: (d / "scaler.json").write_text((d / "scaler.json").read_text().replace("1", "2", 1)),
                       "scaler.json is corrupt: its sha256"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_signed_model_changed_after_saving_is_refused(signed, case):
    cfg, train, root, version_dir = signed
    change, reason = TAMPERING[case]
    change(version_dir)
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and reason in decision.reason, decision.reason


def test_signed_with_another_key_is_refused(signed, monkeypatch):
    cfg, train, root, version_dir = signed
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, "another-key-" + "y" * 30)
    assert "signature does not match" in _decide(cfg, train, root).reason


def test_unsigned_model_is_refused_once_a_key_is_set(plain, monkeypatch):
    cfg, train, root, version_dir = plain
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, KEY)
    decision = _decide(cfg, train, root)
    assert decision.action == "train" and "unsigned models are not loaded" in decision.reason


def test_without_a_key_checksums_detect_corruption_not_tampering(plain):
    """What the README says: a member replaced together with its recorded sha256 still loads."""
    cfg, train, root, version_dir = plain
    _tamper_member_and_checksum(version_dir)
    assert _decide(cfg, train, root).action == "load"
    (version_dir / "member-0.keras").write_bytes((version_dir / "member-0.keras").read_bytes()[:-3] + b"xyz")
    assert "its sha256" in _decide(cfg, train, root).reason


def test_a_short_key_is_a_configuration_error(plain, monkeypatch):
    cfg, train, root, version_dir = plain
    monkeypatch.setenv(artifacts.SIGNING_KEY_ENV, "short")
    with pytest.raises(ConfigError, match="LSTM_FORECAST_MODEL_SIGNING_KEY is shorter than 32 characters"):
        _decide(cfg, train, root)


def test_retrain_never_refuses_malformed_metadata_with_artifact_error(plain):
    cfg, train, root, version_dir = plain
    _write_meta(version_dir, {**_meta(version_dir), "members": "x"})
    with pytest.raises(ArtifactError, match="no saved model can be loaded: .*field 'members'"):
        decide("never", str(root), cfg.model_key(), None, window=cfg.window, validation_steps=cfg.validation_steps,
               loss=cfg.training.loss, max_age=timedelta(days=1), tolerance=10.0)
