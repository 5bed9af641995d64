"""Versioned model artifacts: Keras `.keras` members + scaler + config + metadata, via fsspec.

Layout: `<store>/<model_key>/<version>/{member-0.keras, ..., scaler.json, intervals.json, metadata.json}`;
`metadata.json` is written last, so a version without it is incomplete and ignored; it records
the sha256 of each member, of scaler.json and of intervals.json (saved after the model by `add_file`,
which adds its sha256 and re-signs), checked before anything parses those files. A load reads exactly
these files and serves nothing else.

Whoever can write the model store can write those checksums too, so on their own they detect
corruption, not tampering. With `LSTM_FORECAST_MODEL_SIGNING_KEY` set, the metadata (checksums
included) carries an HMAC-SHA256 made with that key, and a model whose signature is missing or
wrong is not loaded. Either way, a member is loaded only when its archive holds nothing but what the
model builder produces, each entry named once, and its weights file declares exactly the network's
variables (lstm_core.model_guard); Keras then loads, in safe mode, a fresh archive re-packed from the
checked entries, never the stored one. Malformed metadata or intervals (any shape, or fields that
disagree with each other or with the network) are an ArtifactError naming the field.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import tempfile
import typing
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import keras
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

import lstm_core.model  # noqa: F401 - registers custom layers for safe-mode loading
from lstm_core.atomic import put_bytes, write_json
from lstm_core.config import ForecastConfig
from lstm_core.config.identity import RecordedSettings
from lstm_core.covariates import StaticEncoder
from lstm_core.engine import Forecaster
from lstm_core.errors import ArtifactError
from lstm_core.location import Location, join, storage_error
from lstm_core.model_guard import UnsafeArchive, checked_copy
from lstm_core.panel import Panel
from lstm_core.scaling import SeriesScaler
from lstm_core.secrets import scrub
from lstm_core.signing import SIGNING_KEY_ENV, sign, signing_key, verify

FORMAT_VERSION = 2  # 2: chunked, patched network with deseasonalisation
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "h5py", "numpy", "pandas", "pyarrow", "prefect", "lstm-forecast")
MAX_MODEL_BYTES = 2**30  # default cap on one member archive (setting max_model_bytes)
MAX_METADATA_BYTES = 16 * 2**20
_log = logging.getLogger("lstm_core.artifacts")
MAX_WINDOW = 100_000  # far above any network this project trains (checked against the network too)
MAX_SEASON_LENGTH = 1_000_000
CLOCK_SKEW = timedelta(hours=1)  # a model "created" further in the future than this is not trusted


def package_versions() -> dict[str, str]:
    """Versions of the packages a saved model depends on, and of the HDF5 library h5py bundles (it parses
    the weights file: tracked because its advisories reach loads; see README "Security")."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    import h5py

    out["hdf5"] = h5py.version.hdf5_version
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
    """A version name that sorts by time: `YYYYmmddTHHMMSSffffffZ-<6 hex>` (UTC, random suffix)."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + os.urandom(3).hex()


# --- metadata.json ------------------------------------------------------------
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _MemberRecord(BaseModel):
    """What the product reads of a member's training record (plots, summaries, the manifest); the rest is kept."""

    model_config = ConfigDict(extra="allow")
    history: dict[str, list[float | None]] = Field(default_factory=dict)
    best_epoch: StrictInt = Field(0, ge=0)
    epochs_run: StrictInt | None = Field(None, ge=0)
    stopped_by: StrictStr | None = None


class _TrainingRecord(BaseModel):
    """The training summary a loaded model brings to the manifest (`records.TrainingSummary`)."""

    model_config = ConfigDict(extra="allow")
    best_val_loss: float | None = None
    members: list[_MemberRecord] = Field(default_factory=list)
    device: StrictStr | None = None
    cudnn: StrictBool | None = None
    seconds: float | None = None
    series: StrictInt | None = Field(None, ge=0)


def _choices(setting: str) -> Any:
    """The values a configuration setting takes (its Literal), so saved values follow the config."""
    return Literal[typing.get_args(ForecastConfig.model_fields[setting].annotation)]


