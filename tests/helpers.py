"""Shared checks: "is a well-behaved bijection" and "is a well-behaved funnel"."""

from __future__ import annotations

import torch

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
