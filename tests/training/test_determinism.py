"""The same seed, data and device give the same bytes; another seed gives other weights; training leaves the
caller's random state alone.
"""

from __future__ import annotations

import pytest
import torch

from funnelcli import artifact
from tests.helpers import RECIPE, manifold_table, run, tiny_estimator, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_leaves_the_callers_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_estimator(steps=3).fit(manifold_table(100))
    assert torch.equal(torch.rand(3), expected)


def test_the_same_seed_data_and_device_give_byte_identical_weights(workdir, tmp_path):
    recipe = write_recipe(tmp_path, RECIPE.replace('ansatz = "gaussian"', 'ansatz = "gaussian"\ndropout = 0.1'))
    outputs = []
    for name in ("first", "second"):
        torch.rand(7)  # whatever the process did before must not matter
        out = tmp_path / name
        result = run("train", workdir / "data.csv", "--recipe", recipe, "--out", out, "--device", "cpu", "-q")
        assert result.exit_code == 0, result.output
        outputs.append((out / artifact.WEIGHTS).read_bytes())
    assert outputs[0] == outputs[1]


def test_another_seed_gives_other_weights(workdir, tmp_path):
    weights = []
    for seed in ("0", "1"):
        out = tmp_path / seed
        args = ["train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", out, "--steps", "3"]
        assert run(*args, "--seed", seed, "-q").exit_code == 0
        weights.append((out / artifact.WEIGHTS).read_bytes())
    assert weights[0] != weights[1]
