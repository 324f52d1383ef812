"""What every model family offers: the :class:`DensityModel` protocol, and :func:`count_parameters`.

Every family's builder (:mod:`funnelcli.models.families`) returns a torch module that satisfies the protocol:
the funnel flows' :class:`~funnelcli.models.flow.FunnelFlow` and the :class:`~funnelcli.models.vae.VAE`. Code
that only scores, encodes or samples (the estimator, reports) depends on the protocol, not on a family.

This module imports no torch, so that a module typed against the protocol (the report) stays torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from nflows.transforms.base import Transform


@runtime_checkable
class DensityModel(Protocol):
    """A density model of D columns with a k-dimensional latent space (k = ``latent_dim`` <= D = ``input_dim``).

    Its first layer, ``scaler``, standardises the data (``mean`` and ``std`` buffers, shape (D,)), so that
    ``log_prob`` is in the data's units. Shapes: x (N, D), z (N, k). ``is_bound`` says whether ``log_prob`` is
    a lower bound on log p(x) (the VAE's ELBO) rather than the exact log-likelihood (a flow's).

    Every model is also a :class:`torch.nn.Module` (``parameters``, ``state_dict``, ``to``, ``eval``).
    """

    input_dim: int
    latent_dim: int

    @property
    def is_bound(self) -> bool: ...

    @property
    def scaler(self) -> Transform: ...

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row, shape (N,): exact, or a lower bound when ``is_bound``."""
        ...

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of each row, shape (N, k)."""
        ...

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` draws, shape (n, D); ``temperature`` scales the latent distribution's standard deviation."""
        ...


def count_parameters(model: torch.nn.Module) -> int:
    """The number of numbers a model learns: every element of every parameter tensor (buffers, such as the
    scaler's mean and std, are not learnt and not counted)."""
    return sum(p.numel() for p in model.parameters())


def checked_context(model: str, width: int, context: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """``context`` as a model's layers take it: None for an unconditional model (``width`` 0), else (rows, width).
    ``model`` names the kind in the error ("flow", "VAE"); a wrong context is a programming error, a ValueError."""
    if width == 0:
        if context is not None:
            raise ValueError(f"this {model} is unconditional; it takes no context")
        return None
    if context is None or tuple(context.shape) != (rows, width):
        shape = None if context is None else tuple(context.shape)
        raise ValueError(f"this conditional {model} needs a context of shape ({rows}, {width}), got {shape}")
    return context
