"""Shared fixtures: small tables, one torch thread, and a tiny model trained once per module that asks for it.

Helpers that are not fixtures (tiny recipes, the tables, running a command) are in tests/helpers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from funnelcli.models.flow import FunnelFlow
from tests.helpers import manifold_table, run, write_recipe

# `make test` runs one pytest-xdist worker per core: each then computes on one thread (and so do the commands it
# starts), because two workers of two threads each on two cores wait for each other far more than they gain.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


#: The files that take longest, run first: pytest-xdist's ``--dist loadfile --no-loadscope-reorder`` (make test)
#: hands out whole files in the order they are collected, so a long file collected late keeps one worker busy
#: after the other has finished. Longest first is the classic cure (measured 2026-12-03 on 2 idle cores: about
#: 28, 27, 25, 24, 22, 16 and 16 seconds for the first seven, of about 355 in all). Without the flag, xdist
#: orders files by their number of tests instead.
LONGEST_FIRST = (
    "tests/test_sweep.py",
    "tests/evaluation/test_evaluate.py",
    "tests/models/test_models.py",
    "tests/training/test_distributed.py",
    "tests/test_sweep_choice.py",
    "tests/training/test_signals.py",
    "tests/models/test_bundled_recipes.py",
    "tests/models/test_conditional.py",
    "tests/cli/test_image_report_cli.py",
    "tests/models/test_choice.py",
    "tests/models/test_family_recipes.py",
    "tests/test_hostile_outputs.py",
    "tests/models/test_image_families.py",
    "tests/data/test_dequantize.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    root = Path(config.rootpath)

    def position(item) -> int:
        return rank.get(Path(item.path).relative_to(root).as_posix(), len(rank))

    items.sort(key=position)  # stable: the other files keep their order


@pytest.fixture
def table() -> pd.DataFrame:
    return manifold_table()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine threads that wait for each other lose a lot.

    A module that trains tiny models asks for it in every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding ``tiny.toml`` (helpers.RECIPE) and ``data.csv`` (300 rows of the manifold table)."""
    root = tmp_path_factory.mktemp("robust")
    write_recipe(root)
    manifold_table(300).to_csv(root / "data.csv", index=False)
    return root


@pytest.fixture(scope="module")
def model(workdir) -> Path:
    """``workdir/model``: a model folder that `funnel train` wrote from workdir's recipe and data."""
    result = run("train", workdir / "data.csv", "--recipe", workdir / "tiny.toml", "--out", workdir / "model", "-q")
    assert result.exit_code == 0, result.output
    return workdir / "model"


@pytest.fixture
def nan_after(monkeypatch):
    """Make every training-mode log-likelihood NaN from the given training step on (validation stays sane)."""

    def install(first_bad_step: int):
        original = FunnelFlow.log_prob
        calls = {"train": 0}

        def log_prob(self, x):
            value = original(self, x)
            if self.training:
                calls["train"] += 1
                if calls["train"] >= first_bad_step:
                    return value * float("nan")
            return value

        monkeypatch.setattr(FunnelFlow, "log_prob", log_prob)

    return install
