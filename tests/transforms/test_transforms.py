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
    SplinedAnsatz,
    SplineSettings,
    Standardize,
    rq_autoregressive,
    rq_coupling,
    rq_layer,
)
from funnelcli.transforms.affine import ActNorm, ElementwiseAffine, affine_coupling
from funnelcli.transforms.conv import conv_funnel, conv_stride1_funnel
from funnelcli.transforms.mlp import ConditionalLULinear, mlp_funnel, mlp_layer
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
    "shared-elementwise-spline": lambda: perturb(ElementwiseRQSpline(3, None, SMALL, shared=True)),
    "elementwise-affine-free": lambda: perturb(ElementwiseAffine(3)),
    "affine-coupling": lambda: perturb(affine_coupling(3, 0, hidden_features=16, residual_blocks=1)),
    "actnorm": lambda: perturb(ActNorm(3)),
    "mlp-layer": lambda: perturb(mlp_layer(3, SMALL)),
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
    "elementwise-affine": lambda: perturb(ElementwiseAffine(3, 2, hidden_features=16)),
    "conditional-lu-linear": lambda: perturb(ConditionalLULinear(3, 2)),
    "conditional-affine-coupling": lambda: perturb(affine_coupling(3, 0, 16, 1, context_features=2)),
    "one-dimensional-conditional-affine": lambda: perturb(affine_coupling(1, 0, 16, 1, context_features=2)),
}


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_bijection_inverts_for_each_context(name):
    assert_bijection(CONDITIONAL[name](), rows(6, 1 if name.startswith("one-") else 3), context=torch.randn(6, 2))


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


ANSATZ_KINDS = {
    "gaussian": lambda d: GaussianAnsatz(d, 3, 8, 2),
    "flow": lambda d: FlowAnsatz(d, 3, "coupling", 2, SMALL),
    "flow-autoregressive-lu": lambda d: FlowAnsatz(d, 3, "autoregressive", 2, SMALL, lu=True),
    "flow-affine-lu": lambda d: FlowAnsatz(d, 3, "coupling", 2, SMALL, layer="affine", lu=True),
    "splined-gaussian": lambda d: SplinedAnsatz(GaussianAnsatz(d, 3, 8, 2), d, SMALL),
    "splined-flow": lambda d: SplinedAnsatz(FlowAnsatz(d, 3, "coupling", 2, SMALL), d, SMALL),
}


@pytest.mark.parametrize("ansatz", ANSATZ_KINDS)
def test_ansatz_sample_returns_its_own_log_prob(ansatz):
    q = perturb(ANSATZ_KINDS[ansatz](2).double()).eval()
    c = torch.randn(7, 3, dtype=torch.float64)
    x, log_q = q.sample(c)
    torch.testing.assert_close(log_q, q.log_prob(x, c), atol=1e-8, rtol=0)


@pytest.mark.parametrize("ansatz", ANSATZ_KINDS)
def test_ansatz_density_of_one_dropped_coordinate_integrates_to_one_for_every_context(ansatz):
    q = perturb(ANSATZ_KINDS[ansatz](1).double(), scale=0.1).eval()
    x = torch.linspace(-30, 30, 120_001, dtype=torch.float64)[:, None]
    for c in torch.randn(3, 3, dtype=torch.float64):
        with torch.no_grad():
            density = q.log_prob(x, c.expand(len(x), 3)).exp()
        assert abs(float(torch.trapezoid(density, x[:, 0])) - 1) < 1e-4


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


def any_ansatz(kind: str, drop: int, keep: int):
    if kind == "gaussian":
        return GaussianAnsatz(drop, keep, hidden_features=8, layers=2)
    return FlowAnsatz(drop, keep, "coupling", 2, SMALL)


@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
@pytest.mark.parametrize(("features", "out_features"), [(5, 3), (2, 1)])
def test_mlp_funnel_is_exact(features, out_features, ansatz):
    composite = perturb(
        mlp_funnel(features, out_features, any_ansatz(ansatz, features - out_features, out_features), SMALL)
    )
    permutation, funnel = composite._transforms
    assert_funnel(funnel, rows(6, features))


