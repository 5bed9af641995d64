"""The model store: versions under a model key, the champion among them, and which are kept.

Layout under `<output_url>/models/<model key>/`:
- `<version>/`: one saved model (`lstm_core.artifacts`; complete once its `metadata.json` is written, last);
  under `refit`, the model that scored the backtest in `<version>/backtest/<version>/`;
- `champion.json`: the champion pointer `{"version", "promoted_at", "reason"}` (HMAC-signed like a model's
  metadata when `LSTM_FORECAST_MODEL_SIGNING_KEY` is set). Written whole (temp + rename locally, one PUT on
  object stores), so a reader sees the old pointer or the new one. It changes only through the promotion
  gate (`lstm_core.modelling.get_or_train`) or `lstm-forecast promote <version>` (`promote`); read and written
  by `lstm_core.champion` (`read_champion` refuses malformed content, an unsigned pointer with a key set, and a
  version that is not complete under the key; the version itself is then loaded through every check a model gets);
- `.holds/<version>.<token>.json`: a read-marker written before a version is read: by the run that chooses
  it (`lstm_core.promotion`; a process keeps one marker per key, the newest it chose) and by each shard process
  that opens it (`ModelStore.open`, once per process). It names its process (`lease.process_identity`) and
  when it expires (`HOLD_TTL`); nothing renews it. Best effort: a store the run may only read gets none (a
  warning says so).

Retention (`prune`, after each saved version; setting `keep_versions`) keeps the champion, its lineage back to
the last full training (each version's metadata names its `lineage.parent_version`), the newest
`keep_versions` and every version with a live hold (not expired, and not held by a process known to have died
on this machine, `lease.holder_is_dead`). The holds are read again right before each removal. A removal
deletes `metadata.json` first, so a half-deleted version is incomplete and never listed or loaded; a reader
that began loading a version in the instant between the hold check and the removal fails its checks
(ArtifactError) and falls back like for any bad model, never serving a partial one.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import JsonValue

from lstm_core import artifacts
from lstm_core.atomic import read_json, remove_file, remove_tree, write_json
from lstm_core.champion import read_champion, write_champion
from lstm_core.config import ForecastConfig, ModelSpec
from lstm_core.engine import Forecaster
from lstm_core.errors import ArtifactError, StorageError
from lstm_core.intervals import INTERVALS_FILE, ConformalIntervals
from lstm_core.lease import holder_is_dead, process_identity
from lstm_core.location import Location, join
from lstm_core.panel import Panel
from lstm_core.records import Decision
from lstm_core.retrain import decide_for, split_model_url
from lstm_core.retries import call_with_retries

_log = logging.getLogger("lstm_core.model_store")

HOLDS = ".holds"
HOLD_TTL = timedelta(hours=12)  # a run longer than this renews nothing: a later prune may remove its version
# Under `refit`, the model that scored the backtest (trained before the earliest cutoff) is kept inside the
# version of the final one, at `<version>/backtest/<version>/`: below a version, so never a candidate to load.
BACKTEST_MODEL = "backtest"


def promote(store: Location | str, version: str, key: str | None = None) -> tuple[str, str | None]:
    """`lstm-forecast promote <version>`: make a saved version its key's champion, after loading it through
    every check a model gets. Returns (key, the previous champion or None). Raises ArtifactError when the
    version is not in the store (or under several keys and `key` is not given) or fails its checks."""
    store = Location.of(store)
    if key is None:
        keys = [k for k in _keys(store) if store.fs.exists(join(store.path, k, version, "metadata.json"))]
        if len(keys) != 1:
            raise ArtifactError(f"model version {version} is {'not in' if not keys else 'under several keys of'} "
                                f"the model store {store.shown}" + (f": {', '.join(keys)}" if keys else ""))
        key = keys[0]
    artifacts.load(store, key, version)  # refused like any bad model
    try:
        previous = read_champion(store, key)
    except ArtifactError:
        previous = None
    write_champion(store, key, version, f"promoted by hand (was {previous or 'none'})")
    return key, previous


def _keys(store: Location) -> list[str]:
    store.fs.invalidate_cache(store.path)
    try:
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in store.fs.ls(store.path, detail=False))
    except FileNotFoundError:
        return []


# --- holds and retention ---------------------------------------------------------------------------------
def hold(store: Location | str, key: str, version: str, ttl: timedelta = HOLD_TTL) -> str:
    """Write a read-marker on `version` (it survives retention until it expires or its process dies).
    Returns the marker's path, for `release`."""
    store = Location.of(store)
    now = datetime.now(UTC)
    body = {**process_identity(), "version": version, "held_at": now.isoformat(),
            "expires_at": (now + ttl).isoformat()}
    path = join(store.path, key, HOLDS, f"{version}.{os.urandom(6).hex()}.json")
    write_json(store.fs, path, body, root=store.path)
    return path


