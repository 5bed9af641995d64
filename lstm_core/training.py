"""Training wiring beside the model: sampled windows, Adam, early stopping, checkpoint, time budget."""
from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import keras
import numpy as np
from pydantic import JsonValue

from lstm_core import interrupt
from lstm_core.config import TrainingConfig
from lstm_core.model import cudnn_eligible, forward_flops
from lstm_core.panel import Panel
from lstm_core.windows import WindowPlan, Windows, sample_windows, tail_windows, validation_span, windows_per_series

log = logging.getLogger("lstm_core.training")

EpochHook = Callable[[int, dict[str, float]], None]
BatchHook = Callable[[int, int, int], None]  # (epoch, batches done, batches per epoch), 1-based


@dataclass
class TrainingResult:
    """What a training gives back: the loss history, the best epoch and the snapshot weights."""
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    best_val_loss: float
    epochs_run: int
    stopped_by: str  # early_stopping | time_budget | max_epochs
    seconds: float
    device: str
    cudnn: bool
    samples_per_epoch: int
    samples_per_second: float = 0.0  # training samples through forward + backward per wall-clock second
    gflops: float = 0.0  # effective GFLOP/s of those passes (3 x the forward matrix products)
    extra: dict[str, JsonValue] = field(default_factory=dict)  # further JSON fields of the summary (none yet)
    snapshots: list[tuple[int, float, list]] = field(default_factory=list, repr=False)  # (epoch, val_loss, weights)

    def summary(self) -> dict[str, Any]:
        """The result as plain values for the metadata and manifest (snapshot weights left out)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("history", "snapshots")}
        return out | {"history": self.history, "snapshot_epochs": [e for e, _, _ in self.snapshots]}


class DeviceInfo(TypedDict):
    """The accelerator training runs on, as `device_info` finds it."""

    device: str  # `CPU` or `GPU (<names>)`, as the training summary records it
    gpus: list[str]  # the GPUs' names; [] on CPU


def device_info() -> DeviceInfo:
    """The accelerator training will use: GPU name(s), or CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"device": "CPU", "gpus": []}
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except Exception:  # noqa: BLE001 - details are best effort (TF raises several kinds); the device is what matters
            names.append(g.name)
    return {"device": f"GPU ({', '.join(names)})", "gpus": names}


class WindowBatches(keras.utils.PyDataset):
    """A fresh bounded random sample of windows per series for each pass over the batches.

    Batches are `(x, y)` or `((x, future), y)` when the model takes known-ahead covariates:
    x (batch, window, F), future (batch, chunk, K), y (batch, chunk).

    The sample is redrawn when a new pass asks for batch 0, not in `on_epoch_end`: Keras starts
    the next epoch's prefetching iterator before it calls `on_epoch_end`, so redrawing there
    races with the prefetch thread, and training would depend on timing (machine load, threads).
    """

    def __init__(self, panel: Panel, window: int, per_series: int, holdout: int | np.ndarray, batch_size: int,
                 seed: int, chunk: int = 1, known: tuple[int, ...] = (),
                 first_target: np.ndarray | None = None) -> None:
        super().__init__()
        self.panel, self.window, self.per_series, self.holdout = panel, window, per_series, holdout
        self.first_target = first_target
        self.batch_size, self.chunk, self.known = batch_size, chunk, known
        self.rng = np.random.default_rng(seed)
        self.values = panel.values.astype(np.float32)
        self.passes = 0
        self._resample()

    def _resample(self) -> None:
        w = sample_windows(self.panel, self.window, self.per_series, self.rng, self.holdout, values=self.values,
                           chunk=self.chunk, known=self.known, first_target=self.first_target)
        order = self.rng.permutation(len(w.y))
        self.x, self.y = w.x[order], w.y[order]
        self.future = None if w.future is None else w.future[order]

    def __len__(self) -> int:
        return max(1, math.ceil(len(self.y) / self.batch_size))

    def __getitem__(self, i: int):
        if i == 0:
            if self.passes:
                self._resample()
            self.passes += 1
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        x = self.x[s] if self.future is None else (self.x[s], self.future[s])
        return x, self.y[s]