def test_mlp_funnel_logdet_is_that_of_w_k_plus_the_spline_plus_log_q():
    composite = perturb(mlp_funnel(4, 2, any_ansatz("gaussian", 2, 2), SMALL)).eval()
    _, funnel = composite._transforms
    x = rows(5, 4)
    linear, spline = funnel.transform._transforms
    w_k = linear.linear.weight()
    y_linear = x[:, :2] @ w_k.t() + linear.linear.bias + x[:, 2:] @ linear.context_weight.t()
    y, spline_logdet = spline(y_linear)
    expected = torch.linalg.slogdet(w_k)[1] + spline_logdet + funnel.ansatz.log_prob(x[:, 2:], context=y)
    z, contribution = funnel(x)
    torch.testing.assert_close(z, y)
    torch.testing.assert_close(contribution, expected)


@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
@pytest.mark.parametrize("features", [6, 7, 2])
def test_stride_two_convolutional_funnel_is_exact(features, ansatz):
    tiles = features // 2
    funnel = perturb(conv_funnel(features, any_ansatz(ansatz, tiles, features - tiles)))
    assert (funnel.keep, funnel.drop) == (features - tiles, tiles)
    assert_funnel(funnel, rows(5, features))


def test_stride_two_convolution_keeps_even_and_drops_odd_features():
    funnel = perturb(conv_funnel(5, any_ansatz("gaussian", 2, 3))).eval()
    x = rows(4, 5)
    x_keep, x_drop = funnel.split(x)
    torch.testing.assert_close(x_keep, x[:, [0, 2, 4]])
    torch.testing.assert_close(x_drop, x[:, [1, 3]])
    kernel = funnel.transform.kernel
    z, _ = funnel(x)
    expected = torch.exp(kernel.log_w1) * x[:, [0, 2]] + kernel.w2 * x[:, [1, 3]] + kernel.bias
    torch.testing.assert_close(z[:, :2], expected)
    torch.testing.assert_close(z[:, 2], x[:, 4])


@pytest.mark.parametrize("ansatz", ["gaussian", "flow"])
@pytest.mark.parametrize("features", [5, 2])
def test_stride_one_convolutional_funnel_is_exact_with_an_autoregressive_inverse(features, ansatz):
    funnel = perturb(conv_stride1_funnel(features, any_ansatz(ansatz, 1, features - 1)))
    assert (funnel.keep, funnel.drop) == (features - 1, 1)
    assert_funnel(funnel, rows(5, features))


# -- the spline kernel is nflows' maths ------------------------------------------------------------------------


@pytest.mark.parametrize("inverse", [False, True])
def test_the_mask_free_spline_equals_nflows_spline_inside_and_outside_its_interval(inverse):
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    from funnelcli.transforms.splines import rq_spline

    bins, bound = 6, 2.0
    params = torch.randn(400, 3, 3 * bins - 1)
    inputs = 1.5 * bound * torch.randn(400, 3)  # a third of the entries fall in the identity tails
    ours = rq_spline(inputs, params, bins=bins, tail_bound=bound, inverse=inverse)
    theirs = unconstrained_rational_quadratic_spline(
        inputs,
        params[..., :bins],
        params[..., bins : 2 * bins],
        params[..., 2 * bins :],
        inverse=inverse,
        tails="linear",
        tail_bound=bound,
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("layer", ["coupling", "autoregressive"])
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_layers_give_what_nflows_layers_with_the_same_weights_give(layer, inverse):
    import copy

    from nflows.transforms.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressiveTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform

    ours = rq_layer(layer, 5, 0, SMALL, 3)
    perturb(ours, 0.3)
    reference = copy.deepcopy(ours)
    reference.__class__ = (
        PiecewiseRationalQuadraticCouplingTransform
        if layer == "coupling"
        else MaskedPiecewiseRationalQuadraticAutoregressiveTransform
    )
    inputs, context = rows(200, 5), torch.randn(200, 3)
    call = "inverse" if inverse else "forward"
    torch.testing.assert_close(
        getattr(ours, call)(inputs, context), getattr(reference, call)(inputs, context), rtol=0, atol=1e-9
    )
