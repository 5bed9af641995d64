"""Night after night: warm start behind the promotion gate, retraining every night, and a frozen model.

    python benchmarks/nightly.py [--data ../shared/data/m4-hourly] [--nights 10] [--series N] [--keep DIR] [--json]

Replays `--nights` nights of `../shared/data/m4-hourly/train.parquet` (the training part of the competition's
hourly series; every series ends at the same hour). The file's last 48 hours are held out below the last night;
each night's data end 24 hours later than the night before. Each night is one `lstm-forecast run` with
`--as-of <that night>` (only data up to it are read) and the CLI's defaults plus `--freq h --horizon 48
--season 24`, three ways, each with its own output and model store:

    warm    the default (`retrain: auto`): the first night trains; later nights fine-tune the champion and
            promote the challenger only through the gate. Nights 5 and 6 are missed: their runs are started
            late, at night 7, beside night 7's own run (as a scheduler does after an outage), and must skip
            themselves, leaving one run that catches up.
    full    `--set retrain=always`: a full training every night.
    frozen  `--set retrain=never` after the first night: the first model, loaded unchanged.

Each night's forecast is scored on the 48 hours after its `as_of` with `../shared/bench/m4_score.py`
(history up to `as_of` for the scale). Mean OWA is taken over the nights every way forecast (the warm
replay has none for the missed nights 5 and 6). Training time is the manifest's `train_or_load_model`
step (load, fine-tune and the gate's scoring for a warm night). Each warm night's decision is checked
against the scores it recorded: a promotion with challenger score above champion score x (1 + tolerance)
is a bad promotion.

Prints a table; with --json one JSON object last: warm_train_s_median, full_train_s_median, owa_warm,
owa_full, owa_frozen, promotions, rejections, bad_promotions, runs_after_outage, revision_p50, revision_p95
(plus nights, missed, seconds, load).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m4_common import CLI, SHARED, machine_load, score, timings, workdir  # noqa: E402

H, SEASON, STEP_H = 48, 24, 24
MISSED = (5, 6)  # nights the warm replay's scheduler was down for


def night_ends(last: pd.Timestamp, nights: int) -> list[pd.Timestamp]:
    """`as_of` of nights 1..nights: the last night ends H hours before the file does, each 24 h apart."""
    final = last - pd.Timedelta(hours=H)
    return [final - pd.Timedelta(hours=STEP_H * (nights - k)) for k in range(1, nights + 1)]


def run_night(data: Path, out: Path, as_of: pd.Timestamp, extra: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """One night: `lstm-forecast run` as of `as_of` (models live under `out/models/`)."""
    cmd = [str(CLI), "run", "--input", str(data), "--output", str(out), "--freq", "h", "--horizon", str(H),
           "--season", str(SEASON), "--as-of", as_of.isoformat(), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, what: str) -> tuple[int, str]:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what}: lstm-forecast failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    return proc.returncode, stdout + stderr


def committed(out: Path) -> dict[str, dict]:
    """Committed manifests under `out`, by run id."""
    found = {}
    for path in sorted((out / "runs").glob("*/manifest.json")):
        m = json.loads(path.read_text())
        if m.get("status") == "succeeded":
            found[m["run_id"]] = m
    return found


def newest_run(out: Path, before: set[str]) -> dict:
    new = {k: v for k, v in committed(out).items() if k not in before}
    if len(new) != 1:
        raise SystemExit(f"expected one new committed run under {out}, found {sorted(new)}")
    return next(iter(new.values()))


def predictions(out: Path, run_id: str) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions" / f"run={run_id}", columns=["series_id", "ds", "yhat"])


def decision_of(manifest: dict) -> dict:
    """The served model's retrain record (action, scores, promoted) from the manifest."""
    models = manifest.get("models") or [{}]
    return models[0].get("retrain") or {}


