"""Mutation check: break one promise at a time in a copy of the project and run the tests that guard it.

Each curated mutation is (name, file, exact old snippet, new snippet, tests). For each one the
project's files (tracked and untracked, not ignored) are copied to a temporary folder, the snippet
is replaced there, and only the named tests run, in that copy (`PYTHONPATH` puts the copy ahead of
the editable install, so CLI subprocesses run the mutated code too). The working tree is never
touched.

    killed    the named tests failed on the mutant (what we want)
    survived  they all passed: the promise is not guarded
    stale     the old snippet is no longer in the file exactly once: update the mutation (never
              counted as killed)
    error     pytest could not run them (a named test no longer exists, a collection error), or
              they already fail on the unmutated copy (the baseline)

The outcome is read from what pytest reports (its FAILED/ERROR lines and closing counts), not from its
exit code alone: under pytest-xdist, `-x` interrupts the other workers and pytest exits 2 although a
named test failed, which the exit code alone would call an error.

Usage (from the repository root, with the project's environment):
    .venv/bin/python benchmarks/mutations.py                 # all, with a baseline run first
    .venv/bin/python benchmarks/mutations.py --only M1 --only M5
    .venv/bin/python benchmarks/mutations.py --list          # the curated list, nothing run
    .venv/bin/python benchmarks/mutations.py --json          # ... then one JSON object, last:
        mutations (count), killed (count), survived (names), stale (names), errors (names), seconds

Keep snippets short (a line or two) so they survive refactors nearby; when code moves, a stale
mutation says so and its snippet is updated here. When another issue adds a behaviour (covariate
roles, backtests, intervals, tuned settings, a model allowlist), its mutant joins the list.
Not part of `make test` (CI runs its stale check, tests/test_readme_map.py). Measured (issue 24): 47 mutations,
33.4 minutes with the baseline (3.3) on a shared 2-core machine (load 3.5 to 6): 46 killed, S2 (then masked) since
retargeted and killed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOLDOUT = "tests/flows/test_holdout.py"
COMMIT = "tests/reliability/test_commit_order.py"
RACE = "tests/reliability/test_lease_race.py"
CONTRACT = "tests/flows/test_output_contract.py"
CLI = "tests/flows/test_cli.py"
TUNING = "tests/lstm_core/test_tuning.py"
BACKTEST = "tests/flows/test_backtest_flow.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str  # the promise the mutant breaks
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: list[Mutation] = [
    # --- from issue 17: survived the review, each now has its test ------------------------------
    Mutation("M1", "training never sees the holdout (the last H points)", "lstm_core/promotion.py",
             "forecaster = trainer.fit(data.train_panel, config)", "forecaster = trainer.fit(data.panel, config)",
             (f"{HOLDOUT}::test_the_last_h_points_never_reach_training",)),
    Mutation("M2", "a re-run removes the old manifest before its partitions", "lstm_core/outputs.py",
             "remove_file(self.fs, self.manifest_path, root=self.root)",
             'remove_tree(self.fs, join(self.root, "predictions", f"run={self.run_id}"), root=self.root)\n'
             "        remove_file(self.fs, self.manifest_path, root=self.root)",
             (f"{COMMIT}::test_a_rerun_deletes_the_old_manifest_first_and_writes_the_new_one_last",)),
    Mutation("M2b", "the plots are written before the manifest", "tasks/outputs.py",
             '    if plots:\n        outputs.plots',
             '    writer.commit(manifest.model_copy(update={"status": "succeeded", "outputs": outputs}))\n'
             '    if plots:\n        outputs.plots',
             (f"{COMMIT}::test_a_denied_plot_upload_leaves_no_succeeded_manifest",)),
    Mutation("M3", "the S3 lease is created by a conditional PUT (If-None-Match)", "lstm_core/lease.py",
             'self.fs.pipe_file(self.path, self._body(), mode="create")',
             "if self.fs.exists(self.path):\n                    return False\n"
             "                self.fs.pipe_file(self.path, self._body())",
             (f"{RACE}::test_the_lease_is_created_by_a_conditional_put_and_renewed_by_compare_and_swap",
              f"{RACE}::test_processes_racing_for_one_run_id_get_exactly_one_holder_each_time")),
    Mutation("M4b", "each shard writes its own quarantine part", "tasks/outputs.py",
             'writer.write("quarantine", prepared.skipped_frame(), part)',
             'writer.write("quarantine", prepared.skipped_frame(), 0)',
             (f"{CONTRACT}::test_a_sharded_run_quarantines_every_skipped_series_of_every_shard",)),
    Mutation("M5", "known future covariates are scaled like the history", "lstm_core/engine.py",
             "return (future - loc) / scale", "return future",
             (f"{HOLDOUT}::test_known_covariates_of_the_holdout_are_scaled_like_the_history",)),
    # --- from issue 17: caught by the suite already -------------------------------------------------
    Mutation("C1", "a short series' training inputs hold at least a patch of real points (issue 22)",
             "lstm_core/windows.py",
             "pad = np.where(short, window - min_input, 0).astype(np.int64)",
             "pad = np.where(short, window - 1, 0).astype(np.int64)",
             ("tests/lstm_core/test_short_series.py::test_window_plan_properties",
              "tests/lstm_core/test_short_series.py::test_a_14_point_yearly_series_is_in_the_networks_training_windows")),
    Mutation("C2", "each chunk of the forecast gets the known covariates of its own steps", "lstm_core/forecasting.py",
             "ahead = future[:, j * chunk:(j + 1) * chunk, :]", "ahead = future[:, :chunk, :]",
             ("tests/lstm_core/test_core_forecasting.py::"
              "test_known_future_covariates_are_inputs_and_the_window_carries_them",)),
    # --- landed with issue 11: chunks, patches, levels, deseasonalisation -----------------------------
    Mutation("A1", "each forecast chunk is fed back as input", "lstm_core/forecasting.py",
             "w = tf.concat([w, row], axis=1)[:, -length:, :]", "w = w + 0 * tf.reduce_sum(row)",
             ("tests/lstm_core/test_core_forecasting.py::test_each_chunk_is_fed_back",)),
    Mutation("A2", "the seasonal profile is restored after the network", "lstm_core/seasonality.py",
             "return z + self.future(lengths, z.shape[1])", "return z",
             ("tests/lstm_core/test_core_seasonality.py::test_remove_then_restore_is_the_identity_on_history_and_future",)),
    Mutation("A3", "the level is the mean of the window's last patch", "lstm_core/model.py",
             "level = ops.mean(x[:, -self.span:, :1], axis=1)", "level = ops.mean(x[:, :, :1], axis=1)",
             ("tests/lstm_core/test_core_model.py::test_zero_residual_forecasts_the_level",)),
    Mutation("A5", "a series shorter than the window is padded at the front with its first value",
             "lstm_core/panel.py", "if not pad.any():\n            return self", "if True:\n            return self",
             ("tests/lstm_core/test_core_engine.py::test_a_series_shorter_than_the_window_trains_and_forecasts",)),
    Mutation("A4", "each series gets its own seasonal profile", "lstm_core/seasonality.py",
             "y = panel.y[panel.offsets[i]:panel.offsets[i + 1]]", "y = panel.y[panel.offsets[0]:panel.offsets[1]]",
             ("tests/lstm_core/test_core_seasonality.py::"
              "test_the_forecaster_restores_the_seasonal_shape_and_logs_what_it_skipped",)),
    # --- leakage ------------------------------------------------------------------------------------
    Mutation("L1", "the holdout (each backtest window) is forecast from its cutoff, T - H, not T",
             "lstm_core/backtest.py", "yhat = np.asarray(fn(history, horizon, future), dtype=np.float64)",
             "yhat = np.asarray(fn(sub.drop_last(int(drops[w]) - horizon), horizon, future), dtype=np.float64)",
             (f"{HOLDOUT}::test_holdout_scores_of_both_models_equal_a_hand_computation",)),
    # --- commit order -------------------------------------------------------------------------------
    Mutation("K1", "a failure before the shards start keeps the earlier committed attempt",
             "flows/batch_forecast.py", 'previous.get("status") == "succeeded" and not began:',
             'previous.get("status") == "succeeded" and False:',
             (f"{COMMIT}::test_a_rerun_failing_before_its_shards_start_keeps_the_earlier_committed_attempt",)),
    Mutation("K2", "a run checks its lease before it writes the manifest", "lstm_core/outputs.py",
             "self.lease.check()  # a run that lost", "pass  # a run that lost",
             ("tests/reliability/test_lease.py::test_a_stale_lease_is_taken_over_and_its_old_holder_cannot_commit",)),
    # --- lease ---------------------------------------------------------------------------------------
    Mutation("K3", "lease renewals are compare-and-swap (If-Match)", "lstm_core/lease.py",
             "if not self._put(IfMatch=etag):", "if not self._put():",
             (f"{RACE}::test_the_lease_is_created_by_a_conditional_put_and_renewed_by_compare_and_swap",)),
    Mutation("K5", "a stale lease is taken over by compare-and-swap on its ETag", "lstm_core/lease.py",
             "if self._put(IfMatch=etag):", "if self._put():",
             (f"{RACE}::test_a_stale_lease_is_taken_over_by_compare_and_swap_on_its_etag",)),
    Mutation("K4", "a live lease is never taken over", "lstm_core/lease.py",
             "if age > ttl:", "if age >= 0:",
             ("tests/reliability/test_lease.py::test_second_acquire_of_a_live_run_id_is_refused_naming_the_holder",)),
    # --- quarantine ----------------------------------------------------------------------------------
    Mutation("Q1", "the manifest lists every skipped series (up to 1,000 per shard)", "tasks/outputs.py",
             "prepared.skipped[:SKIPPED_IN_SUMMARY]", "prepared.skipped[:1]",
             (f"{CONTRACT}::test_a_sharded_run_quarantines_every_skipped_series_of_every_shard",)),
    # --- metrics -------------------------------------------------------------------------------------
    Mutation("S1", "a sharded run's overall metrics are the mean over all series", "lstm_core/manifest.py",
             "overall = pooled[0].merge(*pooled[1:]).finalize()", "overall = pooled[0].finalize()",
             ("tests/lstm_core/test_manifest_assembly.py::test_a_sharded_run_of_two_groups_sums_its_shards_in_shard_order",
              f"{CONTRACT}::test_a_sharded_run_quarantines_every_skipped_series_of_every_shard")),
    # The served backtest's scales come from the statistical backtest (the network's own are not the ones scored)
    Mutation("S2", "MASE is scaled by the seasonal difference (season_length)", "lstm_core/statistical.py",
             "seasonal = mase_scale(history, season_length)", "seasonal = mase_scale(history, 1)",
             (f"{HOLDOUT}::test_holdout_scores_of_both_models_equal_a_hand_computation",
              f"{BACKTEST}::test_backtest_metrics_equal_the_metrics_table")),
    Mutation("S3", "predictions keep their column dtypes (step int64)", "lstm_core/outputs.py",
             '("ds", _ts(tz)), ("step", pa.int64()), ("yhat"', '("ds", _ts(tz)), ("step", pa.int32()), ("yhat"',
             (f"{CONTRACT}::test_part_files_have_the_contract_columns_and_dtypes",)),
    # --- landed with issue 13: backtests and conformal intervals ----------------------------------------
    Mutation("B1", "a backtest window's forecast sees nothing after its cutoff", "lstm_core/backtest.py",
             "return horizon + step * (windows - 1", "return step * (windows - 1",
             ("tests/lstm_core/test_backtest.py::"
              "test_a_spike_after_a_cutoff_never_reaches_that_window_or_earlier_ones",)),
    Mutation("B2", "split-conformal upper rank ceil((n + 1)(1 - a/2))", "lstm_core/interval_calibration.py",
             "math.ceil((n + 1) * (1 - a / 2) - 1e-9)", "math.ceil(n * (1 - a / 2) - 1e-9)",
             ("tests/lstm_core/test_intervals.py::test_split_conformal_ranks_and_borrowing_from_neighbouring_steps",)),
    # --- issue 13 in the nightly run: backtest, intervals, realised accuracy -------------------------------
    Mutation("W1", "the run's model trains on the data before the earliest backtest cutoff", "lstm_core/backtest.py",
             "return int(first[ok].min()), sub.drop_each(drops[first[ok]])",
             "return int(first[ok].min()), sub.drop_last(int(drops[-1]))",
             (f"{BACKTEST}::test_backtest_windows_never_see_data_after_their_cutoff",)),
    Mutation("W2", "realised accuracy is scaled by the season of the history before each cutoff", "tasks/outputs.py",
             'season_length=config.resolved_values("realised accuracy").season_length)',
             "season_length=1)",
             (f"{BACKTEST}::test_realised_accuracy_equals_the_scorer_on_the_later_actuals",)),
    Mutation("W3", "a loaded model's saved intervals are reused", "lstm_core/modelling.py",
             "if intervals_fit(choice.intervals, config):", "if False:",
             (f"{BACKTEST}::test_a_loaded_model_brings_its_saved_intervals",)),
    Mutation("W4", "the metrics table's MSIS is the backtest table's, scaled like MASE", "lstm_core/metrics.py",
             "msis = f[is_col].to_numpy() / np.where(has, n_l, 1) / np.where(good_scale, scale, 1.0)",
             "msis = f[is_col].to_numpy() / np.where(has, n_l, 1)",
             (f"{BACKTEST}::test_backtest_metrics_equal_the_metrics_table",)),
    # --- command line ------------------------------------------------------------------------------
    Mutation("E1", "exit code 3 when the run id is already running", "flows/cli.py",
             "return fail(str(exc), 3)", "return fail(str(exc), 2)",
             (f"{CLI}::test_a_run_id_already_running_is_exit_code_3_with_one_line",)),
    Mutation("E2", "LSTM_FORECAST_DEBUG=1 keeps the traceback in the console log", "flows/console.py",
             'if os.environ.get("LSTM_FORECAST_DEBUG"):\n        return\n    seen = set()',
             "if False:\n        return\n    seen = set()",
             (f"{CLI}::test_anything_else_is_exit_code_1_and_debug_keeps_the_traceback",)),
    # --- retrain decision ----------------------------------------------------------------------------
    Mutation("R1", "degradation_tolerance is the allowed relative rise of the validation loss",
             "lstm_core/retrain.py", "current > recorded * (1 + tolerance)",
             "current > recorded * (1 + 2 * tolerance)",
             ("tests/lstm_core/test_core_model_store.py::test_degradation_tolerance_is_the_allowed_relative_rise",)),
    Mutation("R2", "a model older than max_model_age is retrained", "lstm_core/retrain.py",
             "if age > max_age:", "if age > 10 * max_age:",
             ("tests/lstm_core/test_core_model_store.py::test_too_old_model_is_retrained",)),
    Mutation("R3", "the model key hashes the scaler", "lstm_core/config/identity.py",
             '        "scaler": config.scaler,\n', "",
             ("tests/lstm_core/test_core_config.py::"
              "test_model_key_changes_with_every_setting_that_changes_the_model",)),
    Mutation("R4", "retrain 'always' trains even when a model is saved", "lstm_core/retrain.py",
             'if policy == "always":', 'if policy == "always" and not list_versions(store, model_key):',
             ("tests/lstm_core/test_core_model_store.py::test_always_means_train_even_with_a_model",)),
    # --- landed with issue 23: the champion, the gate, retention ------------------------------------------
    Mutation("N1", "a challenger is promoted only when it does no worse than the champion on the same windows",
             "lstm_core/promotion.py", "chall <= champ * (1 + tol)", "chall <= champ * (1 + tol) + 1e9",
             ("tests/lstm_core/test_champion.py::"
              "test_a_challenger_made_worse_on_purpose_is_rejected_and_the_champion_serves",)),
    Mutation("N2", "a re-run on identical data neither retrains nor adds a version", "lstm_core/retrain.py",
             'fingerprint == loaded.metadata.get("data_fingerprint"))', "False)",
             ("tests/lstm_core/test_champion.py::test_a_rerun_on_identical_data_neither_retrains_nor_adds_a_version",)),
    Mutation("N3", "retention never removes the champion's lineage", "lstm_core/model_store.py",
             "kept = set(versions[:keep]) | (set(lineage(store, key, champion)) if champion else set())",
             "kept = set(versions[:keep]) | ({champion} if champion else set())",
             ("tests/lstm_core/test_champion.py::test_retention_keeps_champion_lineage_newest_and_held_versions",)),
    # --- landed with issue 14: tuning ----------------------------------------------------------------
    Mutation("T1", "the final window (a run's holdout, a benchmark's test) never enters tuning",
             "lstm_core/tuning/trial.py",
             "return panel.drop_last(config.horizon)", "return panel",
             (f"{TUNING}::test_the_final_window_and_the_sample_stay_out_of_tuning",)),
    Mutation("T2", "a pruned trial is recorded as pruned", "lstm_core/tuning/trial.py",
             "if self.trial.should_prune():", "if False:",
             (f"{TUNING}::test_a_pruned_trial_is_recorded_as_pruned",
              f"{TUNING}::test_the_median_pruner_stops_a_trial_worse_than_the_others")),
    Mutation("T3", "a tuned window longer than every series is refused, not clipped", "lstm_core/tuning/apply.py",
             "if int(config.window) > longest:", "if False:",
             (f"{TUNING}::test_tuned_latest_applies_the_newest_best_settings_and_refuses_a_window_the_data_cannot_use",
              "tests/flows/test_tune_flow.py::test_a_tuned_window_longer_than_the_longest_series_is_refused")),
    Mutation("T4", "a rerun of a study resumes it (its trial numbers continue)", "lstm_core/tuning/study.py",
             "previous = load_trials(config) if save else []", "previous = []",
             (f"{TUNING}::test_a_resumed_study_continues_its_trial_numbers",)),
    # --- issue 26: the model store's files ---------------------------------------------------------------
    Mutation("G1", "an archive naming a file twice is refused", "lstm_core/model_guard.py",
             "                if key in seen:\n", "                if False:\n",
             ("tests/security/test_archive_differential.py::test_a_second_config_json_is_refused_and_runs_nothing",)),
    Mutation("G2", "the weights file declares exactly the checked network's variables", "lstm_core/model_guard.py",
             "    check_weights(archive, max_bytes)\n    return archive", "    return archive",
             ("tests/security/test_weights_file.py::test_weights_that_are_not_the_networks_are_refused",)),
    Mutation("G3", "intervals.json is checked against its recorded sha256", "lstm_core/artifacts.py",
             "    _sha256_ok(INTERVALS_FILE, raw, checksums, url, signed)\n", "",
             ("tests/security/test_served_files.py::test_each_served_file_of_a_signed_version_is_covered",
              "tests/security/test_served_files.py::test_without_a_key_checksums_refuse_a_changed_file")),
    Mutation("G4", "a saved lower quantile above its upper one is refused", "lstm_core/intervals.py",
             "if (arr[:, 0, :] > arr[:, 1, :]).any():", "if False:",
             ("tests/security/test_served_files.py::test_named_malformed_intervals_are_refused_with_the_reason",)),
    Mutation("G5", "metadata's window, features and known are the inputs the members take", "lstm_core/artifacts.py",
             "    _check_geometry(members, meta, url)\n", "",
             ("tests/security/test_served_files.py::test_named_cross_field_errors_in_metadata_are_refused_with_the_reason",)),
]


def project_files(root: Path) -> list[str]:
    """Tracked files and untracked ones git does not ignore: what a clone plus local work holds."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def copy_project(root: Path, files: list[str], dest: Path) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float,
              stop_early: bool = True) -> tuple[str, int | None, str, float]:
    """Run pytest on `tests` inside `copy`: (outcome, return code, output summary, seconds)."""
    path = os.pathsep.join(p for p in (str(copy), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--no-header",
           *(["-x"] if stop_early else []), *tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-1500:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-1500:]
        return "timeout", None, str(tail), time.monotonic() - t0
    seconds = time.monotonic() - t0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    outcome = classify(proc.returncode, lines)
    summary = next((i for i, line in enumerate(lines) if "short test summary info" in line), len(lines))
    failed = [line for line in lines[summary:] if line.startswith(("FAILED ", "ERROR "))]
    tail = "\n".join(failed) if outcome == "failed" and failed else "\n".join(lines[-15:])
    return outcome, proc.returncode, tail, seconds


_COUNT_RE = re.compile(r"(\d+) (failed|passed|errors?|skipped|deselected|xfailed|xpassed)\b")


def classify(returncode: int, lines: list[str]) -> str:
    """'failed', 'passed' or 'error' from what pytest reports, not from its exit code alone.

    Under pytest-xdist, `-x` stops the other workers and pytest exits 2 ("interrupted") although a named
    test did fail, so exit 2 with a reported failure is a failure. A collection error or an import error
    with no test failing stays an error: the mutant was never tested.
    """
    counts: dict[str, int] = {}
    for line in reversed(lines):  # pytest's closing line, e.g. "1 failed, 3 passed in 12.1s"
        found = _COUNT_RE.findall(line)
        if found and (" in " in line or line.startswith("=")):
            counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in found}
            break
    # a test whose fixture broke on the mutant ("ERROR path::test") did not pass either; an ERROR line
    # naming only a file is a collection error
    failed_lines = [line for line in lines
                    if line.startswith("FAILED ") or (line.startswith("ERROR ") and "::" in line.split(" - ")[0])]
    if counts.get("failed", 0) or failed_lines:
        return "failed"
    if returncode == 0 and counts.get("passed", 0):
        return "passed"
    return "error"