def release(store: Location | str, path: str) -> None:
    """Remove a read-marker `hold` wrote."""
    store = Location.of(store)
    remove_file(store.fs, path, root=store.path)


def held_versions(store: Location | str, key: str, now: datetime | None = None) -> set[str]:
    """Versions under `key` with a live hold. An unreadable marker counts as live (kept, never guessed)."""
    store = Location.of(store)
    now = now or datetime.now(UTC)
    base = join(store.path, key, HOLDS)
    store.fs.invalidate_cache(base)
    try:
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in store.fs.ls(base, detail=False)]
    except FileNotFoundError:
        return set()
    held = set()
    for name in names:
        version = name.rsplit(".", 2)[0]
        try:
            body = read_json(store.fs, join(base, name))
            expired = datetime.fromisoformat(body["expires_at"]) < now
            if expired or holder_is_dead(body):
                remove_file(store.fs, join(base, name), root=store.path)  # a stale marker: cleaned up
                continue
        except FileNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - a marker being written, or damaged: keep its version
            _log.debug("hold marker %s cannot be read: its version is kept", name)
        held.add(version)
    return held


def lineage(store: Location | str, key: str, version: str) -> list[str]:
    """`version` and its parents (`lineage.parent_version`) back to the last full training, newest first."""
    store = Location.of(store)
    out: list[str] = []
    while version and version not in out:
        out.append(version)
        try:
            meta = read_json(store.fs, join(store.path, key, version, "metadata.json"))
        except (FileNotFoundError, ValueError):
            break
        parent = ((meta or {}).get("lineage") or {}).get("parent_version") if isinstance(meta, dict) else None
        version = parent if isinstance(parent, str) else ""
    return out


def prune(store: Location | str, key: str, keep: int, log=None) -> list[str]:
    """Remove the versions retention does not keep (module docstring); returns those removed."""
    log = log or _log
    store = Location.of(store)
    versions = artifacts.list_versions(store, key)
    try:
        champion = read_champion(store, key)
    except ArtifactError:
        champion = None
    kept = set(versions[:keep]) | (set(lineage(store, key, champion)) if champion else set())
    removed = []
    for version in versions[keep:]:
        if version in kept or version in held_versions(store, key):  # holds read again before each removal
            continue
        base = join(store.path, key, version)
        remove_file(store.fs, join(base, "metadata.json"), root=store.path)  # first: no longer complete
        remove_tree(store.fs, base, root=store.path)
        removed.append(version)
    if removed:
        log.info("retention (keep_versions %d, champion %s and its lineage): removed %d versions under key %s: %s",
                 keep, champion, len(removed), key, ", ".join(removed))
    return removed


