"""The image layers: squeeze, the invertible 1x1 convolution, the channel coupling and the 2-D funnel are exact."""

from __future__ import annotations

import math

import pytest
import torch

from funnelcli.transforms.conv2d import (
    ChannelCoupling,
    Conv2dFunnel,
    InvertibleConv1x1,
    squeeze,
    unsqueeze,
)
from tests.helpers import autograd_logabsdet, perturb

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread

TOL = 1e-9  # float64 throughout


def flat(layer, shape):
    """``layer`` (on (N, C, H, W)) as a map of flat rows (N, C H W) -> (N, .), for autograd's Jacobian."""

    def function(rows):
        return layer(rows.reshape(rows.shape[0], *shape))[0].flatten(1)

    return function


def image(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_squeeze_puts_each_2x2_tile_into_channels_and_unsqueeze_undoes_it():
    x = image(2, 3, 4, 6)
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 3)
    # Channel (2a + b) C + c of tile (i, j) is pixel (2i + a, 2j + b) of channel c.
    assert s[1, (2 * 1 + 0) * 3 + 2, 1, 2] == x[1, 2, 3, 4]
    assert torch.equal(unsqueeze(s), x)


@pytest.mark.parametrize(
    "layer",
    [lambda: InvertibleConv1x1(4), lambda: ChannelCoupling(4, 0, 8, 4, 3.0), lambda: ChannelCoupling(5, 1, 8, 4, 3.0)],
    ids=["1x1-conv", "coupling-even", "coupling-odd"],
)
def test_an_image_bijection_inverts_and_its_logdet_is_autograds(layer):
    torch.manual_seed(0)
    layer = perturb(layer().double(), scale=0.5).eval()
    channels = 4 if isinstance(layer, InvertibleConv1x1) else layer.identity_channels + layer.transformed_channels
    x = image(3, channels, 2, 2)
    y, logabsdet = layer(x)
    x_back, inverse_logabsdet = layer.inverse(y)
    torch.testing.assert_close(x_back, x, atol=TOL, rtol=0)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, atol=TOL, rtol=0)
    expected = autograd_logabsdet(flat(layer, x.shape[1:]), x.flatten(1))
    torch.testing.assert_close(logabsdet, expected, atol=1e-8, rtol=0)


def test_the_1x1_convolution_starts_as_its_permutation_and_its_inverse_is_the_matrix_inverse():
    torch.manual_seed(3)
    layer = perturb(InvertibleConv1x1(5).double())
    torch.testing.assert_close(layer.weight() @ layer.weight_inverse(), torch.eye(5, dtype=torch.float64))
    fresh = InvertibleConv1x1(5)
    assert torch.equal(fresh.weight(), torch.eye(5)[fresh.permutation])


def funnel(channels: int = 1, keep: int = 2, seed: int = 0) -> Conv2dFunnel:
    torch.manual_seed(seed)
    return perturb(Conv2dFunnel(channels, keep, 8, 8, 4, 3.0).double(), scale=0.3, seed=seed).eval()


def test_the_funnel_keeps_and_drops_channels_of_each_tile():
    layer = funnel(channels=2, keep=3)
    x = image(4, 2, 4, 6)
    z, contribution = layer(x)
    assert z.shape == (4, 3, 2, 3) and contribution.shape == (4,)
    x_keep, x_drop = layer.split(x)
    assert x_keep.shape == (4, 3, 2, 3) and x_drop.shape == (4, 5, 2, 3)


def test_the_funnel_f_inverts_given_the_dropped_channels_and_its_logdet_is_autograds():
    layer = funnel(channels=1, keep=2)
    x = image(3, 1, 4, 4)
    x_keep, x_drop = layer.split(x)
    z, logabsdet = layer.f(x_keep, x_drop)
    # The contribution is log|det df/dx_keep| + log q(x_drop | z): q reads the output z.
    torch.testing.assert_close(layer(x)[1], logabsdet + layer.ansatz.log_prob(x_drop, z), atol=TOL, rtol=0)
    for i in range(3):

        def f_row(rows, i=i):
            return layer.f(rows.reshape(1, *x_keep.shape[1:]), x_drop[i : i + 1])[0].flatten(1)

        expected = autograd_logabsdet(f_row, x_keep[i : i + 1].flatten(1))
        torch.testing.assert_close(logabsdet[i : i + 1], expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("centred", [False, True])
def test_the_funnel_inverse_is_a_right_inverse_returning_minus_the_contribution(centred):
    layer = funnel(channels=1, keep=2)
    z = image(5, 2, 2, 2, seed=1)
    x, inverse_contribution = layer.inverse_centred(z) if centred else layer.inverse(z)
    assert x.shape == (5, 1, 4, 4)
    z_again, contribution = layer(x)
    torch.testing.assert_close(z_again, z, atol=TOL, rtol=0)
    torch.testing.assert_close(inverse_contribution, -contribution, atol=TOL, rtol=0)


def test_the_smallest_funnel_a_2x2_grey_image_reduced_to_one_value_integrates_to_one():
    """p(x) = N(z; 0, 1) exp(contribution) over R^4, by importance sampling from N(0, 2^2 I): 400,000 draws give a
    standard error of about 0.3% for this model (measured), so 2% is a loose, failing-capable tolerance."""
    layer = funnel(channels=1, keep=1, seed=2)
    generator = torch.Generator().manual_seed(0)
    spread, total, n = 2.0, 0.0, 400_000
    with torch.no_grad():
        for _ in range(4):
            x = spread * torch.randn(n // 4, 4, generator=generator, dtype=torch.float64)
            z, contribution = layer(x.reshape(-1, 1, 2, 2))
            log_p = -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * math.log(2 * math.pi) + contribution
            log_g = -0.5 * (x / spread).pow(2).sum(1) - 4 * math.log(spread) - 2 * math.log(2 * math.pi)
            total += torch.exp(log_p - log_g).sum().item()
    assert total / n == pytest.approx(1.0, abs=0.02)


def test_a_funnel_keeping_three_of_a_2x2_grey_image_integrates_to_one_on_a_grid():
    """The same density over R^4 by the midpoint rule on a coarse grid, 25 points a side on [-6, 6]: the grid error
    is under 1% for this model (measured), so 2%."""
    layer = funnel(channels=1, keep=3, seed=4)
    axis = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    step = (axis[1] - axis[0]).item()
    grid = torch.cartesian_prod(axis, axis, axis, axis)
    with torch.no_grad():
        z, contribution = layer(grid.reshape(-1, 1, 2, 2))
        log_p = -0.5 * z.flatten(1).pow(2).sum(1) - 1.5 * math.log(2 * math.pi) + contribution
    assert torch.exp(log_p).sum().item() * step**4 == pytest.approx(1.0, abs=0.02)
