"""Model artifacts: save/load round trips (local and S3 on a moto server), corrupt, incompatible, unsafe."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import s3fs
from keras import layers

from lstm_core import artifacts, engine
from lstm_core.errors import ArtifactError
from tests.conftest import fast_config, make_frame, prepare

H = 12


@pytest.fixture(scope="module")
def cfg():
    return fast_config(training={"epochs": 2})


@pytest.fixture(scope="module")
def panel(cfg):
    return prepare(make_frame(n_series=4, length=120), cfg)[0]


@pytest.fixture(scope="module")
def forecaster(cfg, panel):
    return engine.fit(panel.drop_last(H), cfg)


def save(forecaster, store, cfg, panel, **kw):
    return artifacts.save(forecaster, str(store), cfg.model_key(), config=cfg.public_dict(),
                          fingerprint=artifacts.data_fingerprint(panel), **kw)


def version_dir(store: Path, cfg, version: str) -> Path:
    return store / cfg.model_key() / version


def test_local_round_trip_gives_identical_forecasts(forecaster, cfg, panel, tmp_path):
    version = save(forecaster, tmp_path, cfg, panel)
    assert sorted(p.name for p in version_dir(tmp_path, cfg, version).iterdir()) == \
        ["member-0.keras", "metadata.json", "scaler.json"]
    assert artifacts.list_versions(str(tmp_path), cfg.model_key()) == [version]
    loaded = artifacts.load(str(tmp_path), cfg.model_key(), version, expect_features=("y",), expect_window=cfg.window)
    np.testing.assert_array_equal(loaded.forecaster.forecast(panel, H), forecaster.forecast(panel, H))
    f = loaded.forecaster
    assert (f.window, f.feature_names, f.scaler_kind) == (cfg.window, ("y",), "naive")
    np.testing.assert_array_equal(f.scaler.loc, forecaster.scaler.loc)
    np.testing.assert_array_equal(f.scaler.scale, forecaster.scaler.scale)
    meta = loaded.metadata
    assert meta["version"] == version and meta["model_key"] == cfg.model_key()
    assert meta["data_fingerprint"] == artifacts.data_fingerprint(panel)
    assert meta["config"] == cfg.public_dict()
    assert meta["training"]["best_val_loss"] == forecaster.training["best_val_loss"]
    assert {"keras", "numpy", "pandas"} <= set(meta["versions"]) and meta["created_at"]
    assert loaded.url.endswith(f"/{cfg.model_key()}/{version}")


def test_s3_round_trip_on_moto_server(forecaster, cfg, panel, s3_bucket, s3_endpoint):
    store = f"{s3_bucket}/models"
    version = save(forecaster, store, cfg, panel)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    keys = sorted(k.rsplit("/", 1)[-1] for k in fs.ls(f"{store[5:]}/{cfg.model_key()}/{version}"))
    assert keys == ["member-0.keras", "metadata.json", "scaler.json"]
    assert artifacts.list_versions(store, cfg.model_key()) == [version]
    loaded = artifacts.load(store, cfg.model_key(), version, expect_features=("y",), expect_window=cfg.window)
    np.testing.assert_array_equal(loaded.forecaster.forecast(panel, H), forecaster.forecast(panel, H))
    assert loaded.url == f"{store}/{cfg.model_key()}/{version}"


def test_versions_are_listed_newest_first(forecaster, cfg, panel, tmp_path):
    old = save(forecaster, tmp_path, cfg, panel, version="20260101T000000000000Z-aaaaaa")
    new = save(forecaster, tmp_path, cfg, panel, version="20260301T000000000000Z-bbbbbb")
    assert artifacts.list_versions(str(tmp_path), cfg.model_key()) == [new, old]
    assert artifacts.list_versions(str(tmp_path), "no-such-key") == []


def test_version_without_metadata_is_not_listed(forecaster, cfg, panel, tmp_path):
    good = save(forecaster, tmp_path, cfg, panel, version="20260101T000000000000Z-aaaaaa")
    partial = save(forecaster, tmp_path, cfg, panel, version="20260301T000000000000Z-bbbbbb")
    (version_dir(tmp_path, cfg, partial) / "metadata.json").unlink()  # as if the writer died before the end
    assert artifacts.list_versions(str(tmp_path), cfg.model_key()) == [good]
    with pytest.raises(ArtifactError, match="metadata.json missing"):
        artifacts.load(str(tmp_path), cfg.model_key(), partial)


@pytest.mark.parametrize("where", ["whole", "middle", "end"])
def test_corrupt_member_is_refused_with_a_clear_error(forecaster, cfg, panel, tmp_path, where):
    version = save(forecaster, tmp_path, cfg, panel)
    member = version_dir(tmp_path, cfg, version) / "member-0.keras"
    data = bytearray(member.read_bytes())
    if where == "whole":
        data = bytearray(b"not a keras file" * 64)
    else:
        at = len(data) // 2 if where == "middle" else len(data) - 40
        data[at:at + 16] = b"\xff" * 16
    member.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"member-0\.keras is corrupt") as exc:
        artifacts.load(str(tmp_path), cfg.model_key(), version)
    assert cfg.model_key() in str(exc.value) and version in str(exc.value)


def test_corrupt_member_without_recorded_checksum_is_still_refused(forecaster, cfg, panel, tmp_path):
    version = save(forecaster, tmp_path, cfg, panel)
    vdir = version_dir(tmp_path, cfg, version)
    meta = json.loads((vdir / "metadata.json").read_text())
    del meta["sha256"]  # an artifact from before checksums were recorded
    (vdir / "metadata.json").write_text(json.dumps(meta))
    (vdir / "member-0.keras").write_bytes(b"\x00" * 1000)
    with pytest.raises(ArtifactError, match=r"member-0\.keras is corrupt: not a \.keras \(zip\) archive"):
        artifacts.load(str(tmp_path), cfg.model_key(), version)


def test_missing_member_and_corrupt_metadata_are_refused(forecaster, cfg, panel, tmp_path):
    version = save(forecaster, tmp_path, cfg, panel)
    vdir = version_dir(tmp_path, cfg, version)
    (vdir / "member-0.keras").unlink()
    with pytest.raises(ArtifactError, match=r"member-0\.keras missing"):
        artifacts.load(str(tmp_path), cfg.model_key(), version)
    (vdir / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="metadata.json is corrupt"):
        artifacts.load(str(tmp_path), cfg.model_key(), version)


def test_corrupt_scaler_is_refused(forecaster, cfg, panel, tmp_path):
    version = save(forecaster, tmp_path, cfg, panel)
    (version_dir(tmp_path, cfg, version) / "scaler.json").write_text('{"kind": "standard"}')
    with pytest.raises(ArtifactError, match="scaler.json is corrupt"):
        artifacts.load(str(tmp_path), cfg.model_key(), version)


def test_incompatible_feature_schema_or_window_is_refused(forecaster, cfg, panel, tmp_path):
    version = save(forecaster, tmp_path, cfg, panel)
    with pytest.raises(ArtifactError, match=r"feature schema \['y'\] differs from the data's \['y', 'temp'\]"):
        artifacts.load(str(tmp_path), cfg.model_key(), version, expect_features=("y", "temp"))
    with pytest.raises(ArtifactError, match="window 24 differs from the configured 48"):
        artifacts.load(str(tmp_path), cfg.model_key(), version, expect_window=48)


@pytest.mark.parametrize("field, value, message", [
    ("format_version", 99, "artifact format 99 is not supported"),
    ("versions", {"keras": "2.15.0"}, "saved with Keras 2.15.0"),
])
def test_other_format_or_keras_major_is_refused(forecaster, cfg, panel, tmp_path, field, value, message):
    version = save(forecaster, tmp_path, cfg, panel)
    path = version_dir(tmp_path, cfg, version) / "metadata.json"
    meta = json.loads(path.read_text())
    meta[field] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        artifacts.load(str(tmp_path), cfg.model_key(), version)


def test_load_uses_safe_mode_and_refuses_a_lambda_layer(forecaster, cfg, panel, tmp_path):
    """An artifact whose .keras holds Python code (a Lambda layer) is refused, even with a matching checksum."""
    version = save(forecaster, tmp_path, cfg, panel)
    vdir = version_dir(tmp_path, cfg, version)
    inputs = keras.Input((cfg.window, 1))
    outputs = layers.Lambda(lambda x: x[:, -1, :] * 2.0)(inputs)
    evil = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(evil)
    shutil.copy(evil, vdir / "member-0.keras")
    meta = json.loads((vdir / "metadata.json").read_text())
    meta["sha256"]["member-0.keras"] = hashlib.sha256(evil.read_bytes()).hexdigest()  # a consistent forgery
    (vdir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"member-0\.keras is corrupt or unsafe: .*Lambda"):
        artifacts.load(str(tmp_path), cfg.model_key(), version)


def test_per_series_models_are_not_saved(forecaster, cfg, panel, tmp_path):
    per = engine.Forecaster([], cfg.window, ("y",), "standard", per_series={"s00": forecaster})
    with pytest.raises(ArtifactError, match="per-series models are not saved"):
        save(per, tmp_path, cfg, panel)


def test_fingerprint_follows_the_data(panel):
    fp = artifacts.data_fingerprint(panel)
    assert fp == artifacts.data_fingerprint(panel.select(np.ones(panel.n_series, bool)))
    assert fp != artifacts.data_fingerprint(panel.drop_last(1))
    assert fp != artifacts.data_fingerprint(panel.select(panel.series_ids != "s00"))
