"""Issue 18's acceptance, end to end on scikit-learn's digits as 8x8 images: `funnel train digits.csv --image-shape
8x8 --bits 5 --recipe f-image` trains, `score` reports bits per dimension, `sample` writes pixel rows, and `report`
draws a grid of samples and a grid of reconstructions as images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import assert_one_line_error, run

#: PNG files start with these eight bytes.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """200 of the digits at 5 bits (their 0..16 intensities doubled, capped at 31), pixels p0..p63."""
    from sklearn.datasets import load_digits

    pixels = np.minimum(load_digits().data[:200].astype(int) * 2, 31)
    path = tmp_path_factory.mktemp("digits") / "digits.csv"
    pd.DataFrame(pixels, columns=[f"p{j}" for j in range(64)]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def digits_model(digits) -> Path:
    out = digits.parent / "model"
    result = run(
        "train", digits, "--image-shape", "8x8", "--bits", "5", "--recipe", "f-image", "--steps", "20", "--out", out
    )
    assert result.exit_code == 0, result.output
    return out


def test_score_reports_bits_per_dimension(digits, digits_model):
    result = run("score", digits_model, digits, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["bits"] == 5 and document["input_dim"] == 64
    assert document["bits_per_dim"] == pytest.approx(-document["mean_log_prob"] / (64 * np.log(2)))
    assert 0 < document["bits_per_dim"] < 6


def test_samples_are_5_bit_pixel_rows(digits, digits_model):
    out = digits.parent / "drawn.csv"
    result = run("sample", digits_model, "-n", "16", "-o", out, "--seed", "0")
    assert result.exit_code == 0, result.output
    values = pd.read_csv(out).to_numpy()
    assert values.shape == (16, 64)
    assert np.array_equal(values, np.floor(values)) and values.min() >= 0 and values.max() <= 31


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, read back by matplotlib."""
    from matplotlib import image as mpimg

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    return pixels.shape[1], pixels.shape[0]


@pytest.fixture(scope="module")
def digits_report(digits, digits_model) -> Path:
    out = digits.parent / "report"
    result = run("report", digits_model, digits, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_report_draws_the_sample_and_reconstruction_grids(digits_report):
    width, height = _png_size(digits_report / "image_samples.png")
    assert 0.8 < width / height < 1.25  # an 8x8 grid of square images
    width, height = _png_size(digits_report / "reconstructions.png")
    assert 1.5 < width / height < 2.5  # the rows' 8x8 grid beside their reconstructions' grid
    page = (digits_report / "index.html").read_text()
    assert 'src="image_samples.png"' in page and 'src="reconstructions.png"' in page


def test_a_tabular_report_has_no_image_grids_and_replaces_an_image_report_only_with_force(digits_report, tmp_path):
    from tests.cli.test_cli import RECIPE

    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(200, 3)), columns=list("abc")).to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "tiny.toml").write_text(RECIPE)
    trained = run("train", tmp_path / "table.csv", "--recipe", tmp_path / "tiny.toml", "--out", tmp_path / "m")
    assert trained.exit_code == 0, trained.output
    # An image report's grids are the report's own files: --force replaces them (drawing a second image report
    # to show it would cost seconds of figures), and the tabular report leaves none behind.
    shutil.copytree(digits_report, tmp_path / "report")
    args = ("report", tmp_path / "m", tmp_path / "table.csv", "-o", tmp_path / "report")
    assert_one_line_error(run(*args), "already holds a report folder", "--force")
    result = run(*args, "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "index.html").exists()
    assert not (tmp_path / "report" / "image_samples.png").exists()
    assert not (tmp_path / "report" / "reconstructions.png").exists()
