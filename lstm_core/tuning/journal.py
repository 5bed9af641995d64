"""A study's own record: `journal.log` (Optuna's journal format) under the study's folder, so a rerun with the
same name resumes it on any machine that reaches the output URL.
"""
from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from lstm_core.config import ForecastConfig
from lstm_core.tuning.paths import study_fs, study_url, write_root

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def load_trials(config: ForecastConfig, study: str | None = None) -> list[FrozenTrial]:
    """The finished and stopped trials of a saved study (FrozenTrials in number order; [] when none is saved).
    A trial that was still running when its process ended is returned as failed ('interrupted')."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from lstm_core.location import join

    name = study or config.tuning.study
    fs = study_fs(config)
    path = join(study_url(config, name), "journal.log")
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return []
    with tempfile.TemporaryDirectory(prefix="lstm-tune-") as tmp:
        local = os.path.join(tmp, "journal.log")
        with open(local, "wb") as fh:
            fh.write(data)
        storage = JournalStorage(JournalFileBackend(local))
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            t = optuna.trial.create_trial(state=TrialState.FAIL, params=t.params, distributions=t.distributions,
                                          user_attrs={**t.user_attrs, "error": "interrupted: its process ended"},
                                          intermediate_values=t.intermediate_values)
        out.append(t)
    return out


def save_journal(study: optuna.Study, config: ForecastConfig) -> str:
    """Write the study (every trial) as an Optuna journal under the study's folder; returns its URL."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from lstm_core.atomic import put_bytes
    from lstm_core.location import join

    url = join(study_url(config, study.study_name), "journal.log")
    with tempfile.TemporaryDirectory(prefix="lstm-tune-") as tmp:
        local = os.path.join(tmp, "journal.log")
        target = JournalStorage(JournalFileBackend(local))
        copy = optuna.create_study(study_name=study.study_name, storage=target, direction="minimize")
        copy.add_trials(study.get_trials(deepcopy=False))
        with open(local, "rb") as fh:
            data = fh.read()
    put_bytes(study_fs(config), url, data, root=write_root(config))
    return url