class ModelMetadata(BaseModel):
    """The shape `metadata.json` must have; anything else is a corrupt model (retrained, reason recorded)."""

    model_config = ConfigDict(extra="allow")
    format_version: StrictInt
    model_key: StrictStr
    version: StrictStr
    created_at: StrictStr  # ISO 8601 with a time zone (checked below)
    members: StrictInt = Field(ge=1, le=1000)
    window: StrictInt = Field(ge=1, le=MAX_WINDOW)
    feature_names: list[StrictStr] = Field(min_length=1)
    scaler_kind: _choices("scaler")  # type: ignore[valid-type]
    target_transform: _choices("target_transform") = "none"  # type: ignore[valid-type]
    season_length: StrictInt = Field(1, ge=1, le=MAX_SEASON_LENGTH)
    deseasonalize: Literal["auto", "multiplicative", "additive", "off"] = "off"
    known: list[StrictInt] = Field(default_factory=list)  # feature columns known ahead (model inputs)
    config: dict[str, object] = Field(default_factory=dict)  # the saved run's public configuration
    data_fingerprint: StrictStr = ""
    training: _TrainingRecord = Field(default_factory=_TrainingRecord)
    versions: dict[str, StrictStr]
    sha256: dict[str, Sha256] = Field(default_factory=dict)
    group: StrictStr | None = None
    static_encoder: dict[str, object] | None = None  # `StaticEncoderState`, checked by StaticEncoder.from_dict
    signature: dict[str, StrictStr] | None = None

    @field_validator("created_at")
    @classmethod
    def _aware_iso(cls, v: str) -> str:
        if datetime.fromisoformat(v).tzinfo is None:  # ValueError for a string that is no time at all
            raise ValueError("must be an ISO 8601 time with a time zone")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelMetadata:
        """Fields that must agree with each other (the network's own shapes are checked once loaded)."""
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError(f"feature_names {self.feature_names} repeat a name")
        if any(k < 1 or k >= len(self.feature_names) for k in self.known) or sorted(set(self.known)) != self.known:
            raise ValueError(f"known {self.known} must be ascending column indexes of feature_names other than the "
                             f"target (1 to {len(self.feature_names) - 1})")
        if len(self.training.members) > self.members:
            raise ValueError(f"training records {len(self.training.members)} members, the model has {self.members}")
        return self


