"""The report's image grids (`plots.image_grid`) and which models get them (`report.image_shape`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from funnelcli.evaluation import plots  # noqa: E402
from funnelcli.evaluation.report import image_shape  # noqa: E402


def _drawn(figure) -> np.ndarray:
    """The figure's RGBA pixels, (height, width, 4)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())


@pytest.mark.parametrize("shape", [(4, 4, 1), (4, 4, 3), (4, 2, 2)])
def test_a_grid_draws_any_channel_count_as_a_square_of_images(shape):
    rows = np.random.default_rng(0).integers(0, 32, size=(16, int(np.prod(shape))))
    pixels = _drawn(plots.image_grid({"samples": rows}, shape, (0, 31), columns=4))
    height, width = pixels.shape[:2]
    assert 0.6 < width / height < 1.6


def test_panels_sit_side_by_side_and_values_outside_the_range_are_clipped():
    rows = np.linspace(-50, 80, 9 * 16).reshape(9, 16)
    pixels = _drawn(plots.image_grid({"rows": rows, "decoded": rows}, (4, 4, 1), (0, 31), columns=3))
    height, width = pixels.shape[:2]
    assert 1.5 < width / height < 2.5


def _estimator(family: str, image_shape: tuple, columns: int):
    recipe = SimpleNamespace(family=family, model=SimpleNamespace(image_shape=image_shape))
    return SimpleNamespace(recipe_=recipe, columns_=[f"p{j}" for j in range(columns)])


@pytest.mark.parametrize(
    ("family", "given", "columns", "expected"),
    [
        ("f-nsf-image", (8, 8), 64, (8, 8, 1)),
        ("nsf-image", (), 16, (4, 4, 1)),
        ("f-nsf", (2, 2, 3), 12, (2, 2, 3)),
        ("f-nsf", (), 16, None),
        ("f-nsf", (3, 3), 8, None),
    ],
)
def test_a_model_is_drawn_as_images_when_it_has_an_image_shape(family, given, columns, expected):
    assert image_shape(_estimator(family, given, columns)) == expected
