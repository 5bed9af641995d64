"""Retrain or load: the decision, with a reason a person can read."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from lstm_core.artifacts import LoadedModel, list_versions, load
from lstm_core.engine import Forecaster
from lstm_core.errors import ArtifactError
from lstm_core.panel import Panel
from lstm_core.secrets import scrub
from lstm_core.training import model_inputs
from lstm_core.windows import tail_windows

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
    space = forecaster.model_space(panel)
    val = tail_windows(space.panel, forecaster.window, steps, forecaster.chunk, known=forecaster.known)
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
    store_url: str,
    model_key: str,
    train_panel: Panel | None,
    *,
    window: int,
    validation_steps: int,
    loss: str,
    max_age: timedelta,
    tolerance: float,
    storage_options: dict | None = None,
    now: datetime | None = None,
    features: tuple[str, ...] | None = None,
) -> Decision:
    """Apply the retrain policy ('auto', 'always', 'never') to the model store.

    Under 'never' no data is needed: pass `train_panel=None` and the expected `features`.
    """
    if train_panel is None and policy != "never":
        raise ValueError(f"retrain policy {policy!r} needs the training data")
    expect = tuple(train_panel.feature_names) if train_panel is not None else tuple(features or ("y",))
    if policy == "always":
        return Decision("train", "retrain policy is 'always'")
    versions = list_versions(store_url, model_key, storage_options)
    if not versions:
        if policy == "never":
            raise ArtifactError(f"retrain policy is 'never' but the model store {scrub(store_url)} has no model for "
                                f"this configuration (key {model_key})")
        return Decision("train", f"no saved model for this configuration (key {model_key})")
    problems = []
    for version in versions:  # newest first; fall back past corrupt or incompatible ones
        try:
            loaded = load(store_url, model_key, version, storage_options,
                          expect_features=expect, expect_window=window)
            break
        except ArtifactError as exc:
            problems.append(str(exc))
            log.warning("skipping model %s: %s", version, exc)
    else:
        if policy == "never":
            raise ArtifactError("retrain policy is 'never' but no saved model can be loaded: " + "; ".join(problems))
        return Decision("train", "no loadable model: " + "; ".join(problems))
    if policy == "never":
        return Decision("load", f"retrain policy is 'never': loaded newest loadable model {version}", loaded)
    if problems:
        # A newer version exists but is broken: retrain rather than silently serve an older model.
        return Decision("train", "newest saved model cannot be used: " + problems[0])
    now = now or datetime.now(timezone.utc)
    created = datetime.fromisoformat(loaded.metadata["created_at"])
    age = now - created
    if age > max_age:
        return Decision("train", f"model {version} is {_human(age)} old, older than max_model_age {_human(max_age)}")
    recorded = float(loaded.metadata.get("training", {}).get("best_val_loss", float("nan")))
    current = validation_loss(loaded.forecaster, train_panel, validation_steps, loss)
    if np.isfinite(recorded) and np.isfinite(current) and current > recorded * (1 + tolerance):
        return Decision("train", f"model {version} degraded: validation {loss} on newest data {current:.4f} > "
                                 f"recorded {recorded:.4f} x (1 + {tolerance:g})")
    return Decision("load", f"model {version} is current ({_human(age)} old) and its validation {loss} on the "
                            f"newest data {current:.4f} is within {tolerance:.0%} of recorded {recorded:.4f}", loaded)


def _human(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    return f"{s}s"