# --- the store a run opens ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelStore:
    """Where models are kept: `<url>/<model key>/<version>/` (weights, metadata, saved intervals; under
    `refit`, the model that scored the backtest in `backtest/<version>/`), with a champion per key.

    Opened once per run (`ModelStore.of(config)`); it owns its `Location` (URL and filesystem), so
    callers pass the store, not URLs and options.
    """

    location: Location

    @classmethod
    def of(cls, config: ForecastConfig) -> ModelStore:
        """The model store of a (resolved) configuration: `<output_url>/models`."""
        return cls(config.location(config.layout().models()))

    @property
    def url(self) -> str:
        """The store's URL (no credentials)."""
        return self.location.url

    def decide(self, spec: ModelSpec, newest: Panel | None, *, fingerprint: str | None = None,
               gate_panel: Panel | None = None) -> Decision:
        """Load, warm-start or train, and why (`lstm_core.retrain.decide_for`): `newest` is the data a saved
        model's validation loss is checked on (None under retrain 'never' or a pinned model), `gate_panel` the
        newest data the gate scores on, `fingerprint` the data's (unchanged data reload the champion)."""
        return decide_for(spec.config, self.location, newest, spec.group, fingerprint=fingerprint,
                          gate_panel=gate_panel)

    def save(self, forecaster: Forecaster, spec: ModelSpec, fingerprint: str, version: str,
             backtest: Forecaster | None = None, extra: Mapping[str, object] | None = None) -> None:
        """Write a version (retried in place on storage hiccups: the training is never repeated).
        `backtest`: under refit, the model that scores the backtest, written first (inside the version,
        which is complete only once its own metadata is written last). `extra`: further metadata fields
        (`decision`, `gate`, `lineage`)."""
        config = spec.config
        extra = {**({"group": spec.group} if config.group_column is not None else {}), **(extra or {})} or None
        if backtest is not None:
            call_with_retries(artifacts.save, backtest, self.location.child(spec.key, version), BACKTEST_MODEL,
                              config=config.public_dict(), fingerprint=fingerprint, version=version, extra=extra,
                              what="saving the backtest model")
        call_with_retries(artifacts.save, forecaster, self.location, spec.key, config=config.public_dict(),
                          fingerprint=fingerprint, version=version, extra=extra, what="saving the model")

    def champion(self, key: str) -> str | None:
        """The champion version under `key` (`read_champion`)."""
        return read_champion(self.location, key)

    def promote(self, key: str, version: str, reason: str) -> None:
        """Point `key`'s champion at `version` (the gate's promotion)."""
        write_champion(self.location, key, version, reason)

    def hold(self, key: str, version: str) -> str | None:
        """A read-marker on `version` (`hold`); None when it cannot be written (a store this run may only
        read): retention is then not told, which a warning says."""
        try:
            return hold(self.location, key, version)
        except StorageError as exc:
            _log.warning("no read-marker on model %s/%s (retention elsewhere may remove it): %s", key, version, exc)
            return None

    def prune(self, key: str, keep: int, log=None) -> list[str]:
        """Retention under `key` (`prune`)."""
        return prune(self.location, key, keep, log=log)

    def save_intervals(self, intervals: ConformalIntervals, key: str, version: str, log=None) -> None:
        """Save `intervals.json` beside a version, its sha256 recorded in the version's (signed) metadata,
        so a loaded version serves only checked intervals. A version whose metadata cannot be extended
        (signed, and no key now) keeps none: later runs calibrate their own (a warning says why)."""
        data = json.dumps(intervals.to_dict(), indent=2, sort_keys=True, allow_nan=False).encode()
        try:
            call_with_retries(artifacts.add_file, self.location, key, version, INTERVALS_FILE, data,
                              what="saving the intervals")
        except ArtifactError as exc:
            (log or _log).warning("the intervals are not saved beside the model: %s", exc)

    def holding(self, config: ForecastConfig) -> Location:
        """The store `config`'s versions live in: this one, or the one a `model_url` pins."""
        return self.location.with_url(split_model_url(config.model_url)[0]) if config.model_url else self.location

    def backtest_model(self, key: str, version: str, config: ForecastConfig) -> Forecaster | None:
        """The model kept inside a refit version, trained before its earliest cutoff: what scores backtests
        with that version (None when the version was not refit). Raises ArtifactError when it cannot be used."""
        inside = self.holding(config).child(key, version)
        if not inside.fs.exists(inside.child(BACKTEST_MODEL, version, "metadata.json").path):
            return None
        return artifacts.load(inside, BACKTEST_MODEL, version, max_bytes=config.max_model_bytes).forecaster

    def open(self, ref: ModelRef, config: ForecastConfig, log=None) -> ModelChoice:
        """The stored version `ref` names, with the intervals saved beside it: what its shards forecast with.

        Opened through the same checks as any saved model (allowlist, sizes, checksums, signature); raises
        ArtifactError when it cannot be used. The shards of a run open the same version: it is opened once
        per process (`_OPENED`), so its compiled forecast loop is traced once, not once per shard.
        """
        log = log or _log
        if ref.model_key is None:  # mode per_series keeps its models in memory
            raise ArtifactError(f"model {ref.version} was not stored (mode per_series): there is nothing to open")
        holding = self.holding(config)
        cached = (holding.url, ref.model_key, ref.version, ref.refit, config.max_model_bytes)
        if cached not in _OPENED:
            if not config.model_url:  # a shard's process holds the version it forecasts with (once per process)
                self.hold(ref.model_key, ref.version)
            loaded = artifacts.load(holding, ref.model_key, ref.version, max_bytes=config.max_model_bytes)
            scorer = self.backtest_model(ref.model_key, ref.version, config) if ref.refit else loaded.forecaster
            if scorer is None:
                raise ArtifactError(f"model {loaded.url} was refit but keeps no {BACKTEST_MODEL}/ model inside it")
            _OPENED[cached] = (loaded, scorer)
            while len(_OPENED) > _OPENED_MAX:
                _OPENED.popitem(last=False)
        _OPENED.move_to_end(cached)
        loaded, scorer = _OPENED[cached]
        decision = Decision.model_validate(ref.decision).with_loaded(loaded)
        return ModelChoice(scorer, loaded.forecaster, decision, ref.version, ref.group,
                           first_window=ref.first_window, intervals=saved_intervals(loaded, config, log),
                           model_key=ref.model_key)


