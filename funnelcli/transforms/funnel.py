"""The funnel: an inference surjection that removes dimensions while keeping the likelihood exact.

Klein, Raine, Golling, Pina-Otey (2022), "Funnels: exact maximum likelihood with dimensionality reduction";
the special case f = identity is SurVAE's slice surjection (Nielsen et al. 2020). See docs/maths.md, section 1.
"""

from __future__ import annotations

import torch
from nflows.transforms.base import Transform
from torch import nn


class Funnel(Transform):
    """x = [x_keep, x_drop] in R^D  ->  z = f(x_keep; x_drop) in R^keep.

    ``transform`` is f: a bijection of x_keep whose parameters come from x_drop (an nflows transform called
    with ``context=x_drop``); ``None`` means f = identity (a slice). ``ansatz`` is q(x_drop | z), conditioned on
    the OUTPUT z, which is what makes the likelihood exact rather than a bound:

        forward:  z,  log|det df/dx_keep| + log q(x_drop | z)
        inverse:  x_drop ~ q(. | z),  x_keep = f^-1(z; x_drop);  returns x and
                  -(log|det df/dx_keep| + log q(x_drop | z))
        inverse_centred:  the same with x_drop = the ansatz's centre instead of a draw (deterministic)

    The inverse's sign matches the bijections' convention, so that log p_Z(z) - inverse-logabsdet is the
    exact log-density of the sample it returns. The inverse is a right inverse: forward(inverse(z)) == z.
    Shapes: forward (N, D) -> (N, keep), inverse (N, keep) -> (N, D), logabsdet (N,). By default the last
    ``drop`` coordinates are the dropped ones; ``order`` (a permutation of range(D)) names them otherwise:
    x_keep = x[:, order[:keep]], x_drop = x[:, order[keep:]].

    Conditional funnels (``context_features`` = C > 0) model p(x | c) for an external context c of shape (N, C):
    f reads [x_drop, c] (or x_drop alone with ``f_reads_context=False``, the convolutional funnels' fixed
    kernels) and the ansatz is q(x_drop | z, c), reading [z, c]. For each c the funnel is the funnel above, so
    the likelihood stays exact: log p(x | c) = log p_Z(z) + log|det df/dx_keep| + log q(x_drop | z, c).
    """

    def __init__(
        self,
        keep: int,
        drop: int,
        transform: Transform | None,
        ansatz: nn.Module,
        order: torch.Tensor | list[int] | None = None,
        *,
        context_features: int = 0,
        f_reads_context: bool = True,
    ):
        super().__init__()
        if keep < 1 or drop < 1:
            raise ValueError(f"a funnel keeps and drops at least one coordinate each, got keep={keep}, drop={drop}")
        self.keep = keep
        self.drop = drop
        self.transform = transform
        self.ansatz = ansatz
        self.context_features = context_features
        self.f_reads_context = f_reads_context
        if order is not None:
            order = torch.as_tensor(order, dtype=torch.long)
            if sorted(order.tolist()) != list(range(keep + drop)):
                raise ValueError(f"order must be a permutation of range({keep + drop})")
            self.register_buffer("order", order)
            self.register_buffer("inverse_order", torch.argsort(order))
        else:
            self.order = None

    def _check(self, inputs, context, width):
        if self.context_features == 0 and context is not None:
            raise ValueError("this funnel takes no external context")
        expected = (inputs.shape[0], self.context_features)
        if self.context_features and (context is None or tuple(context.shape) != expected):
            shape = None if context is None else tuple(context.shape)
            raise ValueError(f"this funnel needs a context of shape (N, {self.context_features}), got {shape}")
        if inputs.dim() != 2 or inputs.shape[1] != width:
            raise ValueError(f"expected inputs of shape (N, {width}), got {tuple(inputs.shape)}")

    @staticmethod
    def _with(values: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return values if context is None else torch.cat([values, context], dim=1)

    def _f_context(self, x_drop: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self._with(x_drop, context if self.f_reads_context else None)

    def forward(self, inputs, context=None):
        self._check(inputs, context, self.keep + self.drop)
        if self.order is not None:
            inputs = inputs[:, self.order]
        x_keep, x_drop = inputs[:, : self.keep], inputs[:, self.keep :]
        if self.transform is None:
            z, logabsdet = x_keep, inputs.new_zeros(inputs.shape[0])
        else:
            z, logabsdet = self.transform(x_keep, context=self._f_context(x_drop, context))
        return z, logabsdet + self.ansatz.log_prob(x_drop, context=self._with(z, context))

    def inverse(self, inputs, context=None):
        self._check(inputs, context, self.keep)
        return self._inverse_given(inputs, *self.ansatz.sample(context=self._with(inputs, context)), context)

    def inverse_centred(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`inverse` with x_drop at the ansatz's centre (``ansatz.centre(z)``: the mean of a Gaussian
        ansatz, the image of the base's zero for a flow ansatz) instead of a draw: deterministic, and still a right
        inverse, forward(inverse_centred(z)) == z. Returns (x, -(log|det df/dx_keep| + log q(x_drop | z)))."""
        self._check(z, context, self.keep)
        return self._inverse_given(z, *self.ansatz.centre(context=self._with(z, context)), context)

    def _inverse_given(
        self, z: torch.Tensor, x_drop: torch.Tensor, log_q: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x = [f^-1(z; x_drop), x_drop] in the input's order, and -(log|det df/dx_keep| + ``log_q``)."""
        if self.transform is None:
            x_keep, inverse_logabsdet = z, z.new_zeros(z.shape[0])
        else:
            x_keep, inverse_logabsdet = self.transform.inverse(z, context=self._f_context(x_drop, context))
        x = torch.cat([x_keep, x_drop], dim=1)
        if self.order is not None:
            x = x[:, self.inverse_order]
        return x, inverse_logabsdet - log_q

    def split(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_keep, x_drop) of ``inputs``, in the order the funnel uses them."""
        if self.order is not None:
            inputs = inputs[:, self.order]
        return inputs[:, : self.keep], inputs[:, self.keep :]
