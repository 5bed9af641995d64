"""The `lstm-forecast` console script, run as a user runs it (a subprocess)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_frame
from tests.reliability.conftest import error_lines

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("lstm-forecast"))
ERROR = "lstm-forecast: error: "
FAST_FLAGS = ["--freq", "h", "--horizon", "12", "--season", "24", "--set", "window=24", "--set", "model.units=[8]",
              "--set", "training.epochs=2"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LSTM_FORECAST_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def api(prefect_api_url) -> dict[str, str]:
    """The environment that points a CLI subprocess at the Prefect test server."""
    return {"PREFECT_API_URL": prefect_api_url}


def test_help_for_each_command():
    for args in (["--help"], ["run", "--help"], ["serve", "--help"], ["demo", "--help"]):
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr
        assert "usage: lstm-forecast" in out.stdout
    run_help = run_cli("run", "--help").stdout
    assert "--max-train-minutes" in run_help
    assert "steps to forecast (default 24)" in run_help  # the setting's default, read from the config
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"lstm-forecast {metadata.version('lstm-forecast')}"
    serve_help = run_cli("serve", "--help").stdout
    for flag in ("--cron", "--timezone", "--config", "--input", "--output", "--freq", "--horizon", "--season",
                 "--max-train-minutes", "--set"):
        assert flag in serve_help


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cron", "61 * * * *"], "--cron '61 * * * *'"),
        (["--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus': not an IANA time zone"),
        (["--set", "run_id=fixed"], "setting 'run_id': not allowed when serving"),
        (["--horizon", "0"], "setting 'horizon'"),
    ],
)
def test_serve_refuses_bad_schedules_and_settings_with_one_line(tmp_path, flags, message):
    out = run_cli("serve", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *flags,
                  timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--horizon", "0"], "setting 'horizon'"),
        (["--freq", "fortnightly"], "setting 'freq'"),
        (["--set", "window=1"], "setting 'window'"),
        (["--set", "training.nonsense=3"], "setting 'training.nonsense': unknown setting"),
    ],
)
def test_bad_configuration_is_refused_with_one_line(tmp_path, flags, message):
    out = run_cli("run", "--input", str(tmp_path / "none.parquet"), "--output", str(tmp_path / "out"), *flags)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{ERROR}invalid configuration: setting '"), out.stderr
    assert message in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not (tmp_path / "out").exists()


def test_missing_input_is_exit_code_2_with_one_line(tmp_path, api):
    out = run_cli("run", "--input", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "out"),
                  "--freq", "h", "--horizon", "12", "--season", "24", "--set", "run_id=nope", env=api)
    assert out.returncode == 2, out.stderr[-3000:]
    assert error_lines(out.stderr) == [f"{ERROR}file {tmp_path / 'nope.parquet'}: input path does not exist"]
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_known_failure_is_exit_code_2_with_one_line(tmp_path, api):
    """retrain 'never' with an empty model store: an ArtifactError the user can act on."""
    data = tmp_path / "series.parquet"
    make_frame(n_series=2, length=100).to_parquet(data, index=False)
    out = run_cli("run", "--input", str(data), "--output", str(tmp_path / "out"), *FAST_FLAGS,
                  "--set", "retrain=never", "--set", "run_id=never", env=api)
    assert out.returncode == 2, out.stderr[-3000:]
    [line] = error_lines(out.stderr)
    assert line.startswith(f"{ERROR}retrain policy is 'never' but the model store ") and \
        "has no model for this configuration (key " in line, line
    assert "Traceback" not in out.stderr + out.stdout
    manifest = json.loads((tmp_path / "out" / "runs" / "never" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"].startswith("ArtifactError: retrain policy is 'never'")


def test_a_run_id_already_running_is_exit_code_3_with_one_line(tmp_path, api):
    from lstm_core.lease import RunLease
    from lstm_core.location import filesystem

    data = tmp_path / "series.parquet"
    make_frame(n_series=2, length=100).to_parquet(data, index=False)
    fs, root = filesystem(str(tmp_path / "out"))
    with RunLease.acquire(fs, root, "busy", ttl=60):  # this process runs `busy` (a local lock)
        out = run_cli("run", "--input", str(data), "--output", str(tmp_path / "out"), *FAST_FLAGS,
                      "--set", "run_id=busy", env=api)
    assert out.returncode == 3, out.stderr[-3000:]
    [line] = error_lines(out.stderr)
    assert line.startswith(f"{ERROR}run busy is already running (held by ") and f" pid {os.getpid()} " in line, line
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "out" / "runs" / "busy" / "manifest.json").exists()  # refused before any work
    assert not (tmp_path / "out" / "predictions").exists()


# A bug cannot be caused for real in working code, so this one is injected: the CLI's own `main`, run
# in a fresh process as the console script runs it, with the flow's pipeline replaced by one that raises.
INJECTED_BUG = """
import sys
import flows.batch_forecast as bf
assert hasattr(bf, "run_pipeline"), "move the injected bug to where the flow now does its work"
def run_pipeline(config):
    raise RuntimeError("injected bug: not a failure the product knows")
