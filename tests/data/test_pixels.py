"""Pixel tables: image shapes, bit depths and their dequantization, bits per dimension, and cutting patches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from funnelcli.data.pixels import cut_patches, parse_image_shape, pixel_columns, read_image, shape_text
from funnelcli.errors import UserError
from funnelcli.evaluation.metrics import bits_per_dim
from funnelcli.preparation import check_bits, pixel_values, prepare_rows
from tests.helpers import assert_one_line_error, run

# -- image shapes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"), [("8x8", [8, 8, 1]), ("32x32x3", [32, 32, 3]), (" 4 X 2 ", [4, 2, 1]), ("1x2", [1, 2, 1])]
)
def test_an_image_shape_reads_as_height_width_channels(text, shape):
    assert parse_image_shape(text) == shape


@pytest.mark.parametrize("text", ["8", "8x", "x8", "8x8x", "0x8", "8x8x3x2", "8by8", "-8x8", "8.5x8", ""])
def test_a_malformed_image_shape_is_refused_in_one_line(text):
    with pytest.raises(UserError, match="--image-shape") as caught:
        parse_image_shape(text)
    assert "\n" not in str(caught.value)


def test_an_empty_image_shape_flag_is_refused_in_one_line_not_read_as_a_square_grey_image(tmp_path):
    # An empty recipe image_shape means "a square grey image"; an empty flag must not fall through to that meaning.
    table = tmp_path / "pixels.csv"
    pd.DataFrame(np.zeros((8, 4)), columns=pixel_columns(4)).to_csv(table, index=False)
    result = run("train", table, "--image-shape", "", "--recipe", "image", "--output", tmp_path / "run")
    assert_one_line_error(result, "--image-shape ''", "8x8")
    assert not (tmp_path / "run").exists()


def test_a_shape_is_written_back_as_given():
    assert shape_text([8, 8, 1]) == "8x8"
    assert shape_text([32, 32, 3]) == "32x32x3"


# -- bit depths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "source_bits", "fragment"),
    [
        (0, None, "bits must be"),
        (17, None, "bits must be"),
        (True, None, "bits must be"),
        (None, 8, "needs bits"),
        (6, 5, "must not exceed"),
    ],
)
def test_a_bit_depth_out_of_range_is_refused(bits, source_bits, fragment):
    with pytest.raises(UserError, match=fragment):
        check_bits(bits, source_bits)


def test_the_n_bit_reduction_keeps_the_top_bits():
    frame = pd.DataFrame({"p0": [0.0, 7.0, 8.0, 255.0], "p1": [128.0, 129.0, 200.0, 31.0]})
    reduced = pixel_values(frame, 5, 8)
    np.testing.assert_array_equal(reduced.to_numpy(), frame.to_numpy() // 8)
    assert reduced.to_numpy().max() <= 31


@pytest.mark.parametrize("value", [0.5, -1.0, 32.0])
def test_a_value_that_is_not_a_pixel_of_the_depth_is_refused_naming_it(value):
    frame = pd.DataFrame({"p0": [1.0, 2.0], "p1": [3.0, value]})
    with pytest.raises(UserError, match=r"column 'p1' holds .* at row 2, which is not a pixel of 5 bits") as caught:
        pixel_values(frame, 5)
    assert "\n" not in str(caught.value)


def test_pixels_are_all_dequantized_even_a_constant_one():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(0, 32, size=(200, 3)).astype(float), columns=pixel_columns(3))
    frame["p0"] = 0.0  # a corner pixel that is always black: still a pixel, with density U[0, 1)
    validation = frame.iloc[:40].reset_index(drop=True)
    rows = prepare_rows(frame.iloc[40:], validation, seed=0, val_fraction=0.2, dequantize="none", dtypes={}, bits=5)
    assert rows.dequantized_columns == ("p0", "p1", "p2")
    assert rows.mask.all()
    # Dequantization round trip: the held-out rows are x + u with u in [0, 1), so rounding down gives x back.
    noisy = rows.held_out.to_numpy()
    np.testing.assert_array_equal(np.floor(noisy), validation.to_numpy())
    assert np.all(noisy - validation.to_numpy() >= 0)
    np.testing.assert_allclose(rows.std, np.sqrt(rows.train.std(ddof=0).to_numpy() ** 2 + 1 / 12))


# -- bits per dimension ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "dim"), [(1, 1), (5, 64), (8, 3072)])
def test_a_uniform_density_over_the_pixel_cube_is_bits_bits_per_dimension(bits, dim):
    # p(x) = 2^(-bits D) on [0, 2^bits)^D, so log p = -bits D ln 2 nats and -log2 p / D = bits exactly.
    log_prob = -dim * bits * math.log(2.0)
    assert bits_per_dim(log_prob, dim) == pytest.approx(bits, rel=1e-12)


# -- patches ---------------------------------------------------------------------------------------------------


def _ramp(height: int = 10, width: int = 12, channels: int = 3) -> np.ndarray:
    return (np.arange(height * width * channels) % 251).reshape(height, width, channels).astype(np.uint8)


def test_patches_are_row_major_with_channels_adjacent():
    image = _ramp()
    rows = cut_patches([("ramp", image)], size=4, count=30, seed=0)
    assert rows.shape == (30, 4 * 4 * 3)
    windows = {image[top : top + 4, left : left + 4].reshape(-1).tobytes() for top in range(7) for left in range(9)}
    assert all(row.tobytes() in windows for row in rows)


def test_the_same_seed_cuts_the_same_patches():
    images = [("a", _ramp()), ("b", 255 - _ramp())]
    first = cut_patches(images, size=3, count=50, seed=7)
    assert np.array_equal(first, cut_patches(images, size=3, count=50, seed=7))
    assert not np.array_equal(first, cut_patches(images, size=3, count=50, seed=8))


def test_a_patch_larger_than_an_image_is_refused():
    with pytest.raises(UserError, match=r"small is 10x12 pixels, smaller than a 11x11 patch"):
        cut_patches([("small", _ramp())], size=11, count=1)


def test_a_png_reads_back_as_its_8_bit_pixels(tmp_path):
    from matplotlib import image as mpimg

    pixels = _ramp(6, 5)
    mpimg.imsave(tmp_path / "ramp.png", pixels)
    assert np.array_equal(read_image(tmp_path / "ramp.png"), pixels)
    grey = read_image(tmp_path / "ramp.png", gray=True)
    assert grey.shape == (6, 5, 1)


def test_a_file_that_is_not_an_image_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(UserError, match="is not an image") as caught:
        read_image(tmp_path / "notes.png")
    assert "\n" not in str(caught.value)
