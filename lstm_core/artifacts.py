"""Versioned model artifacts: Keras `.keras` members + scaler + config + metadata, via fsspec.

Layout: `<store>/<model_key>/<version>/{member-0.keras, ..., scaler.json, metadata.json}`;
`metadata.json` is written last, so a version without it is incomplete and ignored; it records
each member's sha256, checked before Keras reads the file.
Models load only through Keras safe mode (no arbitrary code, no pickle).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import keras
import numpy as np

import lstm_core.model  # noqa: F401 - registers custom layers for safe-mode loading
from lstm_core.covariates import StaticEncoder
from lstm_core.engine import Forecaster
from lstm_core.errors import ArtifactError
from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler
from lstm_core.secrets import scrub
from lstm_core.storage import filesystem, is_storage_failure, join, put_bytes, read_json, storage_error, write_json

FORMAT_VERSION = 2  # 2: chunked, patched network with deseasonalisation
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas", "pyarrow", "prefect", "lstm-forecast")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def data_fingerprint(panel: Panel) -> str:
    """Content hash of a panel's ids, lengths and values."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, panel.series_ids)).encode())
    h.update(np.ascontiguousarray(panel.offsets).tobytes())
    h.update(np.ascontiguousarray(panel.values).tobytes())
    h.update(",".join(panel.feature_names).encode())
    return h.hexdigest()[:32]


def new_version(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + os.urandom(3).hex()


@dataclass
class LoadedModel:
    forecaster: Forecaster
    metadata: dict[str, Any]
    url: str


def save(forecaster: Forecaster, store_url: str, model_key: str, *, config: dict[str, Any],
         fingerprint: str, storage_options: dict | None = None, version: str | None = None,
         extra: dict[str, Any] | None = None) -> str:
    """Save a forecaster as a new version under `store_url/model_key`; returns the version."""
    if forecaster.per_series is not None:
        raise ArtifactError("per-series models are not saved to the model store (train them each run)")
    version = version or new_version()
    fs, root = filesystem(store_url, storage_options)
    base = join(root, model_key, version)
    checksums = {}
    with tempfile.TemporaryDirectory(prefix="lstm-artifact-") as tmp:
        for i, member in enumerate(forecaster.members):
            local = os.path.join(tmp, f"member-{i}.keras")
            member.save(local)
            with open(local, "rb") as fh:
                data = fh.read()
            checksums[f"member-{i}.keras"] = hashlib.sha256(data).hexdigest()
            put_bytes(fs, join(base, f"member-{i}.keras"), data)
    if forecaster.scaler is not None:
        write_json(fs, join(base, "scaler.json"), forecaster.scaler.to_dict())
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_key": model_key,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "members": len(forecaster.members),
        "window": forecaster.window,
        "feature_names": list(forecaster.feature_names),
        "static_encoder": forecaster.static_encoder.to_dict() if forecaster.static_encoder is not None else None,
        "scaler_kind": forecaster.scaler_kind,
        "target_transform": forecaster.target_transform,
        "season_length": forecaster.season_length,
        "deseasonalize": forecaster.deseasonalize,
        "known": list(forecaster.known),
        "config": config,
        **_settings_of(config),
        "data_fingerprint": fingerprint,
        "training": forecaster.training,
        "versions": package_versions(),
        "sha256": checksums,
        **(extra or {}),
    }
    write_json(fs, join(base, "metadata.json"), metadata)  # last: marks the version complete
    return version


