"""Every layer is exact: it inverts, and its log-det is the autograd Jacobian's (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from funnelcli.transforms import (
    ElementwiseRQSpline,
    FlowAnsatz,
    Funnel,
    GaussianAnsatz,
    LULinear,
    RandomPermutation,
    SplineSettings,
    Standardize,
    rq_autoregressive,
    rq_coupling,
    rq_layer,
)
from tests.helpers import assert_bijection, assert_funnel, perturb

SMALL = SplineSettings(hidden_features=16, residual_blocks=1, bins=5, tail_bound=2.0)


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


def rows(n: int, d: int, scale: float = 1.5) -> torch.Tensor:
    # Some values beyond the tail bound, so the linear tails are exercised too.
    return scale * torch.randn(n, d)


BIJECTIONS = {
    "standardize": lambda: Standardize(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.1, 3.0])),
    "lu-linear": lambda: perturb(LULinear(3)),
    "permutation": lambda: RandomPermutation(3),
    "elementwise-spline-free": lambda: perturb(ElementwiseRQSpline(3, None, SMALL)),
    "coupling-spline": lambda: perturb(rq_coupling(3, 0, SMALL)),
    "coupling-spline-odd-step": lambda: perturb(rq_coupling(3, 1, SMALL)),
    "autoregressive-spline": lambda: perturb(rq_autoregressive(3, SMALL)),
    "one-dimensional-coupling": lambda: perturb(rq_layer("coupling", 1, 0, SMALL)),
}


@pytest.mark.parametrize("name", BIJECTIONS)
def test_bijection_inverts_and_its_logdet_matches_autograd(name):
    transform = BIJECTIONS[name]()
    x = rows(6, 1 if name.startswith("one-") else 3)
    assert_bijection(transform, x)


CONDITIONAL = {
    "elementwise-spline": lambda: perturb(ElementwiseRQSpline(3, 2, SMALL)),
    "coupling-spline": lambda: perturb(rq_coupling(3, 0, SMALL, context_features=2)),
    "autoregressive-spline": lambda: perturb(rq_autoregressive(3, SMALL, context_features=2)),
}


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_bijection_inverts_for_each_context(name):
    assert_bijection(CONDITIONAL[name](), rows(6, 3), context=torch.randn(6, 2))


def test_lu_linear_inverse_raises_no_deprecation_warning(recwarn):
    layer = perturb(LULinear(4))
    layer.inverse(torch.randn(5, 4))
    layer.weight_inverse()
    assert not [w for w in recwarn if "triangular_solve" in str(w.message)]


def test_lu_linear_weight_inverse_is_the_matrix_inverse():
    layer = perturb(LULinear(4))
    torch.testing.assert_close(layer.weight_inverse() @ layer.weight(), torch.eye(4), atol=1e-10, rtol=0)


def test_standardize_logdet_is_minus_the_sum_of_log_std():
    layer = Standardize(torch.zeros(2), torch.tensor([2.0, 5.0]))
    _, logabsdet = layer(torch.randn(3, 2))
    torch.testing.assert_close(logabsdet, torch.full((3,), -math.log(10.0)))


def test_standardize_refuses_a_zero_standard_deviation():
    with pytest.raises(ValueError, match="positive"):
        Standardize(torch.zeros(2), torch.tensor([1.0, 0.0]))


def test_gaussian_ansatz_matches_torch_normal():
    ansatz = perturb(GaussianAnsatz(2, 3, hidden_features=8, layers=2))
    x, c = torch.randn(5, 2), torch.randn(5, 3)
    mean, log_scale = ansatz.net(c).chunk(2, dim=1)
    expected = torch.distributions.Normal(mean, log_scale.exp()).log_prob(x).sum(dim=1)
    torch.testing.assert_close(ansatz.log_prob(x, c), expected)


@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
def test_ansatz_sample_returns_its_own_log_prob(ansatz):
    q = GaussianAnsatz(2, 3, 8, 2) if ansatz == "gaussian" else FlowAnsatz(2, 3, "coupling", 2, SMALL)
    perturb(q).eval()
    c = torch.randn(7, 3)
    x, log_q = q.sample(c)
    torch.testing.assert_close(log_q, q.log_prob(x, c), atol=1e-8, rtol=0)


def make_funnel(f: str, ansatz: str, keep: int = 2, drop: int = 2) -> Funnel:
    if f == "slice":
        transform = None
    elif f == "coupling":
        transform = ElementwiseRQSpline(keep, drop, SMALL)
    else:
        transform = rq_autoregressive(keep, SMALL, context_features=drop)
    if ansatz == "gaussian":
        q = GaussianAnsatz(drop, keep, hidden_features=8, layers=2)
    else:
        q = FlowAnsatz(drop, keep, "coupling" if f != "autoregressive" else "autoregressive", 2, SMALL)
    return perturb(Funnel(keep, drop, transform, q))


@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
@pytest.mark.parametrize("f", ["coupling", "autoregressive", "slice"])
def test_funnel_is_exact(f, ansatz):
    assert_funnel(make_funnel(f, ansatz), rows(6, 4))


@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
def test_funnel_from_two_dimensions_to_one_is_exact(ansatz):
    assert_funnel(make_funnel("coupling", ansatz, keep=1, drop=1), rows(6, 2))


def test_funnel_handles_a_batch_of_one():
    funnel = make_funnel("coupling", "flow", keep=1, drop=1)
    z, contribution = funnel(rows(1, 2))
    x, _ = funnel.inverse(z)
    assert z.shape == (1, 1) and contribution.shape == (1,) and x.shape == (1, 2)


def test_funnel_log_q_is_conditioned_on_the_output_not_the_kept_input():
    funnel = make_funnel("coupling", "gaussian").eval()
    x = rows(4, 4)
    z, contribution = funnel(x)
    f_logdet = funnel.transform(x[:, :2], context=x[:, 2:])[1]
    on_input = funnel.ansatz.log_prob(x[:, 2:], context=x[:, :2])
    assert not torch.allclose(contribution - f_logdet, on_input)
