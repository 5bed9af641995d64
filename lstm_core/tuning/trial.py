"""One trial: a configuration trained and scored by the pooled backtest MASE, with its epochs reported to the
study's pruner; and the data every trial is scored on (`tuning_panel`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import keras
import numpy as np

from lstm_core.config import ConfigError, ForecastConfig
from lstm_core.panel import Panel
from lstm_core.tuning.records import Scalar
from lstm_core.tuning.space import apply_settings, settings_of

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

TUNING_KEY = "lstm-fc-tune-key"  # 16 bytes: the hash key of the tuning sample (its own, not the shards')
TrialState = Literal["complete", "pruned", "fail"]


def tuning_panel(panel: Panel, config: ForecastConfig) -> Panel:
    """The series a study tunes on: at most `tuning.max_series` of them (a stable hash sample, the same in every
    process and run), without their final window (the last `horizon` points)."""
    from lstm_core.shard_plan import stable_hash

    limit = config.tuning.max_series
    if limit is not None and panel.n_series > limit:
        order = np.argsort(stable_hash(panel.series_ids, TUNING_KEY), kind="stable")
        mask = np.zeros(panel.n_series, dtype=bool)
        mask[order[:limit]] = True
        panel = panel.select(mask)
    return panel.drop_last(config.horizon)


# --- pruning ------------------------------------------------------------------------------------------------
def error_scale(loss: str, value: float) -> float:
    """A validation loss as one typical error in model-space units, so trials with different losses compare:
    MAE as it is, MSE as its root, Huber (delta 1) as the absolute error that gives it."""
    if not np.isfinite(value):
        return float(value)
    if loss == "mse":
        return math.sqrt(max(value, 0.0))
    if loss == "huber":
        return math.sqrt(2 * value) if value <= 0.5 else value + 0.5
    return float(value)


class PruneOnValidationLoss(keras.callbacks.Callback):
    """Reports each epoch's validation loss (as `error_scale`) to an Optuna trial and prunes it when the
    pruner says so, by raising `optuna.TrialPruned` out of training. Epochs count on across the members of
    an ensemble, so step k is the k-th epoch the trial trained."""

    def __init__(self, trial: BaseTrial, loss: str) -> None:
        super().__init__()
        self.trial, self.loss, self.step = trial, loss, 0
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        """Report the epoch's validation loss; raise `optuna.TrialPruned` when the pruner says so."""
        import optuna

        value = (logs or {}).get("val_loss")
        if value is None:
            return
        self.step += 1
        self.trial.report(error_scale(self.loss, float(value)), step=self.step)
        if self.trial.should_prune():
            self.pruned_at = self.step
            raise optuna.TrialPruned(f"pruned at epoch {self.step}: validation error "
                                     f"{error_scale(self.loss, float(value)):.4f} worse than the median trial's")


# --- one trial ----------------------------------------------------------------------------------------------
@dataclass
class TrialOutcome:
    """How a trial ended: its state, its objective (complete trials only), wall seconds, and the user
    attributes the study records with it (`seasonal_naive_mase`, `stopped_by`, `pruned`, `error`, ...)."""

    state: TrialState
    value: float | None
    seconds: float
    attrs: dict[str, Scalar] = field(default_factory=dict)


def min_history(config: ForecastConfig) -> int:
    """Points a series needs before a backtest cutoff to be scored, the same in every trial (so every trial is
    judged on the same series and windows, whatever its window): the configuration's own minimum."""
    from lstm_core.validation import min_train_length

    return max(1, min_train_length(config))


def evaluate_trial(trial: BaseTrial, params: Mapping[str, Scalar], panel: Panel, config: ForecastConfig, *,
                   deadline: float | None = None, pruning: bool = True, history: int | None = None) -> TrialOutcome:
    """Train with `params` over `config` and score the pooled backtest MASE on `panel` (already the tuning panel).

    `trial` receives the epoch validation losses (pruning); `deadline` (time.time() seconds) stops training
    early so a call ends within its budget. Never raises for a bad trial: pruned and failed trials come back
    as such, with the reason in `attrs`.
    """
    import optuna

    from lstm_core.backtest import backtest
    from lstm_core.engine import fit

    t0 = time.monotonic()
    attrs: dict[str, Scalar] = {}
    try:
        cfg = apply_settings(config, settings_of(params, config))
    except ConfigError as exc:
        return TrialOutcome("fail", None, time.monotonic() - t0, {"error": str(exc)})
    pruner = PruneOnValidationLoss(trial, cfg.training.loss) if pruning else None
    budget = None if deadline is None else max(1.0, deadline - time.time())
    stopped: list[str] = []

    def fit_fn(history_panel: Panel) -> Any:
        model = fit(history_panel, cfg, time_budget_s=budget, callbacks=[pruner] if pruner else ())
        stopped.extend(m.get("stopped_by", "") for m in model.training.get("members", []))
        return model.forecast

    try:
        bt = backtest(panel, horizon=cfg.horizon, season_length=cast(int, cfg.season_length),
                      windows=cfg.backtest.windows, step=cfg.backtest_step, fit_fn=fit_fn, refit=False,
                      min_history=history if history is not None else min_history(config), levels=())
        pooled = bt.sums("lstm").totals(()).finalize()
        mase = pooled[pooled["metric"] == "mase"].set_index("model")["value"]
        value = float(mase.get("lstm", np.nan))
        attrs.update({"seasonal_naive_mase": float(mase.get("seasonal_naive", np.nan)),
                      "windows_scored": int(bt.frame.groupby(["series_id", "cutoff"]).ngroups),
                      "stopped_by": ",".join(sorted(set(stopped)))})
    except optuna.TrialPruned as exc:
        attrs["pruned"] = str(exc)
        return TrialOutcome("pruned", None, time.monotonic() - t0, attrs)
    except Exception as exc:  # noqa: BLE001 - a trial that breaks (bad settings, a TensorFlow error) fails alone
        attrs["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return TrialOutcome("fail", None, time.monotonic() - t0, attrs)
    if not np.isfinite(value):
        attrs["error"] = "the backtest MASE is not finite (diverged training or no series scored)"
        return TrialOutcome("fail", None, time.monotonic() - t0, attrs)
    if deadline is not None and "time_budget" in stopped:
        # The tune's deadline cut this training short: its score is of a model the run would train further,
        # so ranking it beside fully trained trials would misjudge it (the backtest must be a fair judge).
        attrs["pruned"] = (f"the tune's time budget ran out before training finished (backtest MASE {value:.4f} of "
                           "a model cut short is not comparable)")
        return TrialOutcome("pruned", None, time.monotonic() - t0, attrs)
    return TrialOutcome("complete", value, time.monotonic() - t0, attrs)