def parse_metadata(raw: bytes, url: str, key: bytes | None = None) -> dict[str, Any]:
    """`metadata.json` checked (signature first, when `key` is given) against ModelMetadata.

    Returns it as a plain dict with defaults filled in; a corrupt one raises ArtifactError naming the field.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"model {url}: metadata.json is corrupt: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"model {url}: metadata.json is corrupt: not an object")
    if key is not None:
        verify(data, key, url)
    if data.get("format_version") != FORMAT_VERSION:  # before the shape: another format may differ
        raise ArtifactError(f"model {url}: artifact format {data.get('format_version')!r} is not supported "
                            f"(expected {FORMAT_VERSION})")
    try:
        checked = ModelMetadata.model_validate(data).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "metadata"
        raise ArtifactError(f"model {url}: metadata.json is corrupt: field {where!r}: {err['msg']}") from None
    return checked


def _sha256_ok(name: str, data: bytes, checksums: dict[str, str], url: str, signed: bool) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if name not in checksums:
        if signed:
            raise ArtifactError(f"model {url}: {name} has no recorded sha256, so the signature does not cover it")
        return
    if digest != checksums[name]:
        raise ArtifactError(f"model {url}: {name} is corrupt: its sha256 {digest[:12]}... differs from "
                            f"the {checksums[name][:12]}... recorded when it was saved")


@dataclass
class LoadedModel:
    """A saved version loaded through every check: the forecaster, its metadata, where it came from, its intervals."""
    forecaster: Forecaster
    metadata: dict[str, Any]
    url: str
    intervals: Any = None  # the checked `intervals.ConformalIntervals` saved beside it, or None


def save(forecaster: Forecaster, store: Location | str, model_key: str, *, config: typing.Mapping[str, object],
         fingerprint: str, version: str | None = None, extra: typing.Mapping[str, object] | None = None) -> str:
    """Save a forecaster as a new version under `store/model_key`; returns the version."""
    if forecaster.per_series is not None:
        raise ArtifactError("per-series models are not saved to the model store (train them each run)")
    version = version or new_version()
    key = signing_key()
    store = Location.of(store)
    fs, root = store.fs, store.path
    base = join(root, model_key, version)
    checksums = {}
    with tempfile.TemporaryDirectory(prefix="lstm-artifact-") as tmp:
        for i, member in enumerate(forecaster.members):
            local = os.path.join(tmp, f"member-{i}.keras")
            member.save(local)
            with open(local, "rb") as fh:
                data = fh.read()
            checksums[f"member-{i}.keras"] = hashlib.sha256(data).hexdigest()
            put_bytes(fs, join(base, f"member-{i}.keras"), data, root=root)
    if forecaster.scaler is not None:
        data = json.dumps(forecaster.scaler.to_dict(), indent=2, sort_keys=True, default=str).encode()
        checksums["scaler.json"] = hashlib.sha256(data).hexdigest()
        put_bytes(fs, join(base, "scaler.json"), data, root=root)
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_key": model_key,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
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
        **(_settings_of(config) or {}),
        "data_fingerprint": fingerprint,
        "training": forecaster.training,
        "versions": package_versions(),
        "sha256": checksums,
        **(extra or {}),
    }
    metadata = json.loads(json.dumps(metadata, default=str))  # signed exactly as it reads back
    if key is not None:
        metadata["signature"] = sign(metadata, key)
    write_json(fs, join(base, "metadata.json"), metadata, root=root)  # last: marks the version complete
    return version


def _settings_of(config: typing.Mapping[str, object]) -> RecordedSettings | None:
    """The network and training settings of a saved config, recorded so a store can be searched by them."""
    from lstm_core.config import validate_config

    try:
        cfg = validate_config(config)
        return RecordedSettings(network_settings=cfg.network_settings(), training_settings=cfg.training_settings())
    except Exception:  # noqa: BLE001 - a partial config (tests, notebooks): nothing to record
        return None


def list_versions(store: Location | str, model_key: str) -> list[str]:
    """Complete versions (with metadata.json), newest first."""
    store = Location.of(store)
    fs, root = store.fs, store.path
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
        raise storage_error(f"cannot list the model store {store.shown}/{model_key}", exc) from None
    return sorted(versions, reverse=True)


def load(store: Location | str, model_key: str, version: str,
         expect_features: tuple[str, ...] | None = None, expect_window: int | None = None,
         max_bytes: int = MAX_MODEL_BYTES, now: datetime | None = None) -> LoadedModel:
    """Load one version; refuse a corrupt, unsafe, unsigned (when a key is set) or incompatible artifact
    with a clear ArtifactError. A storage failure raises StorageError (the caller may retry).

    `max_bytes` caps each member archive (its object and its unpacked entries).
    """
    store = Location.of(store)
    fs, root = store.fs, store.path
    base = join(root, model_key, version)
    url = scrub(f"{store.url.rstrip('/')}/{model_key}/{version}")  # named in messages: no credentials
    key = signing_key()
    meta = parse_metadata(_read(fs, join(base, "metadata.json"), "metadata.json", url, MAX_METADATA_BYTES,
                                missing="metadata.json missing (incomplete artifact)"), url, key)
    if (meta["model_key"], meta["version"]) != (model_key, version):
        raise ArtifactError(f"model {url}: metadata.json describes {meta['model_key']}/{meta['version']}, "
                            f"not the version stored here")
    created = datetime.fromisoformat(meta["created_at"])
    if created > (now or datetime.now(UTC)) + CLOCK_SKEW:
        raise ArtifactError(f"model {url}: metadata.json is corrupt: created_at {meta['created_at']} is in the future")
    saved_keras = str(meta["versions"].get("keras", ""))
    if saved_keras.split(".")[:1] != keras.__version__.split(".")[:1]:
        raise ArtifactError(f"model {url}: saved with Keras {saved_keras}, running {keras.__version__}")
    if expect_features is not None and tuple(meta["feature_names"]) != tuple(expect_features):
        raise ArtifactError(f"model {url}: feature schema {meta['feature_names']} differs from the data's "
                            f"{list(expect_features)}")
    if expect_window is not None and meta["window"] != expect_window:
        raise ArtifactError(f"model {url}: window {meta['window']} differs from the configured {expect_window}")
    members = []
    checksums = meta["sha256"]
    with tempfile.TemporaryDirectory(prefix="lstm-artifact-") as tmp:
        for i in range(meta["members"]):
            name = f"member-{i}.keras"
            data = _read(fs, join(base, name), name, url, max_bytes, missing=f"{name} missing")
            # Check the bytes before anything parses them: a damaged file gets a plain message.
            _sha256_ok(name, data, checksums, url, signed=key is not None)
            if not zipfile.is_zipfile(io.BytesIO(data)):
                raise ArtifactError(f"model {url}: {name} is corrupt: not a .keras (zip) archive")
            folder = tempfile.mkdtemp(prefix=f"member-{i}-", dir=tmp)  # private (0700), fresh per member
            try:
                # Keras reads a fresh archive of exactly the entries that were checked, never the stored one.
                local = checked_copy(data, max_bytes, folder)
            except UnsafeArchive as exc:
                raise ArtifactError(f"model {url}: {name} is corrupt or unsafe: {exc}") from None
            del data
            try:
                # Safe mode as a second line: no Python lambdas, no pickle, from any artifact.
                members.append(keras.saving.load_model(local, compile=False, safe_mode=True))
            except Exception as exc:  # noqa: BLE001 - Keras raises many types for a broken file
                raise ArtifactError(f"model {url}: {name} is corrupt or unsafe: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    _check_geometry(members, meta, url)
    scaler = None
    try:
        raw = _read(fs, join(base, "scaler.json"), "scaler.json", url, MAX_METADATA_BYTES, missing=None)
    except FileNotFoundError:
        if key is not None and "scaler.json" in checksums:
            raise ArtifactError(f"model {url}: scaler.json missing") from None
        raw = None
    if raw is not None:
        _sha256_ok("scaler.json", raw, checksums, url, signed=key is not None)
        try:
            scaler = SeriesScaler.from_dict(json.loads(raw))
        except Exception as exc:  # noqa: BLE001
            raise ArtifactError(f"model {url}: scaler.json is corrupt: {exc}") from None
    try:
        encoder = StaticEncoder.from_dict(meta["static_encoder"]) if meta["static_encoder"] else None
    except Exception as exc:  # noqa: BLE001 - any shape the writer did not make
        raise ArtifactError(f"model {url}: metadata.json is corrupt: field 'static_encoder': {exc}") from None
    forecaster = Forecaster(members, meta["window"], tuple(meta["feature_names"]), meta["scaler_kind"],
                            meta["training"], scaler, target_transform=meta["target_transform"],
                            static_encoder=encoder, season_length=meta["season_length"],
                            deseasonalize=meta["deseasonalize"], known=tuple(meta["known"]))
    return LoadedModel(forecaster, meta, url, _read_intervals(fs, base, url, checksums, key is not None))


def _check_geometry(members: list[Any], meta: dict[str, Any], url: str) -> None:
    """The metadata's window, features and known-ahead columns are the inputs every member takes."""
    from lstm_core.model import model_geometry

    want = {"input_size": meta["window"], "n_features": len(meta["feature_names"]), "n_future": len(meta["known"])}
    chunks = set()
    for i, member in enumerate(members):
        try:
            geometry = model_geometry(member)
        except Exception as exc:  # noqa: BLE001 - a network of another shape than the builder's
            raise ArtifactError(f"model {url}: member-{i}.keras is corrupt: its inputs are not the model builder's "
                                f"({type(exc).__name__})") from None
        chunks.add(geometry["chunk"])
        for name, value in want.items():
            if geometry[name] != value:
                field = {"input_size": "window", "n_features": "feature_names", "n_future": "known"}[name]
                raise ArtifactError(f"model {url}: metadata.json is corrupt: field {field!r} gives {name} {value}, "
                                    f"member-{i}.keras takes {geometry[name]}")
    if len(chunks) > 1:
        raise ArtifactError(f"model {url}: its members forecast different chunk lengths {sorted(chunks)}")