def score_night(frame: pd.DataFrame, as_of: pd.Timestamp, preds: pd.DataFrame, work: Path, name: str) -> float:
    history = frame[frame["ds"] <= as_of]
    test = frame[(frame["ds"] > as_of) & (frame["ds"] <= as_of + pd.Timedelta(hours=H))]
    hp, tp = work / f"{name}-history.parquet", work / f"{name}-test.parquet"
    history.to_parquet(hp, index=False)
    test.to_parquet(tp, index=False)
    return float(score(hp, tp, preds, SEASON, work, name)["owa"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "data" / "m4-hourly"))
    p.add_argument("--nights", type=int, default=10)
    p.add_argument("--series", type=int, default=None, help="first N series only (quick checks)")
    p.add_argument("--keep", default=None, help="folder for inputs and outputs (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.nights < 7:
        raise SystemExit("--nights must be at least 7 (nights 5 and 6 are missed, night 7 catches up)")

    frame = pd.read_parquet(Path(a.data) / "train.parquet")
    if a.series:
        keep = sorted(frame["series_id"].unique())[: a.series]
        frame = frame[frame["series_id"].isin(keep)]
    frame = frame.sort_values(["series_id", "ds"]).reset_index(drop=True)
    work = workdir(a.keep)
    data = work / "hourly.parquet"
    frame.to_parquet(data, index=False)  # the whole file: --as-of decides what each night reads
    ends = night_ends(frame["ds"].max(), a.nights)
    load_before, t0 = machine_load(), time.perf_counter()

    rows: list[dict] = []
    owa: dict[str, dict[int, float]] = {"warm": {}, "full": {}, "frozen": {}}
    train_s: dict[str, dict[int, float]] = {"warm": {}, "full": {}, "frozen": {}}
    step_s: dict[str, dict[int, float]] = {"warm": {}, "full": {}, "frozen": {}}
    skipped: list[str] = []
    gate: list[dict] = []
    revisions: list[dict] = []
    runs_after_outage = 0
    for way in ("warm", "full", "frozen"):
        out = work / way / "output"
        for night, as_of in enumerate(ends, start=1):
            if way == "warm" and night in MISSED:
                continue
            extra = {"full": ["--set", "retrain=always"],
                     "frozen": [] if night == 1 else ["--set", "retrain=never"]}.get(way, [])
            before = set(committed(out)) if out.exists() else set()
            finish(run_night(data, out, as_of, extra), f"{way} night {night}")
            m = newest_run(out, before)
            if way == "warm" and night == MISSED[-1] + 1:
                runs_after_outage = len(set(committed(out)) - before)
            d = decision_of(m)
            # seconds trained in this run (a warm start's fine-tuning; a full training), and the whole step
            t = float(d.get("training_seconds") or 0.0)
            step = timings(m).get("train_or_load_model", float("nan"))
            train_s[way][night] = t
            step_s[way][night] = step
            if way == "warm" and night == MISSED[-1] + 1:
                skipped = list((m.get("schedule") or {}).get("skipped_slots") or [])
            owa[way][night] = score_night(frame, as_of, predictions(out, m["run_id"]), work, f"{way}-{night}")
            if way == "warm":
                gate.append({"night": night, "tolerance": float(m["config"].get("promotion_tolerance", 0.0)), **d})
                rev = m.get("revisions") or {}
                if rev:
                    revisions.append({"night": night, **rev})
            rows.append({"way": way, "night": night, "as_of": as_of.isoformat(), "owa": owa[way][night],
                         "train_s": t, "step_s": step, "action": d.get("action", ""),
                         "promoted": d.get("promoted")})
            print(f"{way:6} night {night:2} as_of {as_of}  OWA {owa[way][night]:.3f}  trained {t:6.1f} s  "
                  f"step {step:6.1f} s  {d.get('action', '')} {d.get('champion_score', '')} "
                  f"{d.get('challenger_score', '')} promoted={d.get('promoted')}", file=sys.stderr, flush=True)

    common = sorted(set(owa["warm"]) & set(owa["full"]) & set(owa["frozen"]))
    mean = {w: float(np.mean([owa[w][n] for n in common])) for w in owa}
    # a warm-start night: every warm-replay night after the first (a fine-tuning, or a load when data are unchanged)
    warm_nights = [train_s["warm"][g["night"]] for g in gate if g["night"] > 1]
    warm_steps = [step_s["warm"][g["night"]] for g in gate if g["night"] > 1]
    # the gate decides warm starts only: a first (full) training is champion without a challenger to beat
    promotions = [g for g in gate if g.get("action") == "warm" and g.get("promoted")]
    rejections = [g for g in gate if g.get("action") == "warm" and not g.get("promoted")]
    bad = [g for g in promotions
           if not (g["challenger_score"] <= g["champion_score"] * (1 + g.get("tolerance", 0.0)))]
    rev50 = [r.get("p50") for r in revisions if r.get("p50") is not None]
    rev95 = [r.get("p95") for r in revisions if r.get("p95") is not None]
    result = {
        "warm_train_s_median": median(warm_nights) if warm_nights else None,
        "full_train_s_median": median(train_s["full"].values()),
        "owa_warm": mean["warm"], "owa_full": mean["full"], "owa_frozen": mean["frozen"],
        "promotions": len(promotions), "rejections": len(rejections), "bad_promotions": len(bad),
        "runs_after_outage": runs_after_outage,
        "revision_p50": float(np.median(rev50)) if rev50 else None,
        "revision_p95": float(np.median(rev95)) if rev95 else None,
        "nights": a.nights, "missed": list(MISSED), "scored_nights": common,
        "skipped_slots": skipped, "expected_skipped": [ends[n - 1].isoformat() for n in MISSED],
        "warm_step_s_median": median(warm_steps) if warm_steps else None,
        "full_step_s_median": median(step_s["full"].values()),
        "actions": {w: [r["action"] for r in rows if r["way"] == w] for w in ("warm", "full", "frozen")},
        "seconds": round(time.perf_counter() - t0, 1), "load": f"before: {load_before}; after: {machine_load()}",
    }
    print(f"\nM4 hourly, {frame['series_id'].nunique()} series, {a.nights} nights (H {H}, 24 h apart), "
          f"scored on nights {common}")
    print(f"{'way':8}{'mean OWA':>10}{'median trained s':>18}{'median step s':>15}")
    for w in ("warm", "full", "frozen"):
        if w == "warm":
            med, stp = result["warm_train_s_median"], result["warm_step_s_median"]
        else:
            med, stp = median(train_s[w].values()), median(step_s[w].values())
        print(f"{w:8}{mean[w]:>10.3f}{(med if med is not None else float('nan')):>18.1f}"
              f"{(stp if stp is not None else float('nan')):>15.1f}")
    print(f"after the outage: one run for night {MISSED[-1] + 1}, its manifest names skipped slots {skipped}")
    print(f"promotions {len(promotions)}, rejections {len(rejections)}, bad promotions {len(bad)}, "
          f"runs after the outage {runs_after_outage}; revision p50 {result['revision_p50']}, "
          f"p95 {result['revision_p95']}; {result['seconds']} s; {result['load']}")
    if a.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
