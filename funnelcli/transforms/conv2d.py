"""Layers on images (N, C, H, W): squeeze, invertible 1x1 convolutions, channel couplings, and the 2-D
convolutional funnel (paper section 3 and A.7.1; Glow, Kingma and Dhariwal 2018; NSF, Durkan et al. 2019).

Every layer follows the nflows contract on 4-D tensors: ``forward(x) -> (y, logabsdet)``, ``inverse`` likewise,
logabsdet of shape (N,); the funnel's is its whole likelihood contribution. docs/maths.md, section 7.
"""

from __future__ import annotations

import math

import torch
from nflows.transforms.base import Transform
from torch import nn

from funnelcli.transforms.ansatz import standard_normal_log_prob
from funnelcli.transforms.splines import MIN_DERIVATIVE, rq_spline


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2): each 2x2 tile becomes one pixel of 4C channels, ordered (tile row, tile
    column, channel): channel (2a + b) C + c holds x[c, 2i + a, 2j + b]. A permutation, so log|det| = 0."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`: (N, 4C, H, W) -> (N, C, 2H, 2W)."""
    n, c4, h, w = x.shape
    c = c4 // 4
    x = x.reshape(n, 2, 2, c, h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)


def conv_net(in_channels: int, out_channels: int, hidden: int, last_kernel: int = 3) -> nn.Sequential:
    """3x3 conv, ReLU, 1x1 conv, ReLU, ``last_kernel`` conv (same padding); the last layer starts at zero, so the
    layer it parameterises starts at its identity (or its base density). Parameters: 9 in hidden + hidden +
    hidden^2 + hidden + k^2 hidden out + out (:func:`count_conv_net`)."""
    last = nn.Conv2d(hidden, out_channels, last_kernel, padding=last_kernel // 2)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last
    )


def count_conv_net(in_channels: int, out_channels: int, hidden: int, last_kernel: int = 3) -> int:
    """The parameters of :func:`conv_net`."""
    return (
        9 * in_channels * hidden
        + hidden
        + hidden * hidden
        + hidden
        + last_kernel**2 * hidden * out_channels
        + out_channels
    )


class InvertibleConv1x1(Transform):
    """Glow's invertible 1x1 convolution, y[:, :, i, j] = W x[:, :, i, j], with W = P L U: P a fixed random
    permutation, L unit lower-triangular, U upper-triangular with diagonal exp(s) > 0.

    log|det dy/dx| = H W sum_c s_c. C^2 parameters (no bias: ActNorm shifts). Starts at W = P. Shapes (N, C, H, W).
    Its inverse solves the triangular systems (nflows' LU inverse warns on torch 2.x; this one does not).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("permutation", torch.randperm(channels))
        pairs = channels * (channels - 1) // 2
        self.lower_entries = nn.Parameter(torch.zeros(pairs))
        self.upper_entries = nn.Parameter(torch.zeros(pairs))
        self.log_diagonal = nn.Parameter(torch.zeros(channels))
        self.register_buffer("lower_index", torch.tril_indices(channels, channels, -1), persistent=False)
        self.register_buffer("upper_index", torch.triu_indices(channels, channels, 1), persistent=False)

    def _lower_upper(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.channels
        eye = torch.eye(c, dtype=self.log_diagonal.dtype, device=self.log_diagonal.device)
        lower = eye.index_put((self.lower_index[0], self.lower_index[1]), self.lower_entries)
        upper = torch.diag(torch.exp(self.log_diagonal)).index_put(
            (self.upper_index[0], self.upper_index[1]), self.upper_entries
        )
        return lower, upper

    def weight(self) -> torch.Tensor:
        """W = P L U: row i of W is row ``permutation[i]`` of L U."""
        lower, upper = self._lower_upper()
        return (lower @ upper)[self.permutation]

    def weight_inverse(self) -> torch.Tensor:
        """W^-1 = U^-1 L^-1 P^T by two triangular solves: column j of P^T's product is column ``permutation[j]``."""
        lower, upper = self._lower_upper()
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        lower_inverse = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, lower_inverse, upper=True)[:, self.permutation]

    def _logabsdet(self, x: torch.Tensor) -> torch.Tensor:
        return (x.shape[2] * x.shape[3] * self.log_diagonal.sum()).expand(x.shape[0])

    def forward(self, inputs, context=None):
        return torch.einsum("ij,njhw->nihw", self.weight(), inputs), self._logabsdet(inputs)

    def inverse(self, inputs, context=None):
        return torch.einsum("ij,njhw->nihw", self.weight_inverse(), inputs), -self._logabsdet(inputs)