# Versions opened in this process, newest last: (store URL, key, version, refit, size cap) -> (loaded, scorer).
_OPENED: OrderedDict[tuple, tuple[Any, Forecaster]] = OrderedDict()
_OPENED_MAX = 4


@dataclass
class ModelChoice:
    """The model a run forecasts with, where it came from, and the intervals that go with it."""

    forecaster: Forecaster  # scores the backtest (trained on the data before its earliest cutoff)
    final: Forecaster  # forecasts past T (the same model unless refit)
    decision: Decision
    version: str
    group: str | None = None
    first_window: int = 0  # backtest windows before it precede the end of the training data: skipped
    intervals: ConformalIntervals | None = None  # saved beside the model version (None: calibrate in the run)
    model_key: str | None = None  # where the version is stored (None: not stored, mode per_series)


@dataclass(frozen=True)
class ModelRef:
    """A model by reference: what crosses from a group's training to its shards and to the manifest.

    Small and picklable (no Keras objects): the shards open the stored version themselves.
    """

    model_key: str | None  # None: not stored (mode per_series)
    version: str
    group: str | None
    first_window: int
    decision: dict[str, JsonValue]  # `Decision.as_dict()`: action, reason, the gate's scores and lineage
    training: dict[str, JsonValue]  # the training summary the version was saved with
    refit: bool = False  # the version keeps the model that scores the backtest apart (`BACKTEST_MODEL`)

    @classmethod
    def of(cls, choice: ModelChoice) -> ModelRef:
        """The reference of a chosen model."""
        return cls(choice.model_key, choice.version, choice.group, int(choice.first_window),
                   choice.decision.as_dict(), dict(choice.forecaster.training or {}),
                   refit=choice.forecaster is not choice.final)


def intervals_fit(intervals: ConformalIntervals | None, config: ForecastConfig) -> bool:
    """Saved intervals fit this run: same levels and method, calibrated for at least the horizon."""
    return (intervals is not None and tuple(intervals.levels) == tuple(float(v) for v in config.levels)
            and intervals.method == config.interval_method and intervals.horizon >= config.horizon)


def saved_intervals(loaded: Any, config: ForecastConfig, log) -> ConformalIntervals | None:
    """The conformal quantiles saved beside a loaded model version, when they fit this run."""
    if not config.levels:
        return None
    version = split_model_url(loaded.url)[2]
    saved = loaded.intervals  # read and checked with the version (checksum, signature, shape)
    if saved is None:
        log.info("model %s has no saved intervals: they are calibrated on this run's backtest", version)
    elif not intervals_fit(saved, config):
        log.info("model %s's saved intervals (levels %s, %s, %d steps) do not fit this run: recalibrated",
                 version, list(saved.levels), saved.method, saved.horizon)
        return None
    return saved
