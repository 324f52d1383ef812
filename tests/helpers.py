"""Shared helpers of the test suite (fixtures live in conftest.py, which pytest reads by itself).

- tiny recipes and small tables with known structure: ``tiny_recipe``, ``tiny_estimator``, ``manifold_table``;
- the command line, run in this process: ``run``, ``assert_one_line_error``, the tiny ``RECIPE`` and
  ``write_recipe``, ``copy_model``;
- training runs: ``SignalAt`` (a signal at a chosen step), ``feed_training_to``, ``same_weights``;
- "is a well-behaved bijection" and "is a well-behaved funnel": ``assert_bijection``, ``assert_funnel``;
- raw benchmark inputs: ``write_power``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from typer.testing import CliRunner

from funnelcli.cli import app
from funnelcli.estimator import FunnelDensity
from funnelcli.models import Recipe
from funnelcli.models.recipe import FAMILY_FIELDS

# -- tiny recipes and small tables ------------------------------------------------------------------------------

TINY_MODEL = {
    "vae_layers": 1,
    "mlp_layout": ["preserve", "halfway", "latent", "preserve"],
    "flow_steps": 3,
    "hidden_features": 32,
    "residual_blocks": 1,
    "bins": 6,
    "funnel_level": 1,
    "ansatz_hidden_features": 16,
    "ansatz_layers": 2,
    "ansatz_flow_steps": 1,
}
TINY_TRAINING = {"batch_size": 128, "steps": 60, "eval_every": 20, "lr": 3e-3}


def tiny_recipe(family: str = "f-nsf", **model) -> Recipe:
    """A recipe of ``family`` small enough to train in a second; ``model`` overrides its fields."""
    settings = {key: value for key, value in TINY_MODEL.items() if key in FAMILY_FIELDS[family]}
    settings.update(model)
    return Recipe.from_dict({"family": family, "model": settings, "training": dict(TINY_TRAINING)}, name="tiny")


def tiny_estimator(**params) -> FunnelDensity:
    """An F-NSF estimator with a Gaussian ansatz and dropout that trains 30 steps on the CPU; ``params`` override."""
    recipe = tiny_recipe("f-nsf", ansatz="gaussian", dropout=0.1)
    params = {"steps": 30, "eval_every": 10, **params}
    return FunnelDensity(recipe, device="cpu", **params)


def manifold_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Four columns near a two-dimensional surface: c and d are functions of a and b plus small noise."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "a": 3.0 + 2.0 * a,
            "b": b,
            "c": a * b + 0.05 * rng.normal(size=n),
            "d": np.sin(a) + 0.05 * rng.normal(size=n),
        }
    )


# -- the command line -------------------------------------------------------------------------------------------

#: A recipe that trains in milliseconds per step, for tests about behaviour, not about fit quality.
RECIPE = """
family = "f-nsf"
description = "tiny, for robustness tests"
[model]
flow_steps = 2
hidden_features = 16
residual_blocks = 1
bins = 4
funnel_level = 0
ansatz = "gaussian"
ansatz_hidden_features = 8
ansatz_layers = 1
[training]
batch_size = 64
steps = 30
eval_every = 10
lr = 3e-3
"""

runner = CliRunner()


def run(*args):
    """``funnel ARGS...`` in this process; every argument is turned into a string."""
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, one ``error:`` line on stderr holding every fragment, no traceback, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_recipe(folder: Path, text: str = RECIPE) -> Path:
    """``folder/tiny.toml`` holding ``text``."""
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def copy_model(model: Path, to: Path) -> Path:
    """A copy of the model folder ``model`` at ``to``, file by file."""
    to.mkdir()
    for file in model.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


# -- training runs ----------------------------------------------------------------------------------------------


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def feed_training_to(monkeypatch, callback) -> None:
    """Make `funnel train` (in this process) hand every training record to ``callback``."""
    from funnelcli.cli import train as train_module

    class Progress:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return callback

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(train_module, "_progress", Progress)


class SignalAt:
    """A training callback that sends ``signum`` to this process once step ``step`` is done."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum = step, signum

    def __call__(self, record: dict) -> None:
        if record["step"] == self.step:
            # Only into training's own handler: a signal that reached pytest would stop the whole session.
            assert signal.getsignal(self.signum) not in (signal.SIG_DFL, signal.default_int_handler), "no handler"
            os.kill(os.getpid(), self.signum)


