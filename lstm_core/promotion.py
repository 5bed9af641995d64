"""Training inside a run: a full training or a warm start, the promotion gate, and saving what was made.

`lstm_core.modelling.get_or_train` decides (`lstm_core.retrain.decide_for`) and calls these: `warm_start`
fine-tunes the champion and gates the challenger against it on the same newest backtest windows
(`retrain.gate_score`); `save_trained` writes a version with its decision, gate score and lineage in its
metadata, moves the champion pointer when the decision promotes it, applies retention and holds the
version for the run (`lstm_core.model_store`); `loaded_choice` serves a loaded version.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from lstm_core import artifacts
from lstm_core.config import ForecastConfig, ModelSpec
from lstm_core.engine import Forecaster, fit
from lstm_core.model_store import ModelChoice, ModelStore, release, saved_intervals
from lstm_core.panel import Panel
from lstm_core.progress import Progress
from lstm_core.records import Decision
from lstm_core.retrain import CHAMPION, GateWindows, gate_score

if TYPE_CHECKING:
    from lstm_core.prepared import Prepared

_log = logging.getLogger("lstm_core.modelling")


class TrainingProgress:
    """Feeds the engine's epoch, batch and series hooks to the log and a terminal progress line."""

    def __init__(self, epochs: int, log: Any) -> None:
        self.epochs, self.series, self.log = epochs, "", log
        self.line = Progress()

    def on_epoch(self, epoch: int, logs: dict) -> None:
        """Log one epoch's training and validation loss."""
        self.log.info("epoch %d/%d loss=%.4f val_loss=%.4f", epoch, self.epochs, logs.get("loss", float("nan")),
                      logs.get("val_loss", float("nan")))

    def on_series(self, done: int, total: int, series_id: str) -> None:
        """Note which series (mode per_series) the progress line is on."""
        self.series = f"series {done + 1}/{total} {series_id} "

    def on_batch(self, epoch: int, done: int, per_epoch: int) -> None:
        """Move the terminal progress line by one batch."""
        self.line.update(f"{self.series}epoch {epoch}/{self.epochs}", done, per_epoch, "batches")

    def fit(self, panel: Panel, config: ForecastConfig, init: Forecaster | None = None) -> Forecaster:
        """Train on `panel` (from `init`'s weights for a warm start) with the progress line shown."""
        with self.line:
            return fit(panel, config, on_epoch=self.on_epoch, on_batch=self.on_batch, on_series=self.on_series,
                       init=init)


def train_full(store: ModelStore, spec: ModelSpec, data: Prepared, decision: Decision, trainer: TrainingProgress,
               log: Any, label: str) -> tuple[ModelChoice, Decision]:
    """A full training from fresh weights (before the earliest backtest cutoff; refit on all data too under
    `refit`), saved and (in the champion's role) promoted: the champion it replaces was missing, unusable, too
    old or degraded, or retrain is 'always'. Per series: trained, not saved."""
    config = spec.config
    forecaster = trainer.fit(data.train_panel, config)
    log.info("trained on %s (cuDNN eligible: %s) in %.1f s, best validation loss %.4f",
             forecaster.training["device"], forecaster.training.get("cudnn"), forecaster.training["seconds"],
             forecaster.training["best_val_loss"])
    final = forecaster
    if config.refit:
        log.info("refitting on all data before the final forecast")
        final = trainer.fit(data.panel, config)
    if config.mode == "per_series":
        return ModelChoice(forecaster, final, decision, f"per-series-{data.fingerprint[:12]}", spec.group,
                           first_window=data.first_window), decision
    gate = GateWindows.of(config)
    score = gate_score(forecaster, data.panel, gate) if not config.refit else float("nan")
    decision = decision.model_copy(update={
        "challenger_score": _finite(score), "promoted": decision.role == CHAMPION, "parent_version": None,
        "warm_starts": 0, "training_seconds": round(float(final.training.get("seconds") or 0.0) +
                                                    (0.0 if final is forecaster else float(forecaster.training.get(
                                                        "seconds") or 0.0)), 3)}).with_role(decision.role)
    return save_trained(store, spec, data, decision, forecaster, final, score, gate, log, label), decision


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def loaded_choice(store: ModelStore, spec: ModelSpec, decision: Decision, log, label: str) -> ModelChoice:
    """The choice of a loaded version (the champion adopted as such in a store that had no pointer)."""
    config = spec.config
    loaded = decision.loaded
    version, key = loaded.metadata["version"], loaded.metadata.get("model_key") or spec.key
    # A refit version has seen every backtest window: they are scored by the model kept inside it.
    scorer = store.backtest_model(key, version, config) if config.mode != "per_series" else None
    if scorer is not None:
        log.info("%smodel %s was refit on all data: its backtest is scored by the model kept inside it, "
                 "trained before its earliest cutoff", label, version)
    if decision.role == CHAMPION and not (config.model_url or config.model_version) and store.champion(key) is None:
        store.promote(key, version, f"adopted (a store saved before champions were recorded): {decision.reason}")
    if not config.model_url:
        _hold(store, key, version)
    return ModelChoice(scorer or loaded.forecaster, loaded.forecaster, decision, version, spec.group,
                       intervals=saved_intervals(loaded, config, log), model_key=key)