def _read_intervals(fs, base: str, url: str, checksums: dict[str, str], signed: bool) -> Any:
    """The conformal intervals saved beside the version (`intervals.json`), checked like every file it serves:
    its sha256 recorded in the metadata (and so signed, with a key), then its shape
    (`ConformalIntervals.from_dict`). None when the version has none, or (with a key) when they are not covered
    by the signature: they are then calibrated in the run. Raises ArtifactError when they are corrupt.
    """
    from lstm_core.intervals import INTERVALS_FILE, ConformalIntervals

    listed = INTERVALS_FILE in checksums
    try:
        raw = _read(fs, join(base, INTERVALS_FILE), INTERVALS_FILE, url, MAX_METADATA_BYTES, missing=None)
    except FileNotFoundError:
        if listed:
            raise ArtifactError(f"model {url}: {INTERVALS_FILE} missing (its sha256 is recorded)") from None
        return None
    if not listed and signed:
        _log.warning("model %s: %s is not covered by the signature (saved before intervals were recorded in the "
                     "metadata): not used, the intervals are calibrated in this run", url, INTERVALS_FILE)
        return None
    _sha256_ok(INTERVALS_FILE, raw, checksums, url, signed)
    try:
        return ConformalIntervals.from_dict(json.loads(raw))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"model {url}: {INTERVALS_FILE} is corrupt: {exc}") from None