def model_inputs(w: Windows):
    """What a model built by `build_lstm` takes for these windows."""
    return w.x if w.future is None else [w.x, w.future]


class BestSnapshots(keras.callbacks.Callback):
    """Keep the weights of the `k` epochs with the lowest validation loss (a free ensemble)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.kept: list[tuple[int, float, list[np.ndarray]]] = []  # (epoch, validation loss, weights), best first

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Keras hook: called after each epoch."""
        loss = float((logs or {}).get("val_loss", np.nan))
        if not np.isfinite(loss):
            return
        if len(self.kept) < self.k or loss < self.kept[-1][1]:
            self.kept.append((epoch + 1, loss, self.model.get_weights()))
            self.kept.sort(key=lambda item: item[1])
            del self.kept[self.k:]


class TimeBudget(keras.callbacks.Callback):
    """Stop training once a wall-clock budget is spent; the best weights are kept by the caller."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.seconds, self.triggered, self.start = seconds, False, 0.0

    def on_train_begin(self, logs=None) -> None:
        """Keras hook: called when training starts."""
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None) -> None:
        """Keras hook: called after each training batch."""
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            self.triggered = True
            self.model.stop_training = True


class StopOnRequest(keras.callbacks.Callback):
    """Raise RunInterrupted at the first batch (training or validation) after a stop was requested (Ctrl-C,
    SIGTERM: lstm_core.interrupt), so a run stops within a batch instead of training on to its last epoch."""

    def on_train_batch_end(self, batch, logs=None) -> None:
        """Keras hook: called after each training batch."""
        interrupt.check()

    def on_test_batch_end(self, batch, logs=None) -> None:
        """Keras hook: called after each validation batch."""
        interrupt.check()


class Pace(keras.callbacks.Callback):
    """Training samples and the seconds spent on training batches (validation and callbacks left out)."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size, self.samples, self.seconds, self._t = batch_size, 0, 0.0, 0.0

    def on_train_batch_begin(self, batch, logs=None) -> None:
        """Keras hook: called before each training batch."""
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        """Keras hook: called after each training batch."""
        self.seconds += time.perf_counter() - self._t
        self.samples += self.batch_size


