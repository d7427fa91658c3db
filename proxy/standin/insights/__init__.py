"""The GraphQL layer of the Choreo stand-in: the Insights schema served with deterministic data.

`InsightsService` validates and executes queries against `FIXTURE_ORG`, one organization with two
Choreo environments, six APIs, five applications and three scheduled tasks. The traffic model
and its consistency rules are described in `proxy.standin.insights.traffic`; time filters,
granularities and bucket labels in `proxy.standin.insights.timerange`.
"""

from proxy.standin.insights.fixture import FIXTURE_ORG, Organization
from proxy.standin.insights.service import InsightsService

__all__ = ["FIXTURE_ORG", "InsightsService", "Organization"]