def _identity_spline_bias(bias: torch.Tensor, channels: int, bins: int) -> None:
    # Zero widths and heights make equal bins; derivatives softplus(b) + MIN_DERIVATIVE = 1 make the identity.
    with torch.no_grad():
        bias.view(channels, 3 * bins - 1)[:, 2 * bins :] = math.log(math.expm1(1 - MIN_DERIVATIVE))


def spline_2d(
    x: torch.Tensor, params: torch.Tensor, bins: int, tail_bound: float, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A monotone RQ spline per entry of x (N, C, H, W) with parameters (N, C (3K - 1), H, W) (channel c's 3K - 1
    numbers adjacent); linear tails outside [-B, B]. Returns (y, sum of log|s'|) of shapes (N, C, H, W) and (N,)."""
    n, c, h, w = x.shape
    per = 3 * bins - 1
    theta = params.reshape(n, c, per, h, w).permute(0, 1, 3, 4, 2).reshape(n, c * h * w, per)
    y, logabsdet = rq_spline(x.reshape(n, c * h * w), theta, bins=bins, tail_bound=tail_bound, inverse=inverse)
    return y.reshape(n, c, h, w), logabsdet.sum(dim=1)


class ChannelCoupling(Transform):
    """An RQ-spline coupling over channels: x = [x_a, x_b] (x_a the first C // 2 channels on even steps, the last
    C // 2 on odd ones); y_b = s(x_b; theta(x_a)), y_a = x_a, theta a :func:`conv_net` of x_a (3x3 receptive
    fields). log|det| = sum of log s' over x_b's entries. Shapes (N, C, H, W), C >= 2. Starts at the identity."""

    def __init__(self, channels: int, step: int, hidden: int, bins: int, tail_bound: float):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        self.identity_channels = channels // 2
        self.transformed_channels = channels - self.identity_channels
        self.first = step % 2 == 0
        self.bins, self.tail_bound = bins, tail_bound
        self.net = conv_net(self.identity_channels, self.transformed_channels * (3 * bins - 1), hidden)
        _identity_spline_bias(self.net[-1].bias, self.transformed_channels, bins)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.identity_channels
        return (x[:, :a], x[:, a:]) if self.first else (x[:, -a:], x[:, :-a])

    def _join(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_a, x_b] if self.first else [x_b, x_a], dim=1)

    def _couple(self, inputs: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = self._split(inputs)
        y_b, logabsdet = spline_2d(x_b, self.net(x_a), self.bins, self.tail_bound, inverse)
        return self._join(x_a, y_b), logabsdet

    def forward(self, inputs, context=None):
        return self._couple(inputs, inverse=False)

    def inverse(self, inputs, context=None):
        return self._couple(inputs, inverse=True)


class ConvGaussianAnsatz(nn.Module):
    """q(x_drop | z) = N(mu(z), diag sigma(z)^2) per pixel, mu and log sigma from a conv net of z whose only
    spatial layer is the first 3x3 convolution: each tile's dropped channels read the 3x3 neighbourhood of its
    output (as the paper). Shapes: x_drop (N, D_c, H, W), z (N, K_c, H, W). Starts at N(0, I).

    With ``missing_last``, x_drop's last entry (last channel, bottom-right tile) is not data: q is the marginal of
    the other entries (the diagonal Gaussian less that factor), and the entry is held at 0 in what it returns."""

    def __init__(self, drop_channels: int, keep_channels: int, hidden: int, missing_last: bool = False):
        super().__init__()
        self.net = conv_net(keep_channels, 2 * drop_channels, hidden, last_kernel=1)
        self.missing_last = missing_last

    def _mean_log_scale(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self.net(z).chunk(2, dim=1)
        if self.missing_last:
            present = torch.ones_like(mean[0])
            present[-1, -1, -1] = 0.0
            mean, log_scale = mean * present, log_scale * present
        return mean, log_scale

    def _log_prob(self, noise: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        noise = noise.flatten(1)
        if self.missing_last:
            noise = noise[:, :-1]
        return standard_normal_log_prob(noise) - log_scale.flatten(1).sum(dim=1)

    def log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        mean, log_scale = self._mean_log_scale(context)
        return self._log_prob((inputs - mean) * torch.exp(-log_scale), log_scale)

    def sample(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self._mean_log_scale(context)
        noise = torch.randn_like(mean)
        if self.missing_last:
            noise[:, -1, -1, -1] = 0.0
        return mean + noise * torch.exp(log_scale), self._log_prob(noise, log_scale)

    def centre(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu(z), log q(mu(z) | z)): the mean, also the mode."""
        mean, log_scale = self._mean_log_scale(context)
        return mean, self._log_prob(torch.zeros_like(mean), log_scale)


class Conv2dFunnel(Transform):
    """The 2-D convolutional funnel: (N, C, H, W) -> (N, K, H/2, W/2), exact likelihood.

    Each 2x2 tile is squeezed to 4C channels (:func:`squeeze`); the first K are kept (x_keep), the other 4C - K
    dropped (x_drop). f(x_keep; x_drop) = s(W x_keep; theta(x_drop)): W an invertible 1x1 convolution (LU), s an
    elementwise RQ spline whose parameters come from a conv net of x_drop (3x3 receptive field).

        forward:  z = f(x_keep; x_drop),  contribution = H' W' log|det W| + sum log s' + log q(x_drop | z)
        inverse:  x_drop ~ q(. | z),  x_keep = W^-1 s^-1(z; theta(x_drop)),  returns -(that contribution)

    q is :class:`ConvGaussianAnsatz`, conditioned on the OUTPUT z (a 3x3 neighbourhood of it), so the inverse is
    a right inverse (forward(inverse(z)) == z) and log p(x) = log p(z) + contribution exactly, as in
    :class:`~funnelcli.transforms.funnel.Funnel`. H and W must be even.

    ``missing_last``: the image's last value (bottom-right pixel, last channel) is not data but a 0 put in its
    place. It is the last dropped channel of the last tile, so the ansatz leaves it out (:class:`ConvGaussianAnsatz`)
    and the inverse returns it as 0: the density is exact over the other H W C - 1 values (docs/maths.md, 7).
    """

    def __init__(
        self,
        channels: int,
        keep: int,
        hidden: int,
        ansatz_hidden: int,
        bins: int,
        tail_bound: float,
        missing_last: bool = False,
    ):
        super().__init__()
        if not 1 <= keep < 4 * channels:
            raise ValueError(f"a 2-D funnel keeps 1 to {4 * channels - 1} of the {4 * channels} squeezed channels")
        self.keep, self.drop = keep, 4 * channels - keep
        self.bins, self.tail_bound = bins, tail_bound
        self.linear = InvertibleConv1x1(keep)
        self.net = conv_net(self.drop, keep * (3 * bins - 1), hidden)
        _identity_spline_bias(self.net[-1].bias, keep, bins)
        self.ansatz = ConvGaussianAnsatz(self.drop, keep, ansatz_hidden, missing_last)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_keep, x_drop) of an image x (N, C, H, W), each (N, ., H/2, W/2)."""
        tiles = squeeze(x)
        return tiles[:, : self.keep], tiles[:, self.keep :]

    def f(self, x_keep: torch.Tensor, x_drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x_keep; x_drop) and log|det df/dx_keep|, shape (N,)."""
        y, linear_logabsdet = self.linear(x_keep)
        z, spline_logabsdet = spline_2d(y, self.net(x_drop), self.bins, self.tail_bound)
        return z, linear_logabsdet + spline_logabsdet

    def forward(self, inputs, context=None):
        x_keep, x_drop = self.split(inputs)
        z, logabsdet = self.f(x_keep, x_drop)
        return z, logabsdet + self.ansatz.log_prob(x_drop, z)

    def _inverse_given(self, z: torch.Tensor, x_drop: torch.Tensor, log_q: torch.Tensor):
        y, spline_logabsdet = spline_2d(z, self.net(x_drop), self.bins, self.tail_bound, inverse=True)
        x_keep, linear_logabsdet = self.linear.inverse(y)
        return unsqueeze(torch.cat([x_keep, x_drop], dim=1)), spline_logabsdet + linear_logabsdet - log_q

    def inverse(self, inputs, context=None):
        return self._inverse_given(inputs, *self.ansatz.sample(inputs))

    def inverse_centred(self, z: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`inverse` with x_drop at the ansatz's mean: deterministic, still a right inverse."""
        return self._inverse_given(z, *self.ansatz.centre(z))


def count_conv2d_funnel(channels: int, keep: int, hidden: int, ansatz_hidden: int, bins: int) -> int:
    """The parameters of :class:`Conv2dFunnel`: W (K^2), the spline's conv net, the ansatz's conv net."""
    drop = 4 * channels - keep
    return (
        keep * keep
        + count_conv_net(drop, keep * (3 * bins - 1), hidden)
        + count_conv_net(keep, 2 * drop, ansatz_hidden, last_kernel=1)
    )


def count_channel_coupling(channels: int, hidden: int, bins: int) -> int:
    """The parameters of :class:`ChannelCoupling` on ``channels`` channels."""
    return count_conv_net(channels // 2, (channels - channels // 2) * (3 * bins - 1), hidden)