class EpochLog(keras.callbacks.Callback):
    """Passes each epoch's losses and each batch to the caller's hooks."""
    def __init__(self, epochs: int, hook: EpochHook | None, batch_hook: BatchHook | None = None) -> None:
        super().__init__()
        self.epochs, self.hook, self.batch_hook, self.t0 = epochs, hook, batch_hook, 0.0
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        """Keras hook: called before each epoch."""
        self.t0 = time.monotonic()
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None) -> None:
        """Keras hook: called after each training batch."""
        if self.batch_hook:
            self.batch_hook(self.epoch, batch + 1, int(self.params.get("steps") or 0))

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Keras hook: called after each epoch."""
        logs = {k: float(v) for k, v in (logs or {}).items()}
        log.info("epoch %d/%d loss=%.4f val_loss=%.4f (%.1f s)", epoch + 1, self.epochs, logs.get("loss", float("nan")),
                 logs.get("val_loss", float("nan")), time.monotonic() - self.t0)
        if self.hook:
            self.hook(epoch + 1, logs)


def make_loss(name: str):
    """The Keras loss named by the `training.loss` setting (mse, mae or huber)."""
    return {"mse": "mse", "mae": "mae", "huber": keras.losses.Huber()}[name]


def train(
    model: keras.Model,
    panel: Panel,
    *,
    window: int,
    config: TrainingConfig,
    validation_steps: int,
    seed: int,
    chunk: int = 1,
    known: tuple[int, ...] = (),
    checkpoint_dir: str | Path | None = None,
    time_budget_s: float | None = None,
    on_epoch: EpochHook | None = None,
    on_batch: BatchHook | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    plan: WindowPlan | None = None,
) -> TrainingResult:
    """Fit `model` on scaled windows of `panel`; validation = whole chunks covering the last `validation_steps`
    points of each series, whose targets training never uses.

    `plan` (`windows.plan_windows`, for `panel` already padded by its `pad`): per series, the first training
    target and whether its last points are held out for validation (series too short to spare them only
    train). When no series can spare them, early stopping watches the last chunk of each series' training
    targets instead (a tiny panel; said in the log).

    `chunk`: target values per sample (the model's output size); `known`: feature columns whose values over
    the targets are a second model input. `callbacks`: further Keras callbacks, called after the project's
    own each epoch (tuning prunes a trial from one by raising). Raises ValueError when the series leave no
    training or no validation windows.
    """
    info = device_info()
    cudnn = cudnn_eligible(model)
    log.info("training on %s; cuDNN LSTM kernel %s", info["device"],
             "on" if cudnn and info["gpus"] else ("eligible (no GPU)" if cudnn else "off: layer settings not eligible"))
    span = validation_span(validation_steps, chunk)
    holdout: int | np.ndarray = span
    first_target = None
    if plan is None:
        val = tail_windows(panel, window, validation_steps, chunk, known=known)
    else:
        holdout, first_target = plan.holdout, plan.first_target
        val = tail_windows(panel, window, validation_steps, chunk, known=known, series=plan.holdout > 0)
        if len(val.y) == 0:  # no series can spare validation points: watch the last training chunk
            log.info("no series is long enough to hold validation points out: early stopping watches the last "
                     "chunk of each series' training targets")
            val = tail_windows(panel, window, chunk, chunk, known=known)
    if len(val.y) == 0:
        raise ValueError("no validation windows: series are too short for window + validation steps")
    per_series = windows_per_series(panel, window, holdout, chunk, config.windows_per_series,
                                    config.min_windows_per_epoch, first_target)
    batches = WindowBatches(panel, window, per_series, holdout, config.batch_size, seed, chunk, known, first_target)
    if len(batches.y) == 0:
        raise ValueError("no training windows: series are too short for window + chunk + validation steps")

    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=make_loss(config.loss), jit_compile=False)
    budget = TimeBudget(time_budget_s if time_budget_s is not None else
                        (config.max_train_minutes * 60 if config.max_train_minutes else None))
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    tmp = None
    if checkpoint_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lstm-ckpt-")
        checkpoint_dir = tmp.name
    ckpt = Path(checkpoint_dir) / "best.weights.h5"
    checkpoint = keras.callbacks.ModelCheckpoint(str(ckpt), monitor="val_loss", save_best_only=True,
                                                 save_weights_only=True)
    snapshots = BestSnapshots(config.snapshots)
    pace = Pace(config.batch_size)
    t0 = time.monotonic()
    try:
        hist = model.fit(batches, validation_data=(model_inputs(val), val.y), epochs=config.epochs, verbose=0,
                         validation_batch_size=max(config.batch_size, 1024),
                         callbacks=[StopOnRequest(), early, checkpoint, budget, snapshots, pace,
                                    EpochLog(config.epochs, on_epoch, on_batch), *callbacks], shuffle=False)
        if ckpt.exists():
            model.load_weights(str(ckpt))  # best epoch, whatever stopped training
    finally:
        if tmp is not None:
            tmp.cleanup()
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    val_loss = history.get("val_loss", [float("nan")])
    best = int(np.nanargmin(val_loss)) if val_loss else 0
    stopped = "time_budget" if budget.triggered else ("early_stopping" if early.stopped_epoch > 0 else "max_epochs")
    seconds = time.monotonic() - t0
    rate = pace.samples / pace.seconds if pace.seconds > 0 else 0.0
    result = TrainingResult(history, best + 1, float(val_loss[best]), len(val_loss), stopped, seconds,
                            info["device"], cudnn, len(batches.y), round(rate, 1),
                            round(rate * 3 * forward_flops(model) / 1e9, 2), snapshots=snapshots.kept)
    log.info("trained %d epochs in %.1f s (stopped by %s); best epoch %d val_loss=%.4f; %.0f samples/s, "
             "%.1f GFLOP/s", result.epochs_run, result.seconds, stopped, result.best_epoch, result.best_val_loss,
             result.samples_per_second, result.gflops)
    return result