def _settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The network and training settings of a saved config, recorded so a store can be searched by them."""
    from lstm_core.config import validate_config

    try:
        cfg = validate_config(config)
        return {"network_settings": cfg.network_settings(), "training_settings": cfg.training_settings()}
    except Exception:  # noqa: BLE001 - a partial config (tests, notebooks): nothing to record
        return {}


def list_versions(store_url: str, model_key: str, storage_options: dict | None = None) -> list[str]:
    """Complete versions (with metadata.json), newest first."""
    fs, root = filesystem(store_url, storage_options)
    base = join(root, model_key)
    fs.invalidate_cache(base)
    try:
        entries = fs.ls(base, detail=False)
        versions = []
        for e in entries:
            name = e.rstrip("/").rsplit("/", 1)[-1]
            if fs.exists(join(base, name, "metadata.json")):
                versions.append(name)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001
        raise storage_error(f"cannot list the model store {store_url}/{model_key}", exc) from None
    return sorted(versions, reverse=True)


def load(store_url: str, model_key: str, version: str, storage_options: dict | None = None,
         expect_features: tuple[str, ...] | None = None, expect_window: int | None = None) -> LoadedModel:
    """Load one version; refuse a corrupt or incompatible artifact with a clear ArtifactError."""
    fs, root = filesystem(store_url, storage_options)
    base = join(root, model_key, version)
    url = scrub(f"{store_url.rstrip('/')}/{model_key}/{version}")  # named in messages: no credentials
    try:
        meta = read_json(fs, join(base, "metadata.json"))
    except FileNotFoundError:
        raise ArtifactError(f"model {url}: metadata.json missing (incomplete artifact)") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model {url}: metadata.json is corrupt: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - could not reach it: say so, do not call the model corrupt
        raise storage_error(f"model {url}: cannot read metadata.json", exc) from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"model {url}: metadata.json is corrupt: not an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"model {url}: artifact format {meta.get('format_version')} is not supported "
                            f"(expected {FORMAT_VERSION})")
    saved_keras = str(meta.get("versions", {}).get("keras", ""))
    if saved_keras.split(".")[:1] != keras.__version__.split(".")[:1]:
        raise ArtifactError(f"model {url}: saved with Keras {saved_keras}, running {keras.__version__}")
    if expect_features is not None and tuple(meta.get("feature_names", ())) != tuple(expect_features):
        raise ArtifactError(f"model {url}: feature schema {meta.get('feature_names')} differs from the data's "
                            f"{list(expect_features)}")
    if expect_window is not None and meta.get("window") != expect_window:
        raise ArtifactError(f"model {url}: window {meta.get('window')} differs from the configured {expect_window}")
    members = []
    checksums = meta.get("sha256") or {}
    with tempfile.TemporaryDirectory(prefix="lstm-artifact-") as tmp:
        for i in range(int(meta.get("members", 0))):
            name = f"member-{i}.keras"
            local = os.path.join(tmp, name)
            try:
                with open(local, "wb") as fh:
                    fh.write(fs.cat_file(join(base, name)))
            except FileNotFoundError:
                raise ArtifactError(f"model {url}: {name} missing") from None
            except Exception as exc:  # noqa: BLE001
                raise storage_error(f"model {url}: cannot read {name}", exc) from None
            # Check the bytes before Keras parses them: a damaged file gets a plain message.
            with open(local, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            if name in checksums and digest != checksums[name]:
                raise ArtifactError(f"model {url}: {name} is corrupt: its sha256 {digest[:12]}... differs from "
                                    f"the {checksums[name][:12]}... recorded when it was saved")
            if not zipfile.is_zipfile(local):
                raise ArtifactError(f"model {url}: {name} is corrupt: not a .keras (zip) archive")
            try:
                # Safe mode: no Lambda layers or other arbitrary code, no pickle, from any artifact.
                members.append(keras.saving.load_model(local, compile=False, safe_mode=True))
            except Exception as exc:  # noqa: BLE001 - Keras raises many types for a broken file
                raise ArtifactError(f"model {url}: {name} is corrupt or unsafe: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not members:
        raise ArtifactError(f"model {url}: no model members recorded")
    scaler = None
    try:
        scaler = SeriesScaler.from_dict(read_json(fs, join(base, "scaler.json")))
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        if is_storage_failure(exc):
            raise storage_error(f"model {url}: cannot read scaler.json", exc) from None
        raise ArtifactError(f"model {url}: scaler.json is corrupt: {exc}") from None
    encoder = StaticEncoder.from_dict(meta["static_encoder"]) if meta.get("static_encoder") else None
    forecaster = Forecaster(members, int(meta["window"]), tuple(meta["feature_names"]), meta["scaler_kind"],
                            meta.get("training", {}), scaler, target_transform=meta.get("target_transform", "none"),
                            static_encoder=encoder, season_length=int(meta.get("season_length", 1)),
                            deseasonalize=meta.get("deseasonalize", "off"), known=tuple(meta.get("known", ())))
    return LoadedModel(forecaster, meta, url)
