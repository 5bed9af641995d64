"""The bundled default dataset: small synthetic hourly series written to local storage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def make_series(n_series: int = 24, length: int = 24 * 28, freq: str = "h", season: int = 24,
                seed: int = 7, start: str = "2026-01-01") -> pd.DataFrame:
    """Daily-seasonal series with trend, weekly swing and noise, at different levels."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for i in range(n_series):
        level = rng.uniform(20, 200)
        amp = rng.uniform(0.1, 0.4) * level
        phase = rng.uniform(0, 2 * np.pi)
        trend = rng.normal(0, 0.002) * level * t
        weekly = 0.05 * level * np.sin(2 * np.pi * t / (season * 7))
        y = level + amp * np.sin(2 * np.pi * t / season + phase) + weekly + trend + rng.normal(0, 0.05 * level, length)
        frames.append(pd.DataFrame({"series_id": f"demo-{i:03d}", "ds": pd.date_range(start, periods=length, freq=freq),
                                    "y": y.astype("float64")}))
    out = pd.concat(frames, ignore_index=True)
    out["series_id"] = out["series_id"].astype("string")
    return out


def write_demo_dataset(path: str | Path) -> Path:
    """Write the demo dataset (`make_series()`) to the local Parquet file `path`, creating its folder; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_series().to_parquet(path, index=False)
    return path


def seed(url: str) -> str:
    """Write the demo dataset to any fsspec URL (s3://bucket/series/demo.parquet...) unless it is there."""
    from lstm_core.atomic import write_parquet
    from lstm_core.location import filesystem

    fs, path = filesystem(url)
    if fs.exists(path):
        return f"{url} exists; left as it is"
    write_parquet(fs, path, make_series())
    return f"wrote the demo dataset (24 hourly series, 4 weeks) to {url}"


if __name__ == "__main__":  # python -m flows.demo_data s3://lake/series/demo.parquet (docker-compose seed-data)
    import sys

    print(seed(sys.argv[1] if len(sys.argv) > 1 else "data/demo/series.parquet"))
