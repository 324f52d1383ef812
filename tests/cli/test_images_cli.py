"""Image-shaped tables on the command line: --image-shape, --bits and --source-bits, bits per dimension, and
`funnel data patches`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cli.test_cli import RECIPE
from tests.helpers import assert_one_line_error, run


def _has_image_recipe() -> bool:
    from funnelcli.models import load_recipe
    from funnelcli.models.recipe import ModelSettings

    if "image_shape" not in getattr(ModelSettings, "__dataclass_fields__", {}):
        return False
    try:
        load_recipe("image")
    except Exception:  # noqa: BLE001 - the image families are built beside this code; until then, skip
        return False
    return True


needs_image_shape = pytest.mark.skipif(not _has_image_recipe(), reason="the image recipe and model.image_shape")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "tiny.toml").write_text(RECIPE)
    result = run(
        "data", "patches", "--sklearn-samples", "-o", root / "patches.csv", "--size", "2", "--count", "400", "--gray"
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def pixel_model(workdir) -> Path:
    out = workdir / "pixels"
    result = run(
        "train",
        workdir / "patches.csv",
        "--recipe",
        workdir / "tiny.toml",
        "--bits",
        "5",
        "--source-bits",
        "8",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    return out


# -- funnel data patches ---------------------------------------------------------------------------------------


def test_patches_write_a_pixel_table_of_the_asked_shape(workdir):
    result = run(
        "data", "patches", "--sklearn-samples", "-o", workdir / "rgb.parquet", "--size", "4", "--count", "25", "--json"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["image_shape"] == [4, 4, 3] and document["rows"] == 25
    table = pd.read_parquet(workdir / "rgb.parquet")
    assert table.shape == (25, 48)
    assert list(table.columns) == [f"p{j}" for j in range(48)]
    assert table.to_numpy().min() >= 0 and table.to_numpy().max() <= 255


def test_patches_are_the_same_for_the_same_seed(workdir):
    paths = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        paths[name] = workdir / f"seeded-{name}.csv"
        args = ["--size", "3", "--count", "40", "--gray", "--seed", seed]
        assert run("data", "patches", "--sklearn-samples", "-o", paths[name], *args).exit_code == 0
    assert paths["a"].read_bytes() == paths["b"].read_bytes()
    assert paths["a"].read_bytes() != paths["c"].read_bytes()


def test_patches_from_an_image_file(workdir):
    from matplotlib import image as mpimg

    mpimg.imsave(workdir / "ramp.png", (np.arange(10 * 9 * 3) % 256).reshape(10, 9, 3).astype(np.uint8))
    result = run("data", "patches", workdir / "ramp.png", "-o", workdir / "ramp.csv", "--size", "5", "--count", "7")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(workdir / "ramp.csv").shape == (7, 75)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "give image files, or --sklearn-samples"),
        (("--sklearn-samples", "--size", "1000"), "smaller than a 1000x1000 patch"),
        (("--sklearn-samples", "--count", "0"), "--count must be"),
        (("missing.png",), "no such image file"),
        (("bad.png",), "is not an image"),
    ],
)
def test_patches_refuse_bad_inputs_in_one_line(workdir, args, fragment):
    (workdir / "bad.png").write_text("not a picture")
    out = workdir / "refused.csv"
    result = run("data", "patches", *[workdir / a if a.endswith(".png") else a for a in args], "-o", out)
    assert_one_line_error(result, fragment)
    assert not out.exists()


# -- train with a bit depth, and score in bits per dimension -----------------------------------------------------


def test_score_json_reports_bits_per_dimension_of_a_pixel_model(workdir, pixel_model):
    result = run("score", pixel_model, workdir / "patches.csv", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["bits"] == 5 and document["source_bits"] == 8
    expected = -document["mean_log_prob"] / (document["input_dim"] * np.log(2))
    assert document["bits_per_dim"] == pytest.approx(expected)
    assert 0 < document["bits_per_dim"] < 6  # a 5-bit pixel costs at most about 5 bits once fitted at all


def test_score_prints_bits_per_dimension_of_a_pixel_model(workdir, pixel_model):
    result = run("score", pixel_model, workdir / "patches.csv")
    assert result.exit_code == 0, result.output
    assert "bits/dim (5-bit pixels)" in result.stdout


def test_a_pixel_models_samples_are_pixels_of_its_depth(workdir, pixel_model):
    out = workdir / "drawn.csv"
    assert run("sample", pixel_model, "-n", "200", "-o", out, "--seed", "0").exit_code == 0
    values = pd.read_csv(out).to_numpy()
    assert np.array_equal(values, np.floor(values))
    assert values.min() >= 0 and values.max() <= 31


def test_scoring_refuses_values_that_are_not_pixels_of_the_source_depth(workdir, pixel_model):
    table = pd.read_csv(workdir / "patches.csv")
    table.iloc[3, 1] = 300
    table.to_csv(workdir / "too-bright.csv", index=False)
    result = run("score", pixel_model, workdir / "too-bright.csv")
    assert_one_line_error(result, "'p1' holds 300 at row 4", "not a pixel of 8 bits")


def test_train_refuses_pixels_beyond_the_stated_depth(workdir):
    result = run(
        "train", workdir / "patches.csv", "--recipe", workdir / "tiny.toml", "--bits", "5", "--out", workdir / "never"
    )
    assert_one_line_error(result, "not a pixel of 5 bits", "--bits")
    assert not (workdir / "never").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--bits", "17"), "--bits must be a whole number of bits in 1..16"),
        (("--source-bits", "8"), "needs --bits"),
        (("--bits", "8", "--source-bits", "5"), "must not exceed"),
    ],
)
def test_train_refuses_a_bad_bit_depth_in_one_line(workdir, args, fragment):
    result = run("train", workdir / "patches.csv", "--recipe", workdir / "tiny.toml", *args, "--out", workdir / "x")
    assert_one_line_error(result, fragment)


# -- --image-shape ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["8", "8x", "axb", "0x4", "2x2x2x2"])
def test_a_malformed_image_shape_is_refused_in_one_line(workdir, shape):
    result = run("train", workdir / "patches.csv", "--image-shape", shape, "--out", workdir / "x")
    assert_one_line_error(result, f"--image-shape {shape!r} is not HxW or HxWxC")


@needs_image_shape
def test_an_image_shape_that_does_not_match_the_columns_is_refused_in_one_line(workdir):
    result = run("train", workdir / "patches.csv", "--recipe", "image", "--image-shape", "3x3", "--out", workdir / "x")
    assert_one_line_error(result, "--image-shape 3x3 is 9 pixels;", "has 4 columns to model")


@needs_image_shape
def test_one_column_short_of_the_image_names_bsds300s_missing_pixel(workdir):
    table = pd.read_csv(workdir / "patches.csv").iloc[:, :3]
    table.to_csv(workdir / "three.csv", index=False)
    result = run("train", workdir / "three.csv", "--recipe", "image", "--image-shape", "2x2", "--out", workdir / "x")
    assert_one_line_error(result, "--image-shape 2x2 is 4 pixels", "BSDS300", "f-nsf-image")
