"""The library's errors in the command line's words: the one table from Python's parameter names to the flags.

The library phrases a :class:`~funnelcli.errors.UserError` in its parameters' names (``dequantize='x' is
unknown; use 'uniform' or 'none'``); :func:`cli_message` phrases the same error with the flags that set those
parameters (``--dequantize 'x' is unknown; use uniform or none``). A parameter missing from :data:`FLAGS` is
spelled as its flag would be by Typer (``batch_size`` -> ``--batch-size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from funnelcli.errors import Names, UserError, either, shown

#: Python's parameter name -> the flag that sets it.
FLAGS: dict[str, str] = {
    # FunnelDensity and fit
    "recipe": "--recipe",
    "reduce": "--reduce",
    "latent_dim": "--latent-dim",
    "ansatz": "--ansatz",
    "base": "--base",
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
    "device": "--device",
    "val_fraction": "--val-fraction",
    "validation": "--validation",
    "dequantize": "--dequantize",
    "drop_constant": "--drop-constant",
    "max_parameters": "--max-parameters",
    "columns": "--columns",
    "conditional_columns": "--condition",
    "categorical_columns": "--categorical",
    "image_shape": "--image-shape",
    "bits": "--bits",
    "source_bits": "--source-bits",
    # scoring, encoding and sampling (score_samples, sample, apply's score_file and encode_file)
    "iw_samples": "--iw-samples",
    "n_samples": "-n",
    "temperature": "--temperature",
    "random_state": "--seed",
    "keep": "--keep",
    "column": "--score-column",
    "prefix": "--prefix",
    "output": "--output",
    "out": "--output",
    "overwrite": "--force",
    "key": "--key",
    "conditions": "--conditions",
    # sweep
    "latent_dims": "--latent-dims",
    "tolerance": "--tolerance",
    "min_gain": "--min-gain",
    "jobs": "--jobs",
    # evaluate
    "ood": "--ood",
}


def flag(parameter: str) -> str:
    """The flag that sets ``parameter``."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


class FlagNames(Names):
    """Parameters named as the command line names them: ``--dequantize 'x'``, ``--drop-constant``."""

    def name(self, parameter: str) -> str:
        return flag(parameter)

    def setting(self, parameter: str, value: Any) -> str:
        return f"{flag(parameter)} {shown(value)}"

    def suggestion(self, parameter: str, value: str) -> str:
        return flag(parameter) if value == "True" else f"{flag(parameter)} {value}"

    def choices(self, values: Sequence[Any]) -> str:
        return either([str(value) for value in values])


FLAG_NAMES = FlagNames()


def cli_message(error: UserError) -> str:
    """``error`` as the CLI prints it (after ``error:``): its parameters named by their flags, on one line."""
    return " ".join(error.phrase(FLAG_NAMES).split())
