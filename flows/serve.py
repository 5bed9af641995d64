"""`lstm-forecast serve`: the batch-forecast flow served from this process as two deployments, `scheduled`
(by its cron schedule) and `manual` (on demand), one run at a time, until Ctrl-C or SIGTERM.

The flags become the deployments' parameters, checked here first (`serve_parameters`): no secret may be one,
since the Prefect server stores them.
"""
from __future__ import annotations

import importlib.metadata
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flows.console import quiet_console_tracebacks, quiet_native_startup

SERVE_TAGS = ["lstm-forecast", "batch-forecast"]


def serve_parameters(config_path: str | None, flags: dict[str, Any], sets: list[str],
                     allow_overrides: list[str]) -> dict[str, Any]:
    """The deployments' parameters: the config file's absolute path and the flags, checked now.

    `flags`: the settings the flags gave (nested, as `flows.cli.settings_from_args` makes them); `sets`: the
    `--set KEY=VALUE` items; `allow_overrides`: the `--allow-override` names. Returns `config_path`,
    `settings` and `allow_overrides`, the parameters both deployments get. Raises ConfigError for a setting
    that may not be served (`run_id`, a credential, a URL carrying credentials, an unknown override).
    """
    from lstm_core.config import ConfigError, load_config, merge_settings, parse_sets

    config_path = str(Path(config_path).resolve()) if config_path else None
    settings = merge_settings(flags, parse_sets(sets))
    config = load_config(config_path, overrides=settings)
    if config.run_id:
        raise ConfigError("setting 'run_id': not allowed when serving: scheduled runs derive theirs from the "
                          "slot, manual ones get a fresh one unless the run passes settings={\"run_id\": ...}")
    from pydantic import ValidationError

    from flows.parameters import PROTECTED, RunSettings
    from lstm_core.config import format_validation_error
    from lstm_core.secrets import has_credentials

    # The deployments' parameters are stored by the Prefect server: no secret may be one.
    try:
        RunSettings.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc).replace("invalid configuration", "invalid parameter")) from None
    for name in config.url_settings():
        if has_credentials(settings.get(name)):
            raise ConfigError(f"setting {name!r}: its URL carries credentials, and deployment parameters are "
                              f"stored by the Prefect server: put the URL in the config file or the environment")
    unknown = [name for name in allow_overrides if name not in PROTECTED]
    if unknown:
        raise ConfigError(f"--allow-override {unknown[0]!r}: not a protected setting (one of {', '.join(PROTECTED)}); "
                          f"other settings may be changed by any run")
    return {"config_path": config_path, "settings": settings, "allow_overrides": list(allow_overrides)}


def build_deployments(cron: str, timezone: str, parameters: dict[str, Any]) -> tuple[Any, Any]:
    """`batch-forecast/scheduled` (cron) and `batch-forecast/manual` (no schedule), one run at a time each.

    Raises ConfigError for a time zone that is not an IANA one or a cron expression Prefect refuses.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron
    from pydantic import ValidationError

    from lstm_core.config import ConfigError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone {timezone!r}: not an IANA time zone (e.g. UTC, Europe/Paris)") from None
    try:
        schedule = Cron(cron, timezone=timezone)
    except (ValidationError, ValueError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"--cron {cron!r}: {detail}") from None
    # ENQUEUE: a run that arrives while another of the same deployment is running waits for it, so a
    # slow night or a re-run slot delays the next run instead of dropping it or writing beside it.
    limit = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    version = importlib.metadata.version("lstm-forecast")
    with quiet_native_startup():  # imports TensorFlow: after the cheap checks
        from flows.batch_forecast import batch_forecast

    common: dict[str, Any] = {"parameters": parameters, "version": version, "concurrency_limit": limit}
    scheduled = batch_forecast.to_deployment(
        "scheduled", schedules=[schedule], tags=[*SERVE_TAGS, "scheduled"],
        description=f"Nightly batch forecast on cron {cron!r} ({timezone}); each slot writes run "
                    "sched-<UTC slot>-<config hash>, so a re-run slot replaces its own outputs.", **common)
    manual = batch_forecast.to_deployment(
        "manual", tags=[*SERVE_TAGS, "manual"],
        description="Batch forecast on demand. Pass only what changes: settings are merged over these defaults; "
                    "settings.run_id names (or replaces) a run.", **common)
    return scheduled, manual


def next_run(cron: str, timezone: str, after: datetime | None = None) -> str:
    """The next time the cron schedule fires after `after` (default now), ISO 8601 in its time zone,
    as the Prefect server schedules it (daylight-saving switches included)."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    start = (after or datetime.now(ZoneInfo(timezone))) + timedelta(seconds=1)  # strictly after
    dates = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=1, start=start))
    return dates[0].astimezone(ZoneInfo(timezone)).isoformat()


def serve(parameters: dict[str, Any], cron: str, timezone: str) -> None:
    """Serve the two deployments with `parameters` (`serve_parameters`) from this process until Ctrl-C or
    SIGTERM, after saying when the schedule fires next (and that a temporary local API lives only as long
    as this process, when PREFECT_API_URL is not set)."""
    deployments = build_deployments(cron, timezone, parameters)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("lstm-forecast: note: PREFECT_API_URL is not set; serving against a temporary local API that "
              "stops with this process: the schedule and its run history live only as long as it does",
              file=sys.stderr)
    print(f"lstm-forecast: next scheduled run {next_run(cron, timezone)} ({cron!r}, {timezone})",
          file=sys.stderr)
    quiet_console_tracebacks()
    serve_until_stopped(deployments)


def serve_until_stopped(deployments) -> None:
    """`prefect.serve` with a SIGTERM that stops cleanly.

    Prefect's runner answers SIGTERM by calling its synchronous `stop()` from inside its own event loop,
    which leaves the `astop` coroutine never awaited (a RuntimeWarning on every shutdown by a process
    manager). Raising `TerminationSignal` instead unwinds `runner.start()` like Ctrl-C does: the loop
    cancels the runner's tasks and the temporary API, if any, stops.
    """
    import asyncio
    import signal

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            raise TerminationSignal(signal.SIGTERM)

    # limit=1: this process runs one flow run at a time, across both deployments.
    runner = _Runner(pause_on_shutdown=False, limit=1)
    for deployment in deployments:
        runner.add_deployment(deployment)
    names = ", ".join(f"'batch-forecast/{d.name}'" for d in deployments)
    print(f"lstm-forecast: serving {names}; stop with Ctrl-C or SIGTERM", file=sys.stderr)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        reason = "SIGTERM" if isinstance(exc, TerminationSignal) else "interrupt"
        print(f"lstm-forecast: serve stopped ({reason})", file=sys.stderr)
