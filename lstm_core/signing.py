"""Signing saved models: an HMAC-SHA256 over a version's metadata (every file's sha256 included) and over the
champion pointer, with the key in `LSTM_FORECAST_MODEL_SIGNING_KEY`.

A leaf module (no Keras): the model store's pointer (`lstm_core.champion`) and the artifacts
(`lstm_core.artifacts`) both sign and verify with it. Whoever can write the model store can write checksums too;
only a signature made with a key the writer lacks detects tampering (README "Saved models").
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import typing

from lstm_core.errors import ArtifactError, ConfigError

SIGNING_KEY_ENV = "LSTM_FORECAST_MODEL_SIGNING_KEY"
MIN_SIGNING_KEY_LENGTH = 32


def signing_key(environ: typing.Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key from LSTM_FORECAST_MODEL_SIGNING_KEY, or None when it is not set."""
    value = (os.environ if environ is None else environ).get(SIGNING_KEY_ENV)
    if not value:
        return None
    if len(value) < MIN_SIGNING_KEY_LENGTH:
        raise ConfigError(f"{SIGNING_KEY_ENV} is shorter than {MIN_SIGNING_KEY_LENGTH} characters")
    return value.encode()


def _canonical(metadata: typing.Mapping[str, object]) -> bytes:
    """The metadata as signed: every field but the signature, as compact sorted JSON."""
    body = {k: v for k, v in metadata.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(metadata: typing.Mapping[str, object], key: bytes) -> dict[str, str]:
    """HMAC-SHA256 over the metadata (every file's sha256 included), as stored under `signature`."""
    return {"algorithm": "hmac-sha256", "value": hmac.new(key, _canonical(metadata), hashlib.sha256).hexdigest()}


def verify(metadata: typing.Mapping[str, object], key: bytes, url: str) -> None:
    """Raise ArtifactError (naming `url`) unless `metadata` carries a valid signature made with `key`."""
    signature = metadata.get("signature")
    if not isinstance(signature, dict) or not signature:
        raise ArtifactError(f"model {url}: not signed, and {SIGNING_KEY_ENV} is set: unsigned models are not loaded")
    expected = sign(metadata, key)
    if signature.get("algorithm") != expected["algorithm"] or \
            not hmac.compare_digest(str(signature.get("value", "")), expected["value"]):
        raise ArtifactError(f"model {url}: its signature does not match: the artifact was changed after it was "
                            f"saved, or signed with another key")
