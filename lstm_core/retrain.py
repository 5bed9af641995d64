"""Retrain, warm-start or load: the decision, with a reason a person can read (README "Retrain or load").

`decide` applies a policy to the versions under one model key (load the newest usable one, or say why it
must be retrained); `decide_for` applies a configuration: a pinned version, else the champion under the key
(`lstm_core.model_store`: its `champion.json`), else, in a store written before champions existed, the
newest version trained with the same training settings. Under `retrain: auto` a usable champion that is
current and not degraded is loaded when the data are unchanged since it was trained (same fingerprint) and
warm-started (`action: warm`) when they are newer; `lstm_core.modelling.get_or_train` then fine-tunes it
and gates the challenger on the same windows (`gate_score`).

The gate's measure, `gate_score`: the mean MASE of a model's forecasts over the newest backtest windows of the
data (the run's `backtest.windows` cutoffs, `backtest.step` apart): windows no model of the run has trained on.
It is recorded in a saved version's metadata (`gate.score`) on the newest windows of the data it was saved
with, and the degradation check compares the same measure on today's newest windows: like with like, so
unchanged data never look degraded (a version saved without it falls back to the validation loss).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from lstm_core.artifacts import MAX_MODEL_BYTES, LoadedModel, list_versions, load
from lstm_core.atomic import read_json
from lstm_core.backtest import cutoff_drops
from lstm_core.engine import Forecaster
from lstm_core.errors import ArtifactError, ConfigError
from lstm_core.location import Location, is_storage_failure, join
from lstm_core.panel import Panel
from lstm_core.records import Decision
from lstm_core.secrets import scrub
from lstm_core.training import model_inputs
from lstm_core.windows import plan_windows, tail_windows, validation_span

log = logging.getLogger("lstm_core.retrain")

# What a decision lets the run do with the champion pointer (`Decision.role`, in memory only):
CHAMPION = "champion"  # the run follows the champion: a full training replaces it, a warm start is gated
OWN = "own"  # other training settings than the champion's: the run trains and serves its own, never promotes


@dataclass(frozen=True)
class GateWindows:
    """Where the gate scores: `windows` cutoffs `step` apart, each followed by `horizon` points; MASE scaled by
    the in-sample seasonal naive error (season `season_length`) of the history before each cutoff."""

    horizon: int
    season_length: int
    windows: int
    step: int

    @classmethod
    def of(cls, config: Any) -> "GateWindows":
        """The run's backtest windows (a resolved `ForecastConfig`)."""
        return cls(int(config.horizon), int(config.season_length), int(config.backtest.windows),
                   int(config.backtest_step))

    def as_dict(self) -> dict[str, Any]:
        return {"metric": "mase", "horizon": self.horizon, "season_length": self.season_length,
                "windows": self.windows, "step": self.step}


