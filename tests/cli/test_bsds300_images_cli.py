"""BSDS300 as images: its 63 columns are 8x8 patches less their last pixel. `funnel data prepare bsds300` then
`funnel train --image-shape 8x8` with the funnel family trains an exact density over the 63 values (the first
squeeze is a funnel whose ansatz leaves the missing pixel out, docs/maths.md section 7); scoring, sampling and the
report's image grids work on the 63 columns, and the baseline family is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.data.test_prepare import write_bsds300
from tests.helpers import assert_one_line_error, run

#: A small f-nsf-image recipe: two levels of one step, so the test trains in seconds.
TINY_FUNNEL_IMAGE = """
family = "f-nsf-image"
[model]
levels = 2
flow_steps = 1
hidden_features = 8
bins = 4
tail_bound = 3.0
ansatz_hidden_features = 8
[training]
batch_size = 64
steps = 30
eval_every = 10
"""


@pytest.fixture(scope="module")
def bsds300(tmp_path_factory) -> Path:
    """A prepared BSDS300 folder from a fake archive (300 / 40 / 60 rows of 63 values)."""
    root = tmp_path_factory.mktemp("bsds300")
    write_bsds300(root / "raw")
    (root / "tiny-image.toml").write_text(TINY_FUNNEL_IMAGE)
    result = run("data", "prepare", "bsds300", root / "raw", "-o", root / "prepared")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def model(bsds300) -> Path:
    out = bsds300 / "model"
    recipe = bsds300 / "tiny-image.toml"
    result = run("train", bsds300 / "prepared", "--image-shape", "8x8", "--recipe", recipe, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_bsds300_trains_as_8x8_images_less_their_last_pixel(model):
    document = json.loads((model / "model.json").read_text())
    assert document["input_dim"] == 63 and document["recipe"]["model"]["image_shape"] == [8, 8, 1]
    assert document["latent_dim"] == 16


def test_its_scores_are_finite_log_densities_of_the_63_values(bsds300, model):
    result = run("score", model, bsds300 / "prepared", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["input_dim"] == 63 and np.isfinite(document["mean_log_prob"])


def test_its_samples_have_the_63_columns(bsds300, model):
    out = bsds300 / "drawn.csv"
    result = run("sample", model, "-n", "8", "-o", out, "--seed", "0")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out).shape == (8, 63)


def test_its_report_draws_the_patches_as_8x8_images(bsds300, model):
    result = run("report", model, bsds300 / "prepared", "-o", bsds300 / "report")
    assert result.exit_code == 0, result.output
    assert (bsds300 / "report" / "image_samples.png").stat().st_size > 0
    assert (bsds300 / "report" / "reconstructions.png").stat().st_size > 0


def test_the_baseline_image_family_refuses_them_and_names_the_funnel_family(bsds300):
    result = run("train", bsds300 / "prepared", "--image-shape", "8x8", "--recipe", "image", "--out", bsds300 / "x")
    assert_one_line_error(result, "--image-shape 8x8 is 64 pixels", "BSDS300", "f-nsf-image")
    assert not (bsds300 / "x").exists()
