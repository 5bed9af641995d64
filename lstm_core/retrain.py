"""Retrain or load: the decision, with a reason a person can read."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from lstm_core.artifacts import MAX_MODEL_BYTES, LoadedModel, list_versions, load
from lstm_core.engine import Forecaster
from lstm_core.errors import ArtifactError, ConfigError
from lstm_core.panel import Panel
from lstm_core.secrets import scrub
from lstm_core.storage import Location, is_storage_failure, join, read_json
from lstm_core.training import model_inputs
from lstm_core.windows import plan_windows, tail_windows, validation_span

log = logging.getLogger("lstm_core.model_store")


@dataclass
class Decision:
    action: str  # "train" | "load"
    reason: str
    loaded: LoadedModel | None = None

    def as_dict(self) -> dict:
        d = {"action": self.action, "reason": self.reason}
        if self.loaded is not None:
            d["model_version"] = self.loaded.metadata["version"]
        return d


def validation_loss(forecaster: Forecaster, panel: Panel, steps: int, loss: str) -> float:
    """Loss on the validation chunks covering each series' last `steps` points, in the units training
    reported (of the best member: training records the best epoch's loss, not the snapshot ensemble's)."""
    plan = plan_windows(panel.lengths, forecaster.window, forecaster.chunk, validation_span(steps, forecaster.chunk),
                        forecaster.patch)
    space = forecaster.model_space(panel, pad=plan.pad)
    val = tail_windows(space.panel, forecaster.window, steps, forecaster.chunk, known=forecaster.known,
                       series=plan.holdout > 0)
    if len(val.y) == 0:
        return float("nan")
    pred = forecaster.members[0].predict(model_inputs(val), verbose=0, batch_size=8192)
    err = pred - val.y
    if loss == "mse":
        return float(np.mean(err**2))
    if loss == "huber":
        a = np.abs(err)
        return float(np.mean(np.where(a <= 1, 0.5 * err**2, a - 0.5)))
    return float(np.mean(np.abs(err)))


def decide(
    policy: str,
    store: Location | str,
    model_key: str,
    train_panel: Panel | None,
    *,
    window: int,
    validation_steps: int,
    loss: str,
    max_age: timedelta,
    tolerance: float,
    now: datetime | None = None,
    features: tuple[str, ...] | None = None,
    versions: list[str] | None = None,
    note: str = "",
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> Decision:
    """Apply the retrain policy ('auto', 'always', 'never') to the model store.

    Under 'never' no data is needed: pass `train_panel=None` (and the expected `features` to check them;
    the model key already fixes the covariates' names and roles). `versions`: the candidates, newest
    first (default: every complete version under the key); `note` is added to a load's reason.
    A saved model that is corrupt, unsafe or unusable on the data in any way is never loaded:
    'auto' retrains and gives the reason; 'never' raises ArtifactError.
    """
    if train_panel is None and policy != "never":
        raise ValueError(f"retrain policy {policy!r} needs the training data")
    expect = None if train_panel is not None else (tuple(features) if features else None)
    store = Location.of(store)
    if policy == "always":
        return Decision("train", "retrain policy is 'always'")
    if versions is None:
        versions = list_versions(store, model_key)
    if not versions:
        if policy == "never":
            raise ArtifactError(f"retrain policy is 'never' but the model store {store.shown} has no model for "
                                f"this configuration (key {model_key})")
        return Decision("train", f"no saved model for this configuration (key {model_key})")
    problems = []
    for version in versions:  # newest first; fall back past corrupt or incompatible ones
        try:
            loaded = load(store, model_key, version, expect_features=expect, expect_window=window,
                          max_bytes=max_model_bytes, now=now)
            if train_panel is not None:
                # the data as this model reads them (its static vocabulary): the same columns?
                have = tuple(loaded.forecaster.adapt(train_panel).feature_names)
                if have != tuple(loaded.forecaster.feature_names):
                    raise ArtifactError(f"model {loaded.url}: feature schema {list(loaded.forecaster.feature_names)} "
                                        f"differs from the data's {list(have)}")
            break
        except ArtifactError as exc:
            problems.append(str(exc))
            log.warning("skipping model %s: %s", version, exc)
    else:
        if policy == "never":
            raise ArtifactError("retrain policy is 'never' but no saved model can be loaded: " + "; ".join(problems))
        return Decision("train", "no loadable model: " + "; ".join(problems))
    if policy == "never":
        return Decision("load", f"retrain policy is 'never': loaded newest loadable model {version}{note}", loaded)
    if problems:
        # A newer version exists but is broken: retrain rather than silently serve an older model.
        return Decision("train", "newest saved model cannot be used: " + problems[0])
    now = now or datetime.now(timezone.utc)
    created = datetime.fromisoformat(loaded.metadata["created_at"])
    age = now - created
    if age > max_age:
        return Decision("train", f"model {version} is {_human(age)} old, older than max_model_age {_human(max_age)}")
    best = (loaded.metadata.get("training") or {}).get("best_val_loss")
    recorded = float("nan") if best is None else float(best)
    try:
        current = validation_loss(loaded.forecaster, train_panel, validation_steps, loss)
    except Exception as exc:  # noqa: BLE001 - a network whose shapes or weights do not fit the data
        if is_storage_failure(exc):
            raise
        log.warning("model %s cannot be used on this data: %s", version, exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Decision("train", f"model {version} cannot be used on this data: {type(exc).__name__}: {first}")
    if np.isfinite(recorded) and np.isfinite(current) and current > recorded * (1 + tolerance):
        return Decision("train", f"model {version} degraded: validation {loss} on newest data {current:.4f} > "
                                 f"recorded {recorded:.4f} x (1 + {tolerance:g})")
    return Decision("load", f"model {version} is current ({_human(age)} old) and its validation {loss} on the "
                            f"newest data {current:.4f} is within {tolerance:.0%} of recorded {recorded:.4f}", loaded)


# --- choosing by configuration: pins, training settings, and saying what differs --------------------
def decide_for(config, store: Location | str, train_panel: Panel | None, group: str | None = None,
               now: datetime | None = None) -> Decision:
    """The retrain decision for `config`: a pinned version (`model_version` / `model_url`) if set; else
    the policy over the versions under the model key, preferring those trained with the same training
    settings. Under 'never' with nothing to load, the error lists the saved models and the settings
    that differ from the request.
    """
    store = Location.of(store)
    if config.model_url or config.model_version:
        return load_pinned(config, store, train_panel)
    key = config.model_key(group)
    common = dict(window=config.window, validation_steps=config.validation_steps, loss=config.training.loss,
                  max_age=config.max_model_age, tolerance=config.degradation_tolerance,
                  now=now, max_model_bytes=config.max_model_bytes)
    if config.retrain == "always":
        return decide("always", store, key, train_panel, **common)
    versions = list_versions(store, key)
    if not versions:
        if config.retrain == "never":
            raise ArtifactError(no_model_message(config, store, key, group))
        return decide("auto", store, key, train_panel, **common, versions=[])
    wanted = config.training_settings()
    same, other = [], []
    for version in versions:
        saved = _saved_training_settings(store, key, version)
        (same if saved == wanted else other).append((version, saved))
    if config.retrain == "auto":
        if not same:
            version, saved = other[0]
            diff = differences(saved or {}, wanted, "training")
            return Decision("train", f"saved models under key {key} were trained with other training settings "
                                     f"(newest {version}: {'; '.join(diff) or 'not recorded'})")
        return decide("auto", store, key, train_panel, **common, versions=[v for v, _ in same])
    note = ""
    if not same:
        diff = differences(other[0][1] or {}, wanted, "training")
        note = f" (trained with other training settings: {'; '.join(diff) or 'not recorded'})"
    return decide("never", store, key, train_panel, **common,
                  versions=[v for v, _ in same] + [v for v, _ in other], note=note)


def _saved_training_settings(store: Location, key: str, version: str) -> dict | None:
    meta = _metadata(store, key, version)
    settings = (meta or {}).get("training_settings")
    return settings if isinstance(settings, dict) else None


def _metadata(store: Location, key: str, version: str) -> dict | None:
    try:
        meta = read_json(store.fs, join(store.path, key, version, "metadata.json"))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, RecursionError):
        return None  # corrupt: load() says so when it is tried
    return meta if isinstance(meta, dict) else None


def differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """'setting: saved X, requested Y' for each (nested, dotted) setting that differs."""
    out = []
    for k in sorted(set(saved) | set(wanted)):
        a, b = saved.get(k), wanted.get(k)
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name)
        elif a != b:
            out.append(f"{name}: saved {a!r}, requested {b!r}")
    return out


def saved_models(store: Location | str) -> list[tuple[str, str, dict]]:
    """(model key, newest complete version, its metadata) for every key in the store."""
    store = Location.of(store)
    fs, root = store.fs, store.path
    fs.invalidate_cache(root)
    try:
        keys = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=False))
    except FileNotFoundError:
        return []
    out = []
    for key in keys:
        versions = list_versions(store, key)
        if versions:
            meta = _metadata(store, key, versions[0]) or {}
            out.append((key, versions[0], meta))
    return out


def network_settings_of(meta: dict) -> dict | None:
    """The network settings a saved model was made with (recorded, or derived from its saved config)."""
    if isinstance(meta.get("network_settings"), dict):
        return meta["network_settings"]
    from lstm_core.config import validate_config

    try:
        return validate_config(meta.get("config") or {}).network_settings()
    except Exception:  # noqa: BLE001 - a config of another version of this project: nothing to compare
        return None


def no_model_message(config, store: Location | str, key: str, group: str | None = None, limit: int = 10) -> str:
    """Why 'never' finds nothing: the saved keys, each with the settings that differ from the request."""
    wanted = config.network_settings()
    lines = []
    store = Location.of(store)
    for other, version, meta in saved_models(store)[:limit]:
        saved = network_settings_of(meta)
        if saved is None:
            lines.append(f"key {other} ({version}): settings not recorded")
            continue
        diff = differences(saved, wanted)
        if group is not None and meta.get("group") != group:
            diff.append(f"group: saved {meta.get('group')!r}, requested {group!r}")
        lines.append(f"key {other} ({version}): " + ("; ".join(diff) or "same network settings"))
    saved_text = " | ".join(lines) if lines else "none"
    return (f"retrain policy is 'never' but the model store {store.shown} has no model for this configuration "
            f"(key {key}); saved models: {saved_text}")


def split_model_url(url: str) -> tuple[str, str, str]:
    """`<store>/<model_key>/<version>` -> (store, model key, version). Raises ValueError for fewer parts."""
    parts = url.rstrip("/").rsplit("/", 2)
    if len(parts) != 3:
        raise ValueError(f"{scrub(url)} is not <store>/<model_key>/<version>")
    return parts[0], parts[1], parts[2]


def load_pinned(config, store: Location | str, train_panel: Panel | None) -> Decision:
    """Load the version `model_url` or `model_version` names, whatever the retrain policy.

    Refused (ArtifactError) when it is missing or takes other inputs than the configuration gives.
    """
    store = Location.of(store)
    if config.model_url:
        try:
            url, key, version = split_model_url(config.model_url)
        except ValueError as exc:
            raise ConfigError(f"setting 'model_url': {exc}") from None
        store = store.with_url(url)
    else:
        version = config.model_version
        found = [k for k, _, _ in saved_models(store)
                 if store.fs.exists(join(store.path, k, version, "metadata.json"))]
        if not found:
            newest = [f"{k}/{v}" for k, v, _ in saved_models(store)[:5]]
            raise ArtifactError(f"model_version {version} is not in the model store {store.shown} "
                                f"(newest per key: {', '.join(newest) or 'none'})")
        key = found[0]
    loaded = load(store, key, version, max_bytes=config.max_model_bytes)
    saved = network_settings_of(loaded.metadata)
    if saved is not None:
        wanted = config.network_settings()
        diff = [d for d in differences(saved, wanted) if d.split(":")[0] in ("window", "covariates.historic",
                                                                                "covariates.future", "covariates.static",
                                                                                "covariates.calendar")]
        if diff:
            raise ArtifactError(f"pinned model {loaded.url} takes other inputs than this configuration gives: "
                                + "; ".join(diff))
    if train_panel is not None:
        have = tuple(loaded.forecaster.adapt(train_panel).feature_names)
        if have != tuple(loaded.forecaster.feature_names):
            raise ArtifactError(f"pinned model {loaded.url}: feature schema {list(loaded.forecaster.feature_names)} "
                                f"differs from the data's {list(have)}")
    return Decision("load", f"pinned model_version {version} (key {key})", loaded)


def _human(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    return f"{s}s"
