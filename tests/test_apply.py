"""Scoring and encoding a file chunk by chunk gives what the whole table gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelcli.apply import RunningMean, encode_file, score_file
from funnelcli.estimator import FunnelDensity
from funnelcli.stats import mean_and_stderr
from tests.helpers import manifold_table, tiny_recipe


@pytest.fixture(scope="module")
def model() -> FunnelDensity:
    table = manifold_table(300).assign(count=np.random.default_rng(0).poisson(2, 300))
    return FunnelDensity(tiny_recipe("f-nsf"), steps=10, device="cpu").fit(table)


@pytest.fixture
def data(tmp_path) -> tuple[pd.DataFrame, object]:
    table = manifold_table(250, seed=3).assign(count=np.random.default_rng(1).poisson(2, 250), id=range(250))
    path = tmp_path / "rows.parquet"
    table.to_parquet(path)
    return table, path


def test_chunked_scores_equal_whole_table_scores_including_dequantized_columns(model, data, tmp_path):
    table, path = data
    summary = score_file(model, path, output=tmp_path / "s.parquet", batch_rows=64)
    written = pd.read_parquet(tmp_path / "s.parquet")
    whole = model.score_samples(table[model.columns_])
    # Equal up to float32 rounding between batch sizes; misaligned dequantization noise would differ by ~1 nat.
    np.testing.assert_allclose(written["log_prob"].to_numpy(), whole, atol=1e-5, rtol=0)
    mean, stderr = mean_and_stderr(whole)
    assert summary.count == 250
    assert summary.mean == pytest.approx(mean, rel=1e-12) and summary.stderr == pytest.approx(stderr, rel=1e-9)


def test_chunked_encoding_equals_whole_table_encoding_and_passes_columns_through(model, data, tmp_path):
    table, path = data
    rows = encode_file(model, path, tmp_path / "z.csv", keep=["id"], batch_rows=64)
    written = pd.read_csv(tmp_path / "z.csv")
    assert rows == 250 and list(written.columns) == ["id", "z0", "z1"]
    # float32 networks: a batch of 64 and one of 250 agree to rounding, not bit for bit
    np.testing.assert_allclose(written[["z0", "z1"]].to_numpy(), model.transform(table[model.columns_]), atol=1e-6)
    assert written["id"].tolist() == list(range(250))


def test_the_running_mean_matches_the_batch_mean_and_standard_error():
    values = np.random.default_rng(2).normal(3.0, 2.0, size=1001)
    running = RunningMean()
    for start in range(0, 1001, 100):
        running.add(values[start : start + 100])
    mean, stderr = mean_and_stderr(values)
    assert running.mean == pytest.approx(mean, rel=1e-12) and running.stderr == pytest.approx(stderr, rel=1e-12)
