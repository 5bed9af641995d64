"""Issue 25 (5): the CLI's pre-check, before TensorFlow is imported or a Prefect API started, refuses what
it can find in about a second: declared columns missing from the input, an output location that is a file or
cannot be written (exit 2, naming the setting); storage it cannot reach gets its own exit code, 75
(EX_TEMPFAIL: retry later), distinct from bad input's 2."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, make_frame
from tests.flows.test_cli import ERROR, run_cli
from tests.reliability.conftest import error_lines

PRECHECK_S = 8.0  # the CLI's own start (imports) included, on a loaded 2-core machine; training would take far longer
FAST = ["--freq", "h", "--horizon", "12", "--season", "24", "--set", "window=24", "--set", "training.epochs=1"]


def _data(tmp_path: Path, **extra) -> Path:
    frame = make_frame(n_series=3, length=150).assign(**extra)
    path = tmp_path / "series.parquet"
    frame.to_parquet(path, index=False)
    return path


def _refused(out, code: int, started: float) -> str:
    took = time.monotonic() - started
    assert out.returncode == code, out.stderr[-3000:]
    assert took < PRECHECK_S, took
    # refused by the pre-check: no Prefect API was started, no flow ran
    assert "Starting temporary server" not in out.stderr and "Flow run" not in out.stderr, out.stderr[-3000:]
    lines = error_lines(out.stderr)
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("setting, value, column", [
    ("historic_covariates", "[temperatur]", "temperatur"),
    ("future_covariates", "[promo, holliday]", "holliday"),
    ("static_covariates", "[regoin]", "regoin"),
    ("group_column", "segmnt", "segmnt"),
])
def test_a_declared_column_missing_from_the_input_is_refused_by_the_pre_check(tmp_path, setting, value, column):
    data = _data(tmp_path, temperature=1.0, promo=0.0, holiday=0.0, region="eu", segment="a")
    started = time.monotonic()
    out = run_cli("run", "--input", str(data), "--output", str(tmp_path / "out"), *FAST, "--set", f"{setting}={value}")
    line = _refused(out, 2, started)
    assert line.startswith(f"{ERROR}file {data}, column {column!r}: declared in setting {setting!r} but not in the "
                           f"input"), line
    assert "'temperature'" in line  # the columns it has, by the user's names
    assert not (tmp_path / "out").exists()


def test_an_output_path_that_is_a_file_is_refused_up_front(tmp_path):
    data = _data(tmp_path)
    afile = tmp_path / "results.parquet"
    afile.write_bytes(b"not a folder")
    started = time.monotonic()
    out = run_cli("run", "--input", str(data), "--output", str(afile), *FAST)
    assert _refused(out, 2, started) == (f"{ERROR}setting 'output_url': {afile} is a file, not a folder: give a folder "
                                         f"(the run writes predictions/, metrics/, runs/ ... under it)")
    started = time.monotonic()
    out = run_cli("run", "--input", str(data), "--output", str(afile / "out"), *FAST)
    assert _refused(out, 2, started) == (f"{ERROR}setting 'output_url': {afile / 'out'} cannot be created: {afile} is "
                                         f"a file, not a folder")
    assert afile.read_bytes() == b"not a folder"


def test_an_output_folder_that_cannot_be_written_is_refused_up_front(tmp_path):
    data = _data(tmp_path)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "out"
    else:  # root writes through permission bits: a file system that refuses it instead
        target = Path("/sys/lstm-forecast-out")
        try:
            target.mkdir()
        except OSError:
            pass
        else:
            target.rmdir()
            pytest.skip("no folder this root process cannot write")
    started = time.monotonic()
    out = run_cli("run", "--input", str(data), "--output", str(target), *FAST)
    line = _refused(out, 2, started)
    assert line.startswith(f"{ERROR}setting 'output_url': {target} is not writable ({target.parent}: "), line
    assert not target.exists()


def test_an_output_object_that_is_a_file_on_s3_is_refused_up_front(tmp_path, s3_bucket):
    import s3fs

    s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"]).pipe(f"{s3_bucket}/out", b"an object")
    started = time.monotonic()
    out = run_cli("run", "--input", str(_data(tmp_path)), "--output", f"{s3_bucket}/out", *FAST)
    line = _refused(out, 2, started)
    assert line.startswith(f"{ERROR}setting 'output_url': {s3_bucket}/out is a file (an object), not a folder"), line


@pytest.mark.parametrize("where", ["input", "output"])
def test_unreachable_storage_exits_75_not_2(tmp_path, where):
    """An S3 endpoint on a loopback port where nothing listens: 'retry later', not 'fix the data'."""
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "2"}  # botocore's retries, fewer (the default 5 take about 10 s here)
    data = "s3://nowhere/series.parquet" if where == "input" else str(_data(tmp_path))
    output = "s3://nowhere/out" if where == "output" else str(tmp_path / "out")
    started = time.monotonic()
    out = run_cli("run", "--input", data, "--output", output, *FAST, env=env)
    line = _refused(out, 75, started)
    assert line.startswith(f"{ERROR}{where} s3://nowhere/") and "cannot reach storage" in line, line
    assert "EndpointConnectionError" in line
