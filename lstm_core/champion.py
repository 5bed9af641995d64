"""The champion pointer of a model key: `champion.json` beside its versions, read and written whole.

`{"version", "promoted_at", "reason"}`, HMAC-signed like a model's metadata when
`LSTM_FORECAST_MODEL_SIGNING_KEY` is set. A leaf module: the retrain decision (`lstm_core.retrain`) reads the
champion and the model store (`lstm_core.model_store`) reads and writes it, neither through the other.
"""
from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime

from lstm_core.atomic import write_json
from lstm_core.errors import ArtifactError
from lstm_core.location import Location, join
from lstm_core.retries import call_with_retries
from lstm_core.secrets import scrub
from lstm_core.signing import sign, signing_key

CHAMPION_FILE = "champion.json"
MAX_POINTER_BYTES = 64 * 1024


def read_champion(store: Location | str, key: str) -> str | None:
    """The champion version under `key`, or None when no pointer is written.

    Raises ArtifactError when the pointer is malformed, unsigned or wrongly signed (with a signing key), or
    names a version that is not complete under the key.
    """
    store = Location.of(store)
    path = join(store.path, key, CHAMPION_FILE)
    url = scrub(f"{store.url.rstrip('/')}/{key}/{CHAMPION_FILE}")
    try:
        if (store.fs.size(path) or 0) > MAX_POINTER_BYTES:
            raise ArtifactError(f"champion pointer {url} is larger than {MAX_POINTER_BYTES:,} bytes")
        body = json.loads(store.fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"champion pointer {url} is corrupt: {type(exc).__name__}: {exc}") from None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
        raise ArtifactError(f"champion pointer {url} is corrupt: field 'version' must name a version folder")
    key_bytes = signing_key()
    if key_bytes is not None:
        signature = body.get("signature")
        expected = sign(body, key_bytes)
        if not isinstance(signature, dict) or not hmac.compare_digest(str(signature.get("value", "")),
                                                                      expected["value"]):
            raise ArtifactError(f"champion pointer {url}: missing or wrong signature")
    if not store.fs.exists(join(store.path, key, version, "metadata.json")):
        raise ArtifactError(f"champion pointer {url} names version {version}, which is not complete under the key")
    return version


def write_champion(store: Location | str, key: str, version: str, reason: str) -> None:
    """Point the champion of `key` at `version` (complete under the key, else ArtifactError); written whole."""
    store = Location.of(store)
    if not store.fs.exists(join(store.path, key, version, "metadata.json")):
        raise ArtifactError(f"model version {version} is not in the model store {store.shown} under key {key}")
    body: dict[str, str | dict[str, str]] = {"version": version, "promoted_at": datetime.now(UTC).isoformat(),
                                              "reason": reason}
    key_bytes = signing_key()
    if key_bytes is not None:
        body["signature"] = sign(body, key_bytes)
    call_with_retries(write_json, store.fs, join(store.path, key, CHAMPION_FILE), body, root=store.path,
                      what="writing the champion pointer")
