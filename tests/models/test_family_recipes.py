"""Every tabular family has a bundled recipe by its name that fits any table, and `funnel recipes` lists every
family's recipes under it (the image families' recipes, image and f-image, fit pixel tables of a given shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelcli.models.recipe import FAMILIES, bundled_recipes, load_recipe
from tests.helpers import run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

#: The general recipes sized for small tables that mirror small-nsf and small-f-nsf for Glow.
SMALL_GLOW = {"small-glow": "glow", "small-f-glow": "f-glow"}
#: Few columns (a funnel on 2 keeps 1), a middling table, and a wide one.
WIDTHS = (2, 7, 60)
#: The families whose recipe by their name fits any table; an image family needs a pixel table of its shape.
TABULAR = [name for name, family in FAMILIES.items() if not family.image]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[int, Path]:
    """A CSV of 100 correlated rows for each width in WIDTHS."""
    root = tmp_path_factory.mktemp("widths")
    rng = np.random.default_rng(0)
    paths = {}
    for width in WIDTHS:
        rows = rng.normal(size=(100, 2)) @ rng.normal(size=(2, width)) + 0.1 * rng.normal(size=(100, width))
        paths[width] = root / f"table{width}.csv"
        pd.DataFrame(rows, columns=[f"x{i}" for i in range(width)]).to_csv(paths[width], index=False)
    return paths


def trains_and_scores(recipe: str, table: Path, folder: Path) -> np.ndarray:
    """Train ``recipe`` 3 steps on ``table`` through the CLI, score the table with the model folder, and return
    the scores."""
    trained = run(
        "train", table, "--recipe", recipe, "--steps", "3", "--batch-size", "32", "--device", "cpu",
        "--out", folder / "model", "--quiet",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    scored = run("score", folder / "model", table, "-o", folder / "scores.csv", "--device", "cpu")
    assert scored.exit_code == 0, scored.output
    return pd.read_csv(folder / "scores.csv")["log_prob"].to_numpy()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("family", TABULAR)
def test_the_recipe_named_after_a_family_trains_on_any_width_and_scores_finite(family, width, tables, tmp_path):
    scores = trains_and_scores(family, tables[width], tmp_path)
    assert scores.shape == (100,) and np.isfinite(scores).all()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(SMALL_GLOW))
def test_the_small_glow_recipes_train_on_any_width_and_score_finite(name, width, tables, tmp_path):
    scores = trains_and_scores(name, tables[width], tmp_path)
    assert scores.shape == (100,) and np.isfinite(scores).all()


@pytest.mark.parametrize("family", TABULAR)
def test_the_recipe_named_after_a_family_is_of_that_family_and_fits_any_width(family):
    recipe = load_recipe(family)
    assert recipe.family == family and recipe.input_dim is None


@pytest.mark.parametrize("name", list(SMALL_GLOW))
def test_the_small_glow_recipes_mirror_small_nsf_and_small_f_nsf(name):
    glow, spline = load_recipe(name), load_recipe(name.replace("glow", "nsf"))
    assert glow.family == SMALL_GLOW[name] and glow.input_dim is None
    assert glow.training == spline.training
    # The mixture base was measured for the spline recipes only (benchmarks/RESULTS.md, "Small tables").
    for field in (f for f in glow.fields if f not in ("base", "base_components")):
        assert getattr(glow.model, field) == getattr(spline.model, field), field


def listing_by_family() -> dict[str, list[str]]:
    """The recipe names under each family heading of `funnel recipes`, in the order shown."""
    result = run("recipes")
    assert result.exit_code == 0, result.output
    groups: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line.strip() and not line.startswith(" "):
            heading = line.rstrip(":")
            groups[heading] = []
        elif line.strip():
            groups[heading].append(line.split()[0])
    return groups


def test_recipes_shows_a_heading_per_family_in_the_order_of_the_families():
    assert list(listing_by_family()) == list(FAMILIES)


def test_recipes_lists_every_bundled_recipe_once_under_its_family():
    groups = listing_by_family()
    assert sorted(name for names in groups.values() for name in names) == sorted(bundled_recipes())
    for family, names in groups.items():
        assert all(load_recipe(name).family == family for name in names), family


@pytest.mark.parametrize("name", ["glow", "f-glow", "f-mlp", "vae", "small-glow", "small-f-glow"])
def test_recipes_lists_the_family_recipes_under_their_family(name):
    assert name in listing_by_family()[load_recipe(name).family]


@pytest.mark.parametrize("family", TABULAR)
def test_recipes_lists_a_family_s_own_recipe_first_then_its_small_ones(family):
    names = listing_by_family()[family]
    small = [name for name in names if name.startswith("small-")]
    assert names[0] == family
    assert names[1 : 1 + len(small)] == small


def test_recipes_show_still_prints_the_recipe_text():
    shown = run("recipes", "show", "f-glow")
    assert shown.exit_code == 0
    assert shown.stdout.startswith(bundled_recipes()["f-glow"].read_text().rstrip() + "\n# pass --dim D")
