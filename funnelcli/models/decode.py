"""Decoding: latent codes back to rows, the inverse of a model's ``encode`` (``FunnelDensity.inverse_transform``).

A funnel flow's encoder T is a chain of bijections and funnels, so its decoder walks the chain backwards. A
bijection is inverted exactly. A funnel (:class:`~funnelcli.transforms.funnel.Funnel`) is a surjection: its
dropped coordinates x_drop are drawn from the ansatz q(x_drop | z), or with ``mean`` set to the ansatz's centre
(``ansatz.centre``: the mean of a Gaussian ansatz; for a flow ansatz the image of its base distribution's zero).
Either way the funnel's inverse is a right inverse, encode(decode(z)) == z. For a flow without funnels, decoding is
T^-1 and decode(encode(x)) == x. The VAE decodes through its Gaussian decoder p(x | z): a draw, or its mean.
"""

from __future__ import annotations

import torch
from nflows.transforms.base import CompositeTransform, Transform
from torch import nn

from funnelcli.models.vae import VAE
from funnelcli.transforms.funnel import Funnel
from funnelcli.transforms.multiscale import MultiScale

__all__ = ["decode"]


def decode(model: nn.Module, z: torch.Tensor, *, mean: bool, context: torch.Tensor | None = None) -> torch.Tensor:
    """Rows x in the data's units of latent codes ``z``: shape (N, k) -> (N, D), on ``z``'s device; for a
    conditional flow, x = T^-1(z; c) with ``context`` c (N, C).

    ``model`` is a :class:`~funnelcli.models.flow.FunnelFlow` or the :class:`~funnelcli.models.vae.VAE`. With
    ``mean=False`` a funnel's dropped coordinates (or the VAE's x) are drawn from torch's global generator, in the
    order :meth:`FunnelFlow.sample` draws them; with ``mean=True`` nothing is drawn and the result is deterministic.
    """
    if isinstance(model, VAE):
        return model.decode(z, mean=mean, context=context)
    model._checked(context, z.shape[0])
    return _inverse(model.transform, z, mean=mean, context=context)


def _inverse(transform: Transform, z: torch.Tensor, *, mean: bool, context: torch.Tensor | None) -> torch.Tensor:
    if isinstance(transform, CompositeTransform):
        # nflows keeps a composite's layers in forward order; F-MLP's reducing layers nest a composite.
        for layer in reversed(transform._transforms):
            z = _inverse(layer, z, mean=mean, context=context)
        return z
    if isinstance(transform, Funnel | MultiScale) and mean:
        return transform.inverse_centred(z, context)[0]
    return transform.inverse(z, context=context)[0]