def gate_score(forecaster: Forecaster, panel: Panel, gate: GateWindows) -> float:
    """Mean MASE of `forecaster` over the newest `gate.windows` backtest windows of `panel` (unitless; NaN when
    no series has a window with a non-zero scale).

    Each window cuts every series long enough (more than the points it drops plus 2) at its cutoff, forecasts
    `horizon` points from the history before it (known-ahead covariates from the panel) and scales each
    series' mean absolute error by the mean absolute seasonal difference of that history (Hyndman & Koehler
    2006, MASE; season 1 below two seasons of history). Champion and challenger are scored by this same call
    on the same panel: like with like.
    """
    scores = []
    for drop in cutoff_drops(gate.windows, gate.step, gate.horizon):
        ok = panel.lengths > drop + 2
        if not ok.any():
            continue
        part = panel.select(ok)
        history = part.drop_last(int(drop))
        fc = forecaster.forecast(history, gate.horizon)  # (S, H)
        starts = part.offsets[:-1] + part.lengths - drop
        y = part.values[:, 0].astype(np.float64)
        for i in range(part.n_series):
            actual = y[starts[i]:starts[i] + gate.horizon]
            past = y[part.offsets[i]:starts[i]]
            m = gate.season_length if len(past) > 2 * gate.season_length else 1
            scale = float(np.mean(np.abs(past[m:] - past[:-m]))) if len(past) > m else float("nan")
            if np.isfinite(scale) and scale > 0 and len(actual):
                scores.append(float(np.mean(np.abs(fc[i, :len(actual)] - actual))) / scale)
    return float(np.mean(scores)) if scores else float("nan")


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
    gate: GateWindows | None = None,
    gate_panel: Panel | None = None,
) -> Decision:
    """Apply the retrain policy ('auto', 'always', 'never') to the model store.

    Under 'never' no data is needed: pass `train_panel=None` (and the expected `features` to check them;
    the model key already fixes the covariates' names and roles). `versions`: the candidates, newest
    first (default: every complete version under the key); `note` is added to a load's reason.
    A saved model that is corrupt, unsafe or unusable on the data in any way is never loaded:
    'auto' retrains and gives the reason; 'never' raises ArtifactError.

    Given `gate` and `gate_panel` (the newest data, holdout included), the loaded version is scored by
    `gate_score` (the decision's `champion_score`) and, when it recorded the same measure at save time, the
    degradation check compares those two; otherwise its validation loss on `train_panel` against the best
    one training recorded.
    """
    if train_panel is None and policy != "never":
        raise ValueError(f"retrain policy {policy!r} needs the training data")
    expect = None if train_panel is not None else (tuple(features) if features else None)
    store = Location.of(store)
    if policy == "always":
        return Decision(action="train", reason="retrain policy is 'always'")
    if versions is None:
        versions = list_versions(store, model_key)
    if not versions:
        if policy == "never":
            raise ArtifactError(f"retrain policy is 'never' but the model store {store.shown} has no model for "
                                f"this configuration (key {model_key})")
        return Decision(action="train", reason=f"no saved model for this configuration (key {model_key})")
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
        return Decision(action="train", reason="no loadable model: " + "; ".join(problems))
    if policy == "never":
        return _load(f"retrain policy is 'never': loaded newest loadable model {version}{note}", loaded)
    if problems:
        # A newer version exists but is broken: retrain rather than silently serve an older model.
        return Decision(action="train", reason="newest saved model cannot be used: " + problems[0])
    now = now or datetime.now(timezone.utc)
    created = datetime.fromisoformat(loaded.metadata["created_at"])
    age = now - created
    if age > max_age:
        return Decision(action="train", reason=f"model {version} is {_human(age)} old, older than max_model_age {_human(max_age)}")
    recorded_gate = loaded.metadata.get("gate") if isinstance(loaded.metadata.get("gate"), dict) else {}
    like = gate is not None and gate_panel is not None and _same_measure(recorded_gate, gate)
    try:
        champion_score = gate_score(loaded.forecaster, gate_panel, gate) \
            if gate is not None and gate_panel is not None and gate_panel.n_series else None
        if like:  # the measure recorded at save time, on today's newest windows: like with like
            measure, current = "gate MASE", champion_score
            recorded = float(recorded_gate["score"]) if recorded_gate.get("score") is not None else float("nan")
        else:  # a version saved before the gate score was recorded: its validation loss
            measure = f"validation {loss}"
            best = (loaded.metadata.get("training") or {}).get("best_val_loss")
            recorded = float("nan") if best is None else float(best)
            current = validation_loss(loaded.forecaster, train_panel, validation_steps, loss)
    except Exception as exc:  # noqa: BLE001 - a network whose shapes or weights do not fit the data
        if is_storage_failure(exc):
            raise
        log.warning("model %s cannot be used on this data: %s", version, exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Decision(action="train", reason=f"model {version} cannot be used on this data: "
                                               f"{type(exc).__name__}: {first}")
    scored = {} if champion_score is None or not np.isfinite(champion_score) else {"champion_score": champion_score}
    if np.isfinite(recorded) and current is not None and np.isfinite(current) and current > recorded * (1 + tolerance):
        return Decision(action="train", reason=f"model {version} degraded: {measure} on newest data {current:.4f} > "
                                               f"recorded {recorded:.4f} x (1 + {tolerance:g})",
                        champion_version=version, **scored)
    return _load(f"model {version} is current ({_human(age)} old) and its {measure} on the newest data "
                 f"{_num(current)} is within {tolerance:.0%} of recorded {_num(recorded)}", loaded, **scored)


def _same_measure(recorded: dict[str, Any], gate: GateWindows) -> bool:
    """The version recorded its gate score with the measure `gate` takes now (same windows' geometry)."""
    want = gate.as_dict()
    return recorded.get("score") is not None and all(recorded.get(k) == v for k, v in want.items())


def _load(reason: str, loaded: LoadedModel, **fields: Any) -> Decision:
    """A load of `loaded`, naming its version."""
    return Decision(action="load", reason=reason, model_version=loaded.metadata["version"],
                    **fields).with_loaded(loaded)


def _num(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4f}"


# --- choosing by configuration: pins, training settings, and saying what differs --------------------
def decide_for(config: Any, store: Location | str, train_panel: Panel | None, group: str | None = None,
               now: datetime | None = None, *, fingerprint: str | None = None,
               gate_panel: Panel | None = None) -> Decision:
    """The retrain decision for `config` (README "Retrain or load").

    A pinned version (`model_version` / `model_url`) is loaded whatever the policy. Otherwise the champion
    under the model key (its `champion.json`; in a store without one, the newest version trained with the
    same training settings) is checked by `decide`: 'always' trains; 'never' loads it; 'auto' retrains in
    full when it is missing, unusable, older than `max_model_age` or degraded, loads it when the data are
    unchanged since it was trained (`fingerprint` equal to its `data_fingerprint`; None: not compared) and
    otherwise returns `action: warm` holding it (fine-tuned and gated by the caller); 'warm' warm-starts any
    usable champion. A run whose training settings differ from the champion's gets role OWN: it trains (or
    reloads its own newest version for unchanged data) and never changes the champion. Under 'never' with
    nothing to load, the error lists the saved models and the settings that differ from the request.

    `train_panel`: the data the validation-loss check reads (the newest before the holdout); `gate_panel`:
    the newest data, holdout included, the gate scores on.
    """
    from lstm_core.model_store import read_champion

    store = Location.of(store)
    if config.model_url or config.model_version:
        return load_pinned(config, store, train_panel)
    key = config.model_key(group)
    common = dict(window=config.window, validation_steps=config.validation_steps, loss=config.training.loss,
                  max_age=config.max_model_age, tolerance=config.degradation_tolerance,
                  now=now, max_model_bytes=config.max_model_bytes, gate=GateWindows.of(config) if gate_panel
                  is not None else None, gate_panel=gate_panel)
    if config.retrain == "always":
        return decide("always", store, key, train_panel, **common).with_role(CHAMPION)
    versions = list_versions(store, key)
    if not versions:
        if config.retrain == "never":
            raise ArtifactError(no_model_message(config, store, key, group))
        return decide("auto", store, key, train_panel, **common, versions=[]).with_role(CHAMPION)
    wanted = config.training_settings()
    try:
        champion = read_champion(store, key)
    except ArtifactError as exc:  # a pointer that fails its checks is refused like any bad model
        if config.retrain == "never":
            raise
        return Decision(action="train", reason=f"the champion pointer is refused: {exc}").with_role(CHAMPION)
    same, other = [], []
    for version in versions:
        saved = _saved_training_settings(store, key, version)
        (same if saved == wanted else other).append((version, saved))
    if champion is not None:
        saved = _saved_training_settings(store, key, champion)
        if saved is not None and saved != wanted and config.retrain != "never":
            return _own_model(config, store, key, train_panel, champion, saved, wanted,
                              [v for v, _ in same if v != champion], fingerprint, common)
        candidates = [champion]
    elif config.retrain == "never":
        candidates = [v for v, _ in same] + [v for v, _ in other]
    elif not same:
        version, saved = other[0]
        diff = differences(saved or {}, wanted, "training")
        return Decision(action="train", reason=f"saved models under key {key} were trained with other training "
                                               f"settings (newest {version}: {'; '.join(diff) or 'not recorded'})"
                        ).with_role(CHAMPION)
    else:
        candidates = [v for v, _ in same]
    if config.retrain == "never":
        note = ""
        if champion is None and not same:
            diff = differences(other[0][1] or {}, wanted, "training")
            note = f" (trained with other training settings: {'; '.join(diff) or 'not recorded'})"
        return decide("never", store, key, train_panel, **common, versions=candidates, note=note).with_role(OWN)
    policy_note = "the champion is " if champion is not None else ""
    if config.retrain == "warm":  # explicit: fine-tune any usable champion, whatever its age or score
        decided = decide("auto", store, key, train_panel, **{**common, "max_age": timedelta.max,
                                                             "tolerance": float("inf")}, versions=candidates[:1])
    else:
        decided = decide("auto", store, key, train_panel, **common, versions=candidates[:1])
    decided.with_role(CHAMPION)
    if decided.action != "load":
        return decided
    loaded = decided.loaded
    version = loaded.metadata["version"]
    lineage = loaded.metadata.get("lineage") if isinstance(loaded.metadata.get("lineage"), dict) else {}
    if config.retrain == "auto" and (fingerprint is None or fingerprint == loaded.metadata.get("data_fingerprint")):
        if fingerprint is not None:
            decided.reason = f"{decided.reason}; the data are unchanged since it was trained"
        return decided
    if config.refit:  # a refit champion saw every window: the gate could not score it fairly
        return decided
    why = "retrain policy is 'warm'" if config.retrain == "warm" else "the data are newer than it was trained on"
    return Decision(action="warm", reason=f"{decided.reason}; {why}: {policy_note}fine-tuned and gated",
                    champion_version=version, champion_score=decided.champion_score, parent_version=version,
                    warm_starts=int(lineage.get("warm_starts") or 0) + 1).with_loaded(loaded).with_role(CHAMPION)


def _own_model(config: Any, store: Location, key: str, train_panel: Panel | None, champion: str,
               saved: dict[str, Any], wanted: dict[str, Any], same: list[str], fingerprint: str | None,
               common: dict[str, Any]) -> Decision:
    """A run with other training settings than the champion's: its own newest version when the data are
    unchanged since it was trained, else a training of its own; the champion is never changed."""
    diff = "; ".join(differences(saved, wanted, "training")) or "not recorded"
    if same and fingerprint is not None:
        decided = decide("auto", store, key, train_panel, **common, versions=same[:1])
        if decided.action == "load" and decided.loaded.metadata.get("data_fingerprint") == fingerprint:
            decided.reason = (f"training settings differ from the champion {champion}'s ({diff}): {decided.reason}; "
                              f"the data are unchanged since it was trained")
            return decided.with_role(OWN)
    return Decision(action="train", reason=f"training settings differ from the champion {champion}'s ({diff}): "
                                           f"this run trains and serves its own model; the champion is unchanged"
                    ).with_role(OWN)


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
    return _load(f"pinned model_version {version} (key {key})", loaded).with_role(OWN)


def _human(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    return f"{s}s"