bf.run_pipeline = run_pipeline
from flows.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "LSTM_FORECAST_DEBUG=1"])
def test_anything_else_is_exit_code_1_and_debug_keeps_the_traceback(tmp_path, api, debug):
    data = tmp_path / "series.parquet"
    make_frame(n_series=2, length=100).to_parquet(data, index=False)
    env = {**os.environ, **api}
    env.pop("LSTM_FORECAST_DEBUG", None)
    if debug:
        env["LSTM_FORECAST_DEBUG"] = "1"
    out = subprocess.run([sys.executable, "-c", INJECTED_BUG, "run", "--input", str(data), "--output",
                          str(tmp_path / "out"), *FAST_FLAGS], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert error_lines(out.stderr) == [f"{ERROR}RuntimeError: injected bug: not a failure the product knows"]
    if debug:
        assert "Traceback (most recent call last)" in out.stderr
        trace = out.stderr[out.stderr.index("Traceback (most recent call last)"):]
        assert ", in run_pipeline" in trace and "RuntimeError: injected bug" in trace  # down to the raising frame
    else:
        assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.slow
def test_run_command_writes_outputs(tmp_path):
    data = tmp_path / "series.parquet"
    make_frame(n_series=4, length=150).to_parquet(data, index=False)
    out = run_cli("run", "--input", str(data), "--output", str(tmp_path / "out"), "--freq", "h",
                  "--horizon", "12", "--season", "24", "--max-train-minutes", "1",
                  "--set", "window=24", "--set", "model.units=[8]", "--set", "training.epochs=2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\x1b[K" not in out.stderr + out.stdout  # not a terminal: no progress line in the logs
    runs = list((tmp_path / "out" / "runs").iterdir())
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    # The retrain decision and its reason are logged, and reported on stdout.
    assert f"model decision: train ({manifest['retrain']['reason']})" in out.stderr
    assert f"run {manifest['run_id']}: succeeded; model {manifest['model_version']} (train: " in out.stdout
    assert not error_lines(out.stderr)
    assert manifest["config"]["training"]["max_train_minutes"] == 1
    preds = pd.read_parquet(tmp_path / "out" / "predictions")
    assert len(preds) == 4 * 12
    # The console log: each line names its task run; TensorFlow's native start-up lines are not there.
    assert re.search(r"Task run 'forecast-[0-9a-z]+' - Finished in state Completed\(\)", out.stderr)
    assert "absl::InitializeLog" not in out.stderr and "oneDNN custom operations" not in out.stderr


@pytest.mark.slow
def test_serve_stops_cleanly_on_sigterm(tmp_path):
    """Without PREFECT_API_URL: says the schedule is temporary and when it fires; SIGTERM ends it with exit 0,
    no 'never awaited' warning, and the temporary API stopped."""
    data = tmp_path / "series.parquet"
    make_frame(n_series=2, length=150).to_parquet(data, index=False)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "LSTM_FORECAST_DEBUG")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    proc = subprocess.Popen([CLI, "serve", "--input", str(data), "--output", str(tmp_path / "out")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until it serves
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "lstm-forecast: serving" in line:
                break
        assert any("lstm-forecast: serving 'batch-forecast/scheduled'" in x for x in lines), "".join(lines)[-3000:]
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    err = "".join(lines) + rest
    assert proc.returncode == 0, err[-3000:]
    assert "temporary local API" in err and "live only as long as it does" in err
    assert re.search(r"next scheduled run \d{4}-\d\d-\d\dT02:00:00\+00:00 \('0 2 \* \* \*', UTC\)", err)
    assert "serve stopped (SIGTERM)" in err
    assert "never awaited" not in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_works_in_a_fresh_clone_after_make_setup(tmp_path):
    """`make demo` in a fresh clone: set-up from the lock file, then the demo's outputs appear."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    clone = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # As a user runs it: the system python3, not this checkout's venv (`uv run` puts that on PATH).
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": path, "PYTHON": "python3"}
    env.pop("VIRTUAL_ENV", None)
    out = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "outputs under data/demo/output" in out.stdout
    runs = list((clone / "data/demo/output/runs").iterdir())
    assert len(runs) == 1
    assert json.loads((runs[0] / "manifest.json").read_text())["status"] == "succeeded"
    preds = pd.read_parquet(clone / "data/demo/output/predictions")
    assert len(preds) == 24 * 24 and preds["yhat"].notna().all()
    # the read hint it prints works as printed, from the clone, with the system python3 first on PATH
    hint = next(line for line in out.stdout.splitlines() if line.startswith("read the committed runs with: "))
    command = hint.split(": ", 1)[1]
    assert command.startswith(".venv/bin/python -c ")
    read = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-2000:]
    assert "[576 rows x" in read.stdout


@pytest.mark.slow
def test_run_shows_training_progress_on_a_terminal(tmp_path):
    """Under a pseudo-terminal the CLI redraws a progress bar (epochs and batches, backtest windows) in place."""
    import pty
    import select

    data = tmp_path / "series.parquet"
    make_frame(n_series=3, length=150).to_parquet(data, index=False)
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "LSTM_FORECAST_PROGRESS"}
    proc = subprocess.Popen([CLI, "run", "--input", str(data), "--output", str(tmp_path / "out"), "--freq", "h",
                             "--horizon", "12", "--season", "24", "--set", "window=24", "--set", "model.units=[8]",
                             "--set", "training.epochs=2", "--set", "training.batch_size=8"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=300)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # without the terminal's colours
    # rich's bar in place: label, bar, done/total, elapsed, ETA (training batches, then the backtest windows)
    assert "\r\x1b[K" in text and re.search(r"epoch 1/2 ━*╺?━* +\d+/\d+ \d+:\d\d:\d\d eta \S+ batches", plain), \
        text[-3000:]
    assert re.search(r"backtest windows ━*╺?━* +3/3 ", plain), text[-3000:]


@pytest.mark.parametrize("after, cron, tz, expected", [
    ("2026-06-01T12:00:00+00:00", "0 2 * * *", "Europe/Paris", "2026-06-02T02:00:00+02:00"),
    ("2026-06-01T23:59:00+00:00", "0 2 * * *", "Europe/Paris", "2026-06-02T02:00:00+02:00"),  # 01:59 local
    ("2026-12-01T02:00:00+00:00", "0 2 * * *", "UTC", "2026-12-02T02:00:00+00:00"),  # strictly after
])
def test_serve_says_when_the_schedule_fires_next(after, cron, tz, expected):
    from datetime import datetime

    from flows.serve import next_run

    assert next_run(cron, tz, datetime.fromisoformat(after)) == expected