def add_file(store: Location | str, model_key: str, version: str, name: str, data: bytes) -> None:
    """Add a file beside a complete version (its intervals) and record its sha256 in the version's metadata,
    re-signed when a signing key is set, so the checksums (and the signature) cover everything a loaded
    version serves. The file is written first: a reader that sees it before the metadata update finds it
    unrecorded (not used with a key, calibrated in the run instead).

    Raises ArtifactError when the version's metadata cannot be verified (then the file is not added).
    """
    store = Location.of(store)
    fs, root = store.fs, store.path
    base = join(root, model_key, version)
    url = scrub(f"{store.url.rstrip('/')}/{model_key}/{version}")
    key = signing_key()
    raw = _read(fs, join(base, "metadata.json"), "metadata.json", url, MAX_METADATA_BYTES,
                missing="metadata.json missing (incomplete artifact)")
    parse_metadata(raw, url, key)  # verified (signature first) before it is extended
    metadata = json.loads(raw)
    if key is None and metadata.get("signature"):
        raise ArtifactError(f"model {url} is signed and {SIGNING_KEY_ENV} is not set: {name} cannot be recorded in "
                            f"its signed metadata")
    put_bytes(fs, join(base, name), data, root=root)
    metadata.setdefault("sha256", {})[name] = hashlib.sha256(data).hexdigest()
    metadata.pop("signature", None)
    if key is not None:
        metadata["signature"] = sign(metadata, key)
    write_json(fs, join(base, "metadata.json"), metadata, root=root)


def _read(fs, path: str, name: str, url: str, max_bytes: int, missing: str | None) -> bytes:
    """One file of a version, refused when larger than `max_bytes`; FileNotFoundError when `missing` is None."""
    try:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise ArtifactError(f"model {url}: {name} is {size:,} bytes, more than the {max_bytes:,} allowed "
                                f"(setting max_model_bytes)")
        data = fs.cat_file(path)
    except FileNotFoundError:
        if missing is None:
            raise
        raise ArtifactError(f"model {url}: {missing}") from None
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - could not reach it: say so, do not call the model corrupt
        raise storage_error(f"model {url}: cannot read {name}", exc) from None
    if len(data) > max_bytes:
        raise ArtifactError(f"model {url}: {name} is more than the {max_bytes:,} bytes allowed")
    return data
