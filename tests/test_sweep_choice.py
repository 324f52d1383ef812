"""The sweep's choice on tables with a known intrinsic dimension lands within one of it.

Apart from the other sweep tests (tests/test_sweep.py) because these train the most: a file is the unit the
test runners share out, and on its own it runs beside them.
"""

from __future__ import annotations

import pytest

from funnelcli import sweep as sweeping
from funnelcli.data.synthetic import near_surface
from tests.test_sweep import tiny


@pytest.mark.parametrize(("dim", "latent"), [(8, 2), (16, 3), (32, 6)])
def test_the_choice_lies_within_one_of_the_intrinsic_dimension(dim, latent):
    # Rows within 0.05 of a gently curved surface, rotated into every column. (On a flat one the dropped
    # directions are Gaussian given the kept ones, so a Gaussian ansatz models them and any size will do.)
    train, _ = near_surface(2000, dim, latent, noise=0.05, curvature=0.3, seed=0)
    validation, _ = near_surface(1000, dim, latent, noise=0.05, curvature=0.3, seed=1)
    sizes = [k for k in sweeping.latent_ladder(dim) if abs(k - latent) <= 2]  # the ladder, cut to a test's budget
    # As the sweep trains it, in batches of 128: the same choices as 256 (3, 4 and 6) in 15% less time.
    recipe = sweeping.with_sweep_defaults(tiny(400).with_overrides(batch_size=128))
    result = sweeping.run_sweep(
        train, validation, recipe=recipe, sizes=sizes, options={"device": "cpu"}, full=False, baselines=False
    )
    assert abs(result.chosen_latent_dim - latent) <= 1, [(lv.latent_dim, lv.val_log_prob) for lv in result.levels]
