"""The run summary shown as Prefect artifacts (pure functions; the e2e test reads them back from a server)."""
from __future__ import annotations

from tasks.reporting import MAX_SKIPPED_LISTED, metrics_table, summary_markdown, timings_table

MANIFEST = {
    "run_id": "r1", "status": "succeeded", "input_url": "s3://lake/in", "output_url": "s3://lake/out",
    "input_fingerprint": "abc123", "model_version": "v1", "model_key": "k1",
    "retrain": {"action": "load", "reason": "model v1 is current (2.0h old)"},
    "counts": {"series_read": 3, "series_forecast": 2, "series_skipped": 1},
    "skipped": [{"series_id": "bad|1", "field": "y", "reason": "constant | flat"}],
    "overall_metrics": {"seasonal_naive": {"mae": 2.0, "rmse": 2.5, "smape": 9.0, "mase": 1.1},
                        "v1": {"mae": 1.0, "rmse": 1.5, "smape": 5.0, "mase": float("nan")}},
    "outputs": {"predictions": "lake/out/predictions/run=r1/part-0.parquet", "metrics": "m", "quarantine": "q",
                "plots": {"holdout.png": "lake/out/runs/r1/plots/holdout.png"}},
}


def test_metrics_table_puts_the_lstm_first():
    rows = metrics_table(MANIFEST["overall_metrics"], "v1")
    assert [r["model"] for r in rows] == ["lstm", "seasonal_naive"]
    assert rows[0]["version"] == "v1" and rows[0]["mae"] == 1.0 and rows[1]["mase"] == 1.1


def test_summary_has_decision_counts_skipped_outputs_and_plot_links():
    md = summary_markdown(MANIFEST, {"loss.png": "the model was loaded, so the curves are those of its training"})
    assert "**load**: model v1 is current (2.0h old)" in md
    assert "| series forecast | 2 |" in md
    assert "constant \\| flat" in md  # table cells stay in their column
    assert "s3://lake/out/predictions/run=r1/" in md and "s3://lake/out/runs/r1/manifest.json" in md
    assert "(s3://lake/out/runs/r1/plots/holdout.png)" in md
    assert "- the model was loaded, so the curves are those of its training" in md.split("## Plots")[1]
    assert "| lstm | 1 | 1.5 | 5 | n/a |" in md


def test_long_skip_lists_are_cut_with_a_pointer_to_the_quarantine():
    skipped = [{"series_id": f"s{i}", "field": "y", "reason": "too short"} for i in range(MAX_SKIPPED_LISTED + 7)]
    md = summary_markdown({**MANIFEST, "skipped": skipped})
    assert "`s0`" in md and f"`s{MAX_SKIPPED_LISTED}`" not in md
    assert "and 7 more" in md and "quarantine" in md


def test_timings_table_lists_each_step_with_its_seconds_and_share_of_the_run():
    timings = {"load_series": 1.0, "train_or_load_model": 6.0, "forecast": 2.5, "write_outputs": 0.5,
               "wall_plan_shards": 0.2, "wall_total": 10.0}
    rows = timings_table(timings)
    assert rows == [
        {"step": "load_series", "seconds": 1.0, "share": 0.1},
        {"step": "train_or_load_model", "seconds": 6.0, "share": 0.6},
        {"step": "forecast", "seconds": 2.5, "share": 0.25},
        {"step": "write_outputs", "seconds": 0.5, "share": 0.05},
        {"step": "wall_plan_shards", "seconds": 0.2, "share": 0.02},
        {"step": "wall_total", "seconds": 10.0, "share": 1.0},
    ]
    # no wall time (a manifest without it): the seconds still, no share
    assert timings_table({"forecast": 2.0}) == [{"step": "forecast", "seconds": 2.0, "share": None}]
    assert timings_table({}) == []
