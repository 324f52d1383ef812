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


def test_a_table_refused_by_the_reader_names_the_parameter_in_python_and_the_flag_on_the_command_line(tmp_path):
    from funnelcli.data import write_table

    target = tmp_path / "out.csv"
    target.write_text("x\n1\n")
    with pytest.raises(Refused) as refused:
        write_table(manifold_table(5), target, overwrite=False)
    assert str(refused.value) == f"{target} already exists; pass overwrite=True to overwrite it"
    assert cli_message(refused.value) == f"{target} already exists; pass --force to overwrite it"


def test_a_latent_dim_too_large_for_the_table_names_the_parameter_or_the_flag():
    from funnelcli.models.recipe import latent_dim

    with pytest.raises(BadValue) as refused:
        latent_dim(4, 0.5, kept=4)
    expected = "4 does not fit a table of 4 columns: a funnel keeps 1 to 3 of them (it drops at least one)"
    assert str(refused.value) == "latent_dim=" + expected
    assert cli_message(refused.value) == "--latent-dim " + expected


def test_an_unknown_device_names_the_parameter_or_the_flag():
    from funnelcli.training.loop import resolve_device

    with pytest.raises(UnknownChoice) as refused:
        resolve_device("tpu")
    assert str(refused.value) == "device='tpu' is unknown; use 'auto', 'cpu' or 'cuda'"
    assert cli_message(refused.value) == "--device 'tpu' is unknown; use auto, cpu or cuda"


def test_a_checkpoint_that_cannot_be_resumed_says_how_to_start_over_in_either_words(tmp_path):
    from funnelcli.training.checkpoint import RunIdentity

    identity = RunIdentity(settings=None, data_sha256="", device="cpu", world_size=1)
    with pytest.raises(Refused) as refused:
        identity.check(tmp_path, {"kind": "best"}, rows=10)
    assert str(refused.value).endswith("is not a resumable checkpoint; start over with overwrite=True (without resume)")
    assert cli_message(refused.value).endswith("; start over with --force (without --resume)")


def test_a_model_folder_in_the_way_names_the_parameters_or_the_flags(tmp_path):
    from funnelcli import artifact

    folder = tmp_path / "model"
    (folder / artifact.CHECKPOINTS).mkdir(parents=True)
    with pytest.raises(Refused) as refused:
        artifact.check_writable(folder, overwrite=False, resume=True)
    problem = f"{folder} holds no checkpoint to resume ({folder / artifact.CHECKPOINTS / artifact.LATEST} is missing)"
    assert str(refused.value) == problem + "; run without resume"
    assert cli_message(refused.value) == problem + "; run without --resume"


def test_a_prepared_folder_without_a_split_names_the_parameter_or_the_flag(tmp_path):
    from funnelcli.data.prepared import MANIFEST, split_file

    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(Refused) as refused:
        split_file(tmp_path, "train")
    assert str(refused.value).endswith("without train.parquet; prepare it again with overwrite=True")
    assert cli_message(refused.value).endswith("without train.parquet; prepare it again with --force")
