"""choreo-insights-proxy: a token-free local gateway to the WSO2 Choreo Insights GraphQL API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
