"""What a nightly run reads of tuning: `tuned: latest` applies the newest `best.json` of the study
(`apply_tuned`), and a tuned window the data cannot use is refused (`check_tuned_fits`).

Kept apart from the study (no Optuna, no Keras): the batch flow imports this module only.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import JsonValue

from lstm_core.config import ConfigError, ForecastConfig, merge_settings, redact_url
from lstm_core.panel import Panel
from lstm_core.records import Tuned
from lstm_core.tuning.paths import study_fs, study_url
from lstm_core.tuning.records import BestRecord
from lstm_core.tuning.space import apply_settings, settings_of, tunable


def read_best(config: ForecastConfig) -> BestRecord:
    """The study `tuning.study`'s best.json. Raises ConfigError when there is none yet (naming the study and
    its folder, credentials removed), or when it is not a best.json (naming the file and the field)."""
    from lstm_core.location import join

    url = join(study_url(config), "best.json")
    try:
        data = study_fs(config).cat_file(url)
    except FileNotFoundError:
        raise ConfigError(f"setting 'tuned': 'latest', but tuning study {config.tuning.study!r} has no best settings "
                          f"under {redact_url(study_url(config))} (run lstm-forecast tune --study "
                          f"{config.tuning.study} first)") from None
    return BestRecord.parse(data, f"setting 'tuned': the best settings of study {config.tuning.study!r} "
                                  f"({redact_url(url)})")


def apply_tuned(config: ForecastConfig) -> tuple[ForecastConfig, Tuned | None]:
    """With `tuned: latest`, `config` with the newest best settings of the study `tuning.study` over it, and the
    record of what was applied (the manifest's `tuned`); otherwise `config` and None.

    Only the tuned settings (and the window they were tuned with) are applied: inputs, outputs and the data
    settings stay the run's. Raises ConfigError when the study has no best settings yet, when its best.json
    is unreadable or names a setting that is not tunable, or when a tuned value is not a valid setting.
    """
    if config.tuned == "off":
        return config, None
    from lstm_core.location import join

    best = read_best(config)
    chosen: dict[str, JsonValue] = {}
    for dotted in best.tuned:
        if not tunable(dotted):  # best.json lives in storage: it may change the model, nothing else
            raise ConfigError(f"setting 'tuned': the best settings of study {config.tuning.study!r} name "
                              f"{dotted!r}, which is not a tunable setting; refusing "
                              f"{redact_url(join(study_url(config), 'best.json'))}")
        node: JsonValue = best.settings
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            chosen[dotted] = node
    nested = settings_of({k: v for k, v in chosen.items() if k != "model.units"})
    if "model.units" in chosen:
        nested = merge_settings(nested, {"model": {"units": chosen["model.units"]}})
    try:
        tuned = apply_settings(config, nested)
    except ConfigError as exc:
        raise ConfigError(f"tuned settings of study {config.tuning.study!r} (trial {best.trial}): {exc}") from None
    record = Tuned(study=best.study, trial=best.trial, objective=best.objective, metric=best.metric,
                   written_at=best.written_at,
                   # a URL that carried credentials is recorded without them (the manifest is read by many)
                   best_yaml=redact_url(join(study_url(config), "best.yaml")), settings=chosen)
    return tuned, record


def check_tuned_fits(config: ForecastConfig, panel: Panel) -> None:
    """Refuse (ConfigError naming the setting) a tuned window the data cannot use: one longer than every series
    (shorter series are padded at the front, but some series must fill the window for it to have been tuned
    on these data). Nothing is clipped: the run stops before training."""
    if config.tuned == "off" or panel.n_series == 0 or config.window is None:
        return
    i = int(np.argmax(panel.lengths))
    longest = int(panel.lengths[i])
    if int(config.window) > longest:
        raise ConfigError(
            f"setting 'window': the tuned value {config.window} (tuned: latest, study {config.tuning.study!r}) is "
            f"longer than the longest series ({panel.series_ids[i]!r}, {longest} points); the data cannot use it: "
            f"retune on these data, narrow tuning.space.window, or set tuned: off")
