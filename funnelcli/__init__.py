"""funnelcli: exact-likelihood funnel flows for tables."""

from funnelcli._version import __version__

__all__ = ["FunnelDensity", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `funnel --help` and `import funnelcli` do not pay for importing torch.
    if name == "FunnelDensity":
        from funnelcli.estimator import FunnelDensity

        return FunnelDensity
    raise AttributeError(f"module 'funnelcli' has no attribute {name!r}")