# -- bijections and funnels -------------------------------------------------------------------------------------

INVERSE_TOL = 1e-4
LOGDET_TOL = 1e-3


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (often identity) initialisation, so the checks see a non-trivial map."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


def autograd_logabsdet(function, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``function`` (R^d -> R^d, one row at a time) at every row of ``x``, by autograd."""
    values = []
    for row in x:
        jacobian = torch.autograd.functional.jacobian(lambda v: function(v[None])[0], row)
        values.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(values)


def assert_bijection(transform, x: torch.Tensor, context: torch.Tensor | None = None) -> None:
    """inverse(forward(x)) == x, the log-dets cancel, and the log-det equals autograd's."""
    transform.eval()
    y, logabsdet = transform(x, context=context)
    assert y.shape == x.shape and logabsdet.shape == (x.shape[0],)
    x_back, inverse_logabsdet = transform.inverse(y, context=context)
    torch.testing.assert_close(x_back, x, atol=INVERSE_TOL, rtol=0)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, atol=LOGDET_TOL, rtol=0)

    def forward_row(v, c=None):
        return transform(v, context=c)[0]

    for i in range(x.shape[0]):
        c = None if context is None else context[i : i + 1]
        expected = autograd_logabsdet(lambda v, c=c: forward_row(v, c), x[i : i + 1])
        torch.testing.assert_close(logabsdet[i : i + 1], expected, atol=LOGDET_TOL, rtol=0)


def assert_funnel(funnel, x: torch.Tensor) -> None:
    """A funnel is exact: f inverts given x_drop, its log-det is autograd's, and its inverse is a right inverse
    whose returned contribution is minus the forward one at the sampled point."""
    funnel.eval()
    keep = funnel.keep
    x_keep, x_drop = funnel.split(x)
    z, contribution = funnel(x)
    assert z.shape == (x.shape[0], keep) and contribution.shape == (x.shape[0],)

    # f(.; x_drop) is a bijection of the kept coordinates, with the right log-det.
    if funnel.transform is not None:
        assert_bijection(funnel.transform, x_keep, context=x_drop)
        f_logabsdet = funnel.transform(x_keep, context=x_drop)[1]
    else:
        torch.testing.assert_close(z, x_keep)
        f_logabsdet = torch.zeros(x.shape[0], dtype=x.dtype)
    # The rest of the contribution is log q(x_drop | z), conditioned on the output.
    torch.testing.assert_close(contribution - f_logabsdet, funnel.ansatz.log_prob(x_drop, context=z), atol=1e-6, rtol=0)

    # Right inverse: forward(inverse(z)) == z, and the inverse returns minus the forward contribution.
    x_sampled, inverse_contribution = funnel.inverse(z)
    assert x_sampled.shape == x.shape
    z_again, contribution_again = funnel(x_sampled)
    torch.testing.assert_close(z_again, z, atol=INVERSE_TOL, rtol=0)
    torch.testing.assert_close(inverse_contribution, -contribution_again, atol=LOGDET_TOL, rtol=0)


# -- raw benchmark inputs ---------------------------------------------------------------------------------------


def write_power(root: Path, n: int = 1000, width: int = 8) -> Path:
    """(n, 8): active power, reactive power, voltage, intensity, sub-metering 1-3, time (quantised, as UCI's)."""
    rng = np.random.default_rng(1)
    columns = [
        np.round(rng.gamma(2.0, 0.5, n), 3),
        np.round(rng.gamma(1.0, 0.1, n), 3),
        np.round(240 + 3 * rng.normal(size=n), 2),
        np.round(rng.gamma(2.0, 2.0, n), 1),
        rng.poisson(1.0, n).astype(float),
        rng.poisson(2.0, n).astype(float),
        rng.poisson(6.0, n).astype(float),
        rng.integers(0, 1440, n) + rng.random(n),
    ]
    path = root / "power" / "data.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.column_stack(columns)[:, :width])
    return path
