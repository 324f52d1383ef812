"""The multi-scale image flow (Dinh et al. 2017, Glow, NSF's image models), on flat rows of pixels.

Rows (N, D) hold pixels in row-major (H, W, C) order; the flow reshapes them to (N, C, H, W), squeezes once,
and runs levels of steps (ActNorm, invertible 1x1 convolution, RQ-spline channel coupling). Between levels
either half the channels are factored out to the latent and the rest squeezed (squeeze-and-split), or a 2-D
funnel squeezes and drops channels to its ansatz (:class:`~funnelcli.transforms.conv2d.Conv2dFunnel`). The
output is flat: every factored-out part and the last level, so the latent is smaller only with funnels.
docs/maths.md, section 7.
"""

from __future__ import annotations

import torch
from nflows.transforms.base import Transform
from nflows.transforms.normalization import ActNorm
from torch import nn

from funnelcli.transforms.conv2d import ChannelCoupling, Conv2dFunnel, InvertibleConv1x1, squeeze, unsqueeze


def flow_step(channels: int, step: int, hidden: int, bins: int, tail_bound: float) -> list[Transform]:
    """ActNorm, an invertible 1x1 convolution and an RQ-spline channel coupling on ``channels`` channels."""
    return [ActNorm(channels), InvertibleConv1x1(channels), ChannelCoupling(channels, step, hidden, bins, tail_bound)]


class MultiScale(Transform):
    """T: (N, H W C) -> (N, k). ``levels`` are lists of image layers, one list per level; ``transitions`` (one
    fewer) are :class:`Conv2dFunnel` layers or ``factored`` channel counts (squeeze-and-split); ``entry``, when
    given, is a :class:`Conv2dFunnel` that replaces the image's first squeeze; when its ansatz has ``missing_last``
    the rows hold H W C - 1 values, the image less its last, which that funnel drops (a 0 stands in for it).
    Forward returns the
    latent and the sum of the layers' contributions; inverse draws what funnels dropped and returns minus theirs,
    so log p_Z(z) - inverse-logabsdet is the exact log-density of the sample (the contract of
    :class:`~funnelcli.transforms.funnel.Funnel`)."""

    def __init__(
        self,
        image: tuple[int, int, int],
        levels: list[list[Transform]],
        transitions: list,
        entry: Conv2dFunnel | None = None,
    ):
        super().__init__()
        self.image = tuple(image)
        self.entry = entry
        self.levels = nn.ModuleList(nn.ModuleList(level) for level in levels)
        self.funnels = nn.ModuleList(t for t in transitions if isinstance(t, Conv2dFunnel))
        # Per transition: the funnel's index in self.funnels, or -(factored channels) for squeeze-and-split.
        self.kinds = [
            self._funnel_index(transitions, i) if isinstance(t, Conv2dFunnel) else -int(t)
            for i, t in enumerate(transitions)
        ]

    @property
    def missing(self) -> bool:
        """Whether the rows are the image less its last value (the entry funnel's ansatz leaves it out)."""
        return self.entry is not None and self.entry.ansatz.missing_last

    @staticmethod
    def _funnel_index(transitions: list, i: int) -> int:
        return sum(isinstance(t, Conv2dFunnel) for t in transitions[:i])

    def forward(self, inputs, context=None):
        n = inputs.shape[0]
        height, width, channels = self.image
        if self.missing:
            inputs = torch.cat([inputs, inputs.new_zeros(n, 1)], dim=1)
        x = inputs.reshape(n, height, width, channels).permute(0, 3, 1, 2)
        total = inputs.new_zeros(n)
        if self.entry is None:
            x = squeeze(x)
        else:
            x, total = self.entry(x)
        latents = []
        for index, level in enumerate(self.levels):
            for layer in level:
                x, logabsdet = layer(x)
                total = total + logabsdet
            if index < len(self.kinds):
                kind = self.kinds[index]
                if kind >= 0:
                    x, contribution = self.funnels[kind](x)
                    total = total + contribution
                else:
                    keep = x.shape[1] + kind
                    latents.append(x[:, keep:].flatten(1))
                    x = squeeze(x[:, :keep])
        latents.append(x.flatten(1))
        return torch.cat(latents, dim=1), total

    def _shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) entering each level's steps."""
        height, width, channels = self.image
        c = 4 * channels if self.entry is None else self.entry.keep
        h, w = height // 2, width // 2
        shapes = []
        for index in range(len(self.levels)):
            shapes.append((c, h, w))
            if index < len(self.kinds):
                kind = self.kinds[index]
                c = self.funnels[kind].keep if kind >= 0 else 4 * (c + kind)
                h, w = h // 2, w // 2
        return shapes

    @staticmethod
    def _funnel_inverse(funnel: Conv2dFunnel, x: torch.Tensor, centred: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return funnel.inverse_centred(x) if centred else funnel.inverse(x)

    def _inverse(self, z: torch.Tensor, centred: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = z.shape[0]
        shapes = self._shapes()
        sizes = [-kind * h * w for kind, (_, h, w) in zip(self.kinds, shapes, strict=False) if kind < 0]
        c, h, w = shapes[-1]
        pieces = list(z.split([*sizes, c * h * w], dim=1))
        x = pieces.pop().reshape(n, c, h, w)
        total = z.new_zeros(n)
        for index in reversed(range(len(self.levels))):
            if index < len(self.kinds):
                kind = self.kinds[index]
                if kind >= 0:
                    x, contribution = self._funnel_inverse(self.funnels[kind], x, centred)
                    total = total + contribution
                else:
                    c, h, w = shapes[index]
                    factored = pieces.pop().reshape(n, -kind, h, w)
                    x = torch.cat([unsqueeze(x), factored], dim=1)
            for layer in reversed(self.levels[index]):
                x, logabsdet = layer.inverse(x)
                total = total + logabsdet
        if self.entry is None:
            x = unsqueeze(x)
        else:
            x, contribution = self._funnel_inverse(self.entry, x, centred)
            total = total + contribution
        x = x.permute(0, 2, 3, 1).reshape(n, -1)
        return (x[:, :-1] if self.missing else x), total

    def inverse(self, inputs, context=None):
        return self._inverse(inputs, centred=False)

    def inverse_centred(self, z: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`inverse` with every funnel's dropped channels at its ansatz's mean (deterministic)."""
        return self._inverse(z, centred=True)


def multiscale(
    image: tuple[int, int, int],
    plan: list,
    steps: int,
    hidden: int,
    bins: int,
    tail_bound: float,
    ansatz_hidden: int,
    missing: bool = False,
) -> MultiScale:
    """The flow of a plan (:func:`funnelcli.models.image_plan.image_levels`): ``steps`` steps per level; ``missing``
    when the rows are the image less its last value."""
    entry = None
    if plan[0].entry_dropped:
        entry = Conv2dFunnel(image[2], plan[0].channels, hidden, ansatz_hidden, bins, tail_bound, missing)
    levels, transitions = [], []
    for index, level in enumerate(plan):
        levels.append([t for step in range(steps) for t in flow_step(level.channels, step, hidden, bins, tail_bound)])
        if index < len(plan) - 1:
            if level.dropped:
                keep = 4 * level.channels - level.dropped
                transitions.append(Conv2dFunnel(level.channels, keep, hidden, ansatz_hidden, bins, tail_bound))
            else:
                transitions.append(level.factored)
    return MultiScale(image, levels, transitions, entry)
