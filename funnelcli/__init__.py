"""funnelcli: exact-likelihood funnel flows for tables."""

__version__ = "0.1.0"
