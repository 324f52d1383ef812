"""Properties over random inputs (hypothesis): finite tables never crash train, score, encode or sample; scores
inside the training range are finite; and wherever training is interrupted, resuming gives the same weights.

The examples are few and derandomised (the same on every run), and the recipes tiny, so the file runs in seconds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.training import TrainingInterrupted
from tests.helpers import SignalAt, manifold_table, run, same_weights, tiny_recipe, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

FEW = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

#: Refusals a finite table may meet; anything else that escapes is a crash.
EXPECTED_REFUSALS = ("constant", "float32")


@st.composite
def finite_tables(draw, max_rows: int = 48, max_columns: int = 4) -> pd.DataFrame:
    """Finite tables of every kind hypothesis can think of: repeated or integer values, scales from 1e-6 to 1e6,
    offsets, outliers."""
    rows = draw(st.integers(3, max_rows))
    columns = draw(st.integers(2, max_columns))
    elements = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)
    values = draw(arrays(np.float64, (rows, columns), elements=elements))
    scales = draw(arrays(np.float64, columns, elements=st.sampled_from([1e-6, 1e-2, 1.0, 1e2, 1e6])))
    offsets = draw(arrays(np.float64, columns, elements=st.sampled_from([0.0, -5.0, 1e4])))
    return pd.DataFrame(values * scales + offsets, columns=[f"c{j}" for j in range(columns)])


def tiny_estimator() -> FunnelDensity:
    recipe = tiny_recipe("f-nsf", ansatz="gaussian", flow_steps=2, funnel_level=0, hidden_features=16)
    return FunnelDensity(recipe, device="cpu", steps=4, eval_every=2, batch_size=32)


def fit_or_refuse(table: pd.DataFrame) -> FunnelDensity | None:
    """The fitted estimator, or None when the table is refused for a reason a finite table may have."""
    try:
        return tiny_estimator().fit(table)
    except UserError as error:
        assert any(reason in str(error) for reason in EXPECTED_REFUSALS), error
        assert "\n" not in str(error)
        return None


@FEW
@given(table=finite_tables())
def test_finite_tables_train_score_encode_and_sample_without_crashing(table):
    model = fit_or_refuse(table)
    if model is None:
        return
    log_prob = model.score_samples(table)
    latent = model.transform(table)
    rows = model.sample(5, random_state=0)
    assert log_prob.shape == (len(table),) and latent.shape == (len(table), model.latent_dim_)
    assert rows.shape == (5, table.shape[1]) and np.isfinite(np.asarray(rows)).all() and np.isfinite(latent).all()


@FEW
@given(table=finite_tables(), where=st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_the_score_is_finite_everywhere_inside_the_training_range(table, where):
    model = fit_or_refuse(table)
    if model is None:
        return
    low, high = table.min().to_numpy(), table.max().to_numpy()
    corners = np.array([low + w * (high - low) for w in where])  # points of the training data's bounding box
    inside = pd.DataFrame(np.vstack([table.to_numpy(), corners]), columns=table.columns)
    assert np.isfinite(model.score_samples(inside)).all()


@settings(FEW, max_examples=5)
@given(table=finite_tables(max_rows=24, max_columns=3))
def test_finite_tables_through_the_command_line_exit_0_or_2_and_never_crash(table, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-property")
    recipe = write_recipe(folder)
    table.to_csv(folder / "data.csv", index=False)
    trained = run("train", folder / "data.csv", "--recipe", recipe, "--out", folder / "m", "--steps", "3", "-q")
    assert trained.exit_code in (0, 2) and "Traceback" not in trained.output, trained.output
    if trained.exit_code == 2:
        assert len(trained.stderr.strip().splitlines()) == 1
        return
    scored = run("score", folder / "m", folder / "data.csv", "--json")
    assert scored.exit_code == 0, scored.output
    assert math.isfinite(json.loads(scored.stdout)["mean_log_prob"])
    assert run("encode", folder / "m", folder / "data.csv", "-o", folder / "z.csv").exit_code == 0
    assert run("sample", folder / "m", "-n", "4", "-o", folder / "s.csv", "--seed", "1").exit_code == 0
    assert np.isfinite(pd.read_csv(folder / "s.csv").to_numpy()).all()


@pytest.fixture(scope="module")
def uninterrupted():
    table = manifold_table(160)
    return table, tiny_estimator().set_params(steps=12, eval_every=3).fit(table)


@settings(FEW, max_examples=6)
@given(step=st.integers(1, 12), every=st.sampled_from([0, 2, 5]))
def test_wherever_training_is_interrupted_resuming_gives_the_same_weights(step, every, uninterrupted, tmp_path_factory):
    table, whole = uninterrupted
    folder = tmp_path_factory.mktemp("resume-property")
    with pytest.raises(TrainingInterrupted):
        tiny_estimator().set_params(steps=12, eval_every=3).fit(
            table, callback=SignalAt(step), checkpoint_dir=folder, checkpoint_every=every
        )
    resumed = tiny_estimator().set_params(steps=12, eval_every=3).fit(table, checkpoint_dir=folder, resume=True)
    assert same_weights(resumed.model_, whole.model_)
    assert torch.equal(torch.as_tensor(resumed.score_samples(table)), torch.as_tensor(whole.score_samples(table)))
