"""Hyperparameter tuning: an Optuna study over the network and training settings, judged by backtests.

A trial draws settings from the search space (`default_space`, narrowed or widened by `tuning.space`),
trains on a stable sample of at most `tuning.max_series` series and scores a rolling-origin backtest
(`lstm_core.backtest`): the objective is the pooled backtest MASE (mean over every series and window).
The final window (the last `horizon` points: a run's holdout, a benchmark's test) never enters tuning:
the study sees `panel.drop_last(horizon)` only.

The package, by concern (each module says more):

- `space`: the tunable settings, `default_space`, `search_space`, flat values <-> nested settings;
- `trial`: one configuration trained and scored (`evaluate_trial`), the pruning callback, the tuning panel;
- `study`: the Optuna loop (`tune`), in process or one trial per Dask worker, within its budget;
- `journal`: the study's own record (`journal.log`), so a rerun resumes it;
- `results`: what is written under `<output_url>/tuning/study=<name>/`: `trials.parquet`, `best.yaml` (the
  tuned and data settings, which `run --config` reads as a tuning result: nothing else is accepted from a file
  of that name), `best.json` (what `tuned: latest` applies, and where it came from), `objective.png`; and the
  tune summary;
- `records`: the typed records (`BestRecord` for best.json, `TuneSummary`) and value types;
- `apply`: what a nightly run reads (`apply_tuned`, `check_tuned_fits`): it imports neither Optuna nor Keras.

`from lstm_core.tuning import tune` (or any name below) imports only the module that defines it, so the
nightly run's `from lstm_core.tuning import apply_tuned` never loads the study code.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module of this package that defines it (imported on first use)
_WHERE = {
    **dict.fromkeys(("BEST_METRIC", "BestRecord", "BestTrial", "Params", "RangeSpec", "Scalar", "Settings",
                     "TuneSummary"), "records"),
    **dict.fromkeys(("LAYERS", "NOT_TUNABLE", "TUNABLE_SECTIONS", "TUNABLE_TOP", "Dimension", "apply_settings",
                     "baseline_params", "default_space", "narrow_to_data", "require_resolved", "search_space",
                     "settings_of", "tunable"), "space"),
    **dict.fromkeys(("STUDY_FILES", "study_fs", "study_url"), "paths"),
    **dict.fromkeys(("apply_tuned", "check_tuned_fits", "read_best"), "apply"),
    **dict.fromkeys(("TUNING_KEY", "PruneOnValidationLoss", "TrialOutcome", "error_scale", "evaluate_trial",
                     "min_history", "tuning_panel"), "trial"),
    **dict.fromkeys(("load_trials", "save_journal"), "journal"),
    **dict.fromkeys(("DATA_SETTINGS", "TRIAL_COLUMNS", "TuneResult", "best_settings", "objective_plot", "summarize",
                     "trials_frame", "tuned_keys", "write_results"), "results"),
    **dict.fromkeys(("PRUNE_STARTUP_TRIALS", "PRUNE_WARMUP_EPOCHS", "TrialHook", "make_pruner", "make_study", "tune"),
                    "study"),
}
__all__ = [
    "BEST_METRIC",
    "DATA_SETTINGS",
    "LAYERS",
    "NOT_TUNABLE",
    "PRUNE_STARTUP_TRIALS",
    "PRUNE_WARMUP_EPOCHS",
    "STUDY_FILES",
    "TRIAL_COLUMNS",
    "TUNABLE_SECTIONS",
    "TUNABLE_TOP",
    "TUNING_KEY",
    "BestRecord",
    "BestTrial",
    "Dimension",
    "Params",
    "PruneOnValidationLoss",
    "RangeSpec",
    "Scalar",
    "Settings",
    "TrialHook",
    "TrialOutcome",
    "TuneResult",
    "TuneSummary",
    "apply_settings",
    "apply_tuned",
    "baseline_params",
    "best_settings",
    "check_tuned_fits",
    "default_space",
    "error_scale",
    "evaluate_trial",
    "load_trials",
    "make_pruner",
    "make_study",
    "min_history",
    "narrow_to_data",
    "objective_plot",
    "read_best",
    "require_resolved",
    "save_journal",
    "search_space",
    "settings_of",
    "study_fs",
    "study_url",
    "summarize",
    "trials_frame",
    "tunable",
    "tune",
    "tuned_keys",
    "tuning_panel",
    "write_results",
]


def __getattr__(name: str) -> Any:
    """`lstm_core.tuning.<name>`: the name from the module that defines it, imported now (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The names this package gives (its modules' public names)."""
    return sorted({*globals(), *_WHERE})


if TYPE_CHECKING:  # the same names for type checkers
    from lstm_core.tuning.apply import apply_tuned, check_tuned_fits, read_best
    from lstm_core.tuning.journal import load_trials, save_journal
    from lstm_core.tuning.paths import STUDY_FILES, study_fs, study_url
    from lstm_core.tuning.records import (
        BEST_METRIC,
        BestRecord,
        BestTrial,
        Params,
        RangeSpec,
        Scalar,
        Settings,
        TuneSummary,
    )
    from lstm_core.tuning.results import (
        DATA_SETTINGS,
        TRIAL_COLUMNS,
        TuneResult,
        best_settings,
        objective_plot,
        summarize,
        trials_frame,
        tuned_keys,
        write_results,
    )
    from lstm_core.tuning.space import (
        LAYERS,
        NOT_TUNABLE,
        TUNABLE_SECTIONS,
        TUNABLE_TOP,
        Dimension,
        apply_settings,
        baseline_params,
        default_space,
        narrow_to_data,
        require_resolved,
        search_space,
        settings_of,
        tunable,
    )
    from lstm_core.tuning.study import (
        PRUNE_STARTUP_TRIALS,
        PRUNE_WARMUP_EPOCHS,
        TrialHook,
        make_pruner,
        make_study,
        tune,
    )
    from lstm_core.tuning.trial import (
        TUNING_KEY,
        PruneOnValidationLoss,
        TrialOutcome,
        error_scale,
        evaluate_trial,
        min_history,
        tuning_panel,
    )
