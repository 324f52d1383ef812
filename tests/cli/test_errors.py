"""Errors as data: the library names Python's parameters, the CLI names the flags that set them."""

from __future__ import annotations

import pickle

import pytest

from funnelcli.cli.errors import FLAGS, cli_message
from funnelcli.errors import (
    PHRASED,
    BadValue,
    ConstantColumns,
    Misused,
    OutOfRange,
    Refused,
    UnknownChoice,
    UserError,
)
from funnelcli.estimator import FunnelDensity
from tests.helpers import assert_one_line_error, manifold_table, run, tiny_recipe

EXAMPLES = [
    (
        UnknownChoice("dequantize", "x", ("uniform", "none")),
        "dequantize='x' is unknown; use 'uniform' or 'none'",
        "--dequantize 'x' is unknown; use uniform or none",
    ),
    (
        BadValue("reduce", 1.5, "is not a fraction strictly between 0 and 1"),
        "reduce=1.5 is not a fraction strictly between 0 and 1",
        "--reduce 1.5 is not a fraction strictly between 0 and 1",
    ),
    (
        OutOfRange("random_state", -1, "a whole number in 0..9"),
        "random_state must be a whole number in 0..9, got -1",
        "--seed must be a whole number in 0..9, got -1",
    ),
    (
        Misused(["latent_dims", "reduce"], "both give the sizes to try; pass one of them"),
        "latent_dims and reduce both give the sizes to try; pass one of them",
        "--latent-dims and --reduce both give the sizes to try; pass one of them",
    ),
    (
        Refused("too few rows", "give at least 3 rows, or pass {validation=FILE}"),
        "too few rows; give at least 3 rows, or pass validation=...",
        "too few rows; give at least 3 rows, or pass --validation FILE",
    ),
    (
        ConstantColumns(["flat"]),
        "column(s) 'flat' are constant and have no density; leave them out with columns or pass drop_constant=True",
        "column(s) 'flat' are constant and have no density; leave them out with --columns or pass --drop-constant",
    ),
]


@pytest.mark.parametrize("kind", PHRASED, ids=lambda kind: kind.__name__)
def test_every_kind_of_error_is_a_user_error(kind):
    assert issubclass(kind, UserError) and issubclass(kind, ValueError)
    assert kind.exit_code == 2


@pytest.mark.parametrize(("error", "python", "cli"), EXAMPLES, ids=lambda value: type(value).__name__)
def test_an_error_names_python_parameters_and_the_cli_names_flags(error, python, cli):
    assert str(error) == python
    assert cli_message(error) == cli


@pytest.mark.parametrize("error", [example[0] for example in EXAMPLES], ids=lambda error: type(error).__name__)
def test_an_error_keeps_its_fields_through_pickle(error):
    """A sweep's worker process hands its errors back pickled."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and cli_message(copy) == cli_message(error)


def test_a_plain_user_error_is_its_text_in_python_and_on_the_command_line():
    error = UserError("data.csv is empty; give a table with {braces} kept as they are")
    assert str(error) == cli_message(error) == "data.csv is empty; give a table with {braces} kept as they are"


def test_the_table_maps_python_names_to_flags():
    assert FLAGS["latent_dim"] == "--latent-dim" and FLAGS["val_fraction"] == "--val-fraction"
    assert all(flag.startswith("-") and " " not in flag for flag in FLAGS.values())


def test_a_python_call_is_told_the_parameter_not_the_flag():
    with pytest.raises(UnknownChoice) as refused:
        FunnelDensity(tiny_recipe("nsf"), dequantize="x").fit(manifold_table(50))
    assert "dequantize='x'" in str(refused.value) and "--dequantize" not in str(refused.value)
    assert refused.value.parameter == "dequantize" and refused.value.value == "x"


def test_the_cli_is_told_the_flag_for_the_same_mistake(tmp_path):
    manifold_table(50).to_csv(tmp_path / "data.csv", index=False)
    result = run("train", tmp_path / "data.csv", "--dequantize", "x", "-o", tmp_path / "model")
    line = assert_one_line_error(result, "--dequantize 'x' is unknown; use uniform or none")
    assert "dequantize=" not in line
    assert not (tmp_path / "model").exists()


def test_a_python_call_with_a_constant_column_is_told_the_parameters_that_fix_it():
    with pytest.raises(ConstantColumns, match="leave them out with columns or pass drop_constant=True") as refused:
        FunnelDensity(tiny_recipe("nsf"), device="cpu").fit(manifold_table(50).assign(flat=1.0))
    assert refused.value.columns == ("flat",)