def warm_start(store: ModelStore, spec: ModelSpec, data: Prepared, decision: Decision, trainer: TrainingProgress,
               log, label: str) -> tuple[ModelChoice, Decision]:
    """Fine-tune the champion on the newest training data, score both on the same newest backtest windows,
    and promote the challenger only when it does no worse (`promotion_tolerance`); else the champion serves."""
    config = spec.config
    champion = decision.loaded
    challenger = trainer.fit(data.train_panel, config, init=champion.forecaster)
    gate = GateWindows.of(config)
    champ = decision.champion_score if decision.champion_score is not None else \
        gate_score(champion.forecaster, data.panel, gate)
    chall = gate_score(challenger, data.panel, gate)
    tol = config.promotion_tolerance
    promoted = bool(np.isfinite(chall) and (not np.isfinite(champ) or chall <= champ * (1 + tol)))
    verdict = (f"challenger gate MASE {chall:.4f} {'<=' if promoted else '>'} champion {champ:.4f} x (1 + {tol:g}): "
               + ("promoted" if promoted else "rejected, the champion serves"))
    log.info("%swarm start from %s in %.1f s: %s", label, decision.parent_version,
             challenger.training.get("seconds", 0.0), verdict)
    fields = {"reason": f"{decision.reason}; {verdict}", "champion_score": _finite(champ),
              "challenger_score": _finite(chall), "promoted": promoted,
              "training_seconds": round(float(challenger.training.get("seconds") or 0.0), 3)}
    if not promoted:
        kept = decision.model_copy(update={**fields, "model_version": decision.champion_version})
        kept.with_loaded(champion).with_role(decision.role)
        return loaded_choice(store, spec, kept, log, label), kept
    made = decision.model_copy(update=fields).with_role(decision.role)
    return save_trained(store, spec, data, made, challenger, challenger, chall, gate, log, label), made


def save_trained(store: ModelStore, spec: ModelSpec, data: Prepared, decision: Decision, forecaster: Forecaster,
          final: Forecaster, score: float, gate: GateWindows, log, label: str) -> ModelChoice:
    """Save a model trained in this run (its decision, gate score and lineage in its metadata), make it the
    champion when its decision promotes it, apply retention, and hold it for the run."""
    config = spec.config
    version = artifacts.new_version()  # fixed across retries: a retry rewrites the same objects
    extra = {"decision": decision.as_dict(),
             "lineage": {"parent_version": decision.parent_version, "warm_starts": int(decision.warm_starts or 0)},
             **({"gate": {**gate.as_dict(), "score": float(score)}} if np.isfinite(score) else {})}
    store.save(final, spec, data.fingerprint, version, backtest=forecaster if final is not forecaster else None,
               extra=extra)
    log.info("%ssaved model %s/%s/%s", label, "models", spec.key, version)
    _hold(store, spec.key, version)
    if decision.promoted:
        store.promote(spec.key, version, decision.reason)
        log.info("%smodel %s is the champion under key %s", label, version, spec.key)
    store.prune(spec.key, config.keep_versions, log=log)
    return ModelChoice(forecaster, final, decision, version, spec.group, first_window=data.first_window,
                       model_key=spec.key)


# The read-marker this process keeps per (store, key): a process serves one version per key at a time, so a
# newer choice releases the older marker (a run in another process keeps its own until it ends or expires).
_HELD: dict[tuple[str, str], str] = {}


def _hold(store: ModelStore, key: str, version: str) -> None:
    previous = _HELD.pop((store.url, key), None)
    marker = store.hold(key, version)
    if marker is not None:
        _HELD[(store.url, key)] = marker
    if previous is not None and previous != marker:
        release(store.location, previous)