def check_isolation(copy: Path) -> None:
    """The copy's modules must shadow the editable install, or mutants would run the original code."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    out = subprocess.run([sys.executable, "-c", "import lstm_core, tasks, flows; "
                          "print(lstm_core.__path__[0], tasks.__path__[0], flows.__path__[0])"],
                         cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.split()
    wrong = [p for p in out if not Path(p).resolve().is_relative_to(copy.resolve())]
    if wrong:
        raise SystemExit(f"the copy does not shadow the installed project ({wrong}); mutants would not run")


def apply(copy: Path, m: Mutation) -> str | None:
    """Replace the snippet in the copy; the reason it cannot be, or None."""
    path = copy / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        return f"snippet found {count} times in {m.file} (must be exactly once)"
    path.write_text(text.replace(m.old, m.new))
    return None


def _stop(signum, frame):  # a SIGTERM cleans up the temporary copies like Ctrl-C does
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="run this mutation only (repeatable)")
    p.add_argument("--list", action="store_true", help="print the curated list and exit")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip running the named tests on the unmutated copy first")
    p.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies (printed)")
    args = p.parse_args(argv)

    names = {m.name for m in MUTATIONS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        p.error(f"unknown mutation(s) {unknown}; known: {sorted(names)}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:4} {m.file:28} {m.promise}\n     tests: {', '.join(m.tests)}")
        return 0

    files = project_files(ROOT)
    work = Path(tempfile.mkdtemp(prefix="lstm-mutations-"))
    if (ROOT.parent / "shared").is_dir():
        # Each copy sits under `work`, so `../shared` must be there too: tests that need the shared data
        # sets (the M4 scorer) would otherwise skip in the copy, and a skipped test lets a mutant survive.
        (work / "shared").symlink_to(ROOT.parent / "shared", target_is_directory=True)
    t_start = time.monotonic()
    results: list[dict] = []
    baseline_failed: set[str] = set()
    try:
        probe = work / "probe"
        copy_project(ROOT, files, probe)
        check_isolation(probe)
        shutil.rmtree(probe, ignore_errors=True)
        if not args.no_baseline:
            # grouped by file, so a module's shared fixtures are set up once
            tests = tuple(sorted(set(t for m in chosen for t in m.tests), key=lambda t: t.split("::")[0]))
            base = work / "baseline"
            copy_project(ROOT, files, base)
            print(f"baseline: {len(tests)} tests on the unmutated copy ...", flush=True)
            outcome, rc, tail, seconds = run_tests(base, tests, args.timeout * 3, stop_early=False)
            print(f"baseline: {outcome} in {seconds:.0f} s", flush=True)
            if outcome != "passed":
                print(tail, flush=True)
                # the named tests that fail unmutated: their mutations cannot be counted as killed
                failing = {line.split(" ", 1)[1].split(" - ")[0] for line in tail.splitlines()
                           if line.startswith(("FAILED ", "ERROR "))}
                baseline_failed.update(t for t in tests if t in failing or outcome != "failed")
            shutil.rmtree(base, ignore_errors=True)
        for m in chosen:
            copy = work / m.name
            copy_project(ROOT, files, copy)
            row = {"name": m.name, "file": m.file, "promise": m.promise, "tests": list(m.tests)}
            problem = apply(copy, m)
            if problem is not None:
                row.update(result="stale", detail=problem, seconds=0.0)
            elif baseline_failed & set(m.tests):
                row.update(result="error", detail=f"fails unmutated: {sorted(baseline_failed & set(m.tests))}",
                           seconds=0.0)
            else:
                outcome, rc, tail, seconds = run_tests(copy, m.tests, args.timeout)
                result = {"failed": "killed", "timeout": "killed", "passed": "survived"}.get(outcome, "error")
                detail = "timed out" if outcome == "timeout" else (f"pytest exit {rc}" if result == "error" else "")
                row.update(result=result, detail=detail, seconds=round(seconds, 1))
                if result == "error":
                    row["output"] = tail
                elif result == "killed" and tail.startswith(("FAILED ", "ERROR ")):
                    first = tail.splitlines()[0].split(" ", 1)[1]
                    row["detail"] = "by " + first.split(" - ")[0].rsplit("::", 1)[-1]
            results.append(row)
            print(f"{m.name:4} {row['result']:8} {row['seconds']:6.0f} s  {m.promise}"
                  + (f"  ({row['detail']})" if row.get("detail") else ""), flush=True)
            if row.get("output"):
                print("     " + row["output"].replace("\n", "\n     "), flush=True)
            if not args.keep:
                shutil.rmtree(copy, ignore_errors=True)
    finally:
        if args.keep:
            print(f"copies kept under {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    by = {k: [r["name"] for r in results if r["result"] == k] for k in ("killed", "survived", "stale", "error")}
    total = time.monotonic() - t_start
    print()
    print(f"{'mutation':8} {'result':8} {'seconds':>7}  promise")
    for r in results:
        print(f"{r['name']:8} {r['result']:8} {r['seconds']:7.0f}  {r['promise']}")
    print(f"\n{len(by['killed'])} of {len(results)} killed; survived: {by['survived'] or 'none'}; "
          f"stale: {by['stale'] or 'none'}; errors: {by['error'] or 'none'}; {total / 60:.1f} minutes")
    if args.json:
        print(json.dumps({"mutations": len(results), "killed": len(by["killed"]), "survived": by["survived"],
                          "stale": by["stale"], "errors": by["error"], "seconds": round(total, 1),
                          "results": [{k: r[k] for k in ("name", "file", "result", "seconds")} for r in results]}))
    return 0 if len(by["killed"]) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
