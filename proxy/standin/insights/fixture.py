"""The fixture organization whose analytics the Insights stand-in serves.

Shapes follow Choreo: the organization has a UUID (the ``orgId`` of every ``DataFilter``) besides
its handle, environments of type ``CHOREO`` are known by several ids (``id``, ``externalEnvId``,
``internalEnvId``, ``sandboxEnvId``) and the tenant is always ``carbon.super``. Every record here
is frozen and hashable, so one traffic model can be cached per organization.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass


@dataclass(frozen=True)
class Environment:
    """A deployment environment and the aliases that Insights accepts for it."""

    id: str
    name: str
    type: str  # a value of the EnvironmentType enum: CHOREO, CHOREO_PRIVATE or ON_PREM
    external_env_id: str
    internal_env_id: str | None
    sandbox_env_id: str | None
    # Multiplier on each API's peak hourly requests: production carries the real load.
    traffic_scale: float

    @property
    def aliases(self) -> tuple[str, ...]:
        ids = (self.id, self.external_env_id, self.internal_env_id, self.sandbox_env_id)
        return tuple(env_id for env_id in ids if env_id)


@dataclass(frozen=True)
class Project:
    id: str
    name: str


@dataclass(frozen=True)
class Application:
    """A consumer application; its owner is the subscriber in Insights terms."""

    id: str
    name: str
    owner: str


@dataclass(frozen=True)
class Subscription:
    application_id: str
    # Share of the API's authenticated requests that come from this application.
    share: float


@dataclass(frozen=True)
class Resource:
    template: str
    method: str
    # Relative share of the API's requests that this resource receives.
    weight: float


@dataclass(frozen=True)
class Api:
    """A managed API with the parameters of its synthetic traffic."""

    id: str
    name: str
    version: str
    provider: str
    display_name: str
    project_id: str
    # Backend URL; "{env}" is replaced by the lower-case environment name.
    backend: str
    peak_hourly_requests: float
    # Typical share of requests that end with a 4xx or 5xx status.
    error_rate: float
    # Typical 95th percentile of the backend latency, in ms.
    backend_latency_ms: float
    # Share of cacheable requests served from the response cache; None when caching is off.
    cache_hit_ratio: float | None
    resources: tuple[Resource, ...]
    subscriptions: tuple[Subscription, ...]

    def backend_url(self, environment: Environment) -> str:
        return self.backend.replace("{env}", environment.name.lower())


@dataclass(frozen=True)
class AutomationComponent:
    """A scheduled task component (Devant automation) that runs every ``interval_minutes``."""

    id: str
    name: str
    project_id: str
    interval_minutes: int
    # Runs start at the minutes (since the Unix epoch) congruent to this modulo interval_minutes.
    start_minute: int
    failure_rate: float
    timeout_rate: float


@dataclass(frozen=True)
class Organization:
    """A Choreo organization with everything that Insights reports about it."""

    id: str
    uuid: str
    handle: str
    name: str
    tenant: str
    # The key that getSuccessAPIsUsageByApplicationsWithOnPremKey accepts for this organization.
    on_prem_key: str
    # Unix time in seconds of the first recorded request; earlier ranges have no data.
    data_start: int
    projects: tuple[Project, ...]
    environments: tuple[Environment, ...]
    applications: tuple[Application, ...]
    apis: tuple[Api, ...]
    automations: tuple[AutomationComponent, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for environment in self.environments:
            for alias in environment.aliases:
                if seen.setdefault(alias, environment.id) != environment.id:
                    raise ValueError(f"environment alias {alias!r} is used by two environments; give each its own ids")
        application_ids = {application.id for application in self.applications}
        for api in self.apis:
            for subscription in api.subscriptions:
                if subscription.application_id not in application_ids:
                    raise ValueError(
                        f"API {api.name!r} subscribes unknown application {subscription.application_id!r}; "
                        "add it to Organization.applications"
                    )

    def find_environment(self, env_id: str) -> Environment | None:
        """Return the environment that has ``env_id`` as its id or as one of its aliases."""
        for environment in self.environments:
            if env_id in environment.aliases:
                return environment
        return None

    def find_api(self, api_id: str) -> Api | None:
        return next((api for api in self.apis if api.id == api_id), None)

    def find_application(self, application_id: str) -> Application | None:
        return next((app for app in self.applications if app.id == application_id), None)


def _utc_epoch(year: int, month: int, day: int) -> int:
    return calendar.timegm((year, month, day, 0, 0, 0))


_STOREFRONT = Project(id="38417ae1-2f7b-45b0-b572-14c79c90e37f", name="Storefront")
_LOGISTICS = Project(id="350f1b36-14aa-4fc8-ab59-2ae8e4d045cf", name="Logistics")

_WEB = Application(id="a4e707db-f13e-4ae8-bee1-a796446f4bb4", name="Acme Web Storefront", owner="priya.raman@acme.example")
_MOBILE = Application(id="171f8764-413c-422a-a193-93cdbdea2bc3", name="Acme Mobile App", owner="daniel.okafor@acme.example")
_PARTNER = Application(id="993ce816-d829-4fac-9f0d-77ab3f92371e", name="Partner Portal", owner="kenji.sato@acme.example")
_SCANNER = Application(id="a42e4134-7f3f-4a35-ae9f-3cda2915d5b6", name="Warehouse Scanner", owner="lena.fischer@acme.example")
_BILLING = Application(id="717dacac-4aae-4a67-8012-6f5c31f2e34b", name="Billing Reconciler", owner="marco.rossi@acme.example")

FIXTURE_ORG = Organization(
    id="70412",
    uuid="df58b748-bd64-4d3d-adb9-37caa645f161",
    handle="acme",
    name="Acme Corporation",
    tenant="carbon.super",
    on_prem_key="c42df3ac-04fb-471f-b809-19ca19e76922",
    data_start=_utc_epoch(2024, 1, 1),
    projects=(_STOREFRONT, _LOGISTICS),
    environments=(
        Environment(
            id="c890d59b-81b8-4bdb-8110-25fe57662187",
            name="Development",
            type="CHOREO",
            external_env_id="dev-us-east-azure",
            internal_env_id="Dev-Internal",
            sandbox_env_id="sandbox-dev",
            traffic_scale=0.06,
        ),
        Environment(
            id="6122ae8f-88db-4e9d-942b-fb3c7a538611",
            name="Production",
            type="CHOREO",
            external_env_id="prod-us-east-azure",
            internal_env_id="Prod-Internal",
            sandbox_env_id="sandbox-prod",
            traffic_scale=1.0,
        ),
    ),
    applications=(_WEB, _MOBILE, _PARTNER, _SCANNER, _BILLING),
    apis=(
        Api(
            id="627e3e59-b3d2-4e81-ac27-c0e8f4db2055",
            name="Orders API",
            version="v1.0",
            provider="priya.raman@acme.example",
            display_name="Orders",
            project_id=_STOREFRONT.id,
            backend="http://orders-svc.storefront-{env}.svc.cluster.local:8080",
            peak_hourly_requests=900,
            error_rate=0.04,
            backend_latency_ms=180,
            cache_hit_ratio=None,
            resources=(
                Resource("/orders", "GET", 0.34),
                Resource("/orders", "POST", 0.22),
                Resource("/orders/{orderId}", "GET", 0.30),
                Resource("/orders/{orderId}", "PATCH", 0.09),
                Resource("/orders/{orderId}", "DELETE", 0.05),
            ),
            subscriptions=(Subscription(_WEB.id, 0.55), Subscription(_MOBILE.id, 0.35), Subscription(_PARTNER.id, 0.10)),
        ),
        Api(
            id="38c38d47-d65b-41bc-a70a-bc31f9f334fc",
            name="Payments API",
            version="v1.0",
            provider="priya.raman@acme.example",
            display_name="Payments",
            project_id=_STOREFRONT.id,
            backend="http://payments-svc.storefront-{env}.svc.cluster.local:8080",
            peak_hourly_requests=420,
            error_rate=0.025,
            backend_latency_ms=320,
            cache_hit_ratio=None,
            resources=(
                Resource("/payments", "POST", 0.46),
                Resource("/payments/{paymentId}", "GET", 0.38),
                Resource("/payments/{paymentId}/refunds", "POST", 0.16),
            ),
            subscriptions=(Subscription(_WEB.id, 0.50), Subscription(_MOBILE.id, 0.30), Subscription(_BILLING.id, 0.20)),
        ),
        Api(
            id="9b35cb93-95bb-4906-8235-4329e4f464cb",
            name="Customer Profile API",
            version="1.0.0",
            provider="daniel.okafor@acme.example",
            display_name="Customer Profile",
            project_id=_STOREFRONT.id,
            backend="http://profile-svc.storefront-{env}.svc.cluster.local:8080",
            peak_hourly_requests=650,
            error_rate=0.03,
            backend_latency_ms=95,
            cache_hit_ratio=0.72,
            resources=(
                Resource("/customers/{customerId}", "GET", 0.58),
                Resource("/customers/{customerId}", "PUT", 0.12),
                Resource("/customers/{customerId}/addresses", "GET", 0.22),
                Resource("/customers", "POST", 0.08),
            ),
            subscriptions=(Subscription(_WEB.id, 0.60), Subscription(_MOBILE.id, 0.40)),
        ),
        Api(
            id="40b6293d-2b96-42dd-878c-96f227bea7eb",
            name="Inventory Service",
            version="1.0.0",
            provider="lena.fischer@acme.example",
            display_name="Inventory",
            project_id=_LOGISTICS.id,
            backend="http://inventory-svc.logistics-{env}.svc.cluster.local:8080",
            peak_hourly_requests=300,
            error_rate=0.05,
            backend_latency_ms=140,
            cache_hit_ratio=0.45,
            resources=(
                Resource("/items", "GET", 0.40),
                Resource("/items/{sku}", "GET", 0.35),
                Resource("/items/{sku}/stock", "PUT", 0.25),
            ),
            subscriptions=(Subscription(_SCANNER.id, 0.70), Subscription(_PARTNER.id, 0.20), Subscription(_WEB.id, 0.10)),
        ),
        Api(
            id="0d01a559-de05-45b0-8f47-16439e0f49f2",
            name="Shipping Rates API",
            version="v1.0",
            provider="lena.fischer@acme.example",
            display_name="Shipping Rates",
            project_id=_LOGISTICS.id,
            backend="https://api.shipfast.example/v2",
            peak_hourly_requests=180,
            error_rate=0.06,
            backend_latency_ms=450,
            cache_hit_ratio=0.30,
            resources=(
                Resource("/rates", "POST", 0.80),
                Resource("/carriers", "GET", 0.20),
            ),
            subscriptions=(Subscription(_WEB.id, 0.50), Subscription(_SCANNER.id, 0.50)),
        ),
        Api(
            id="2146f920-b205-455f-a6b8-dbe71a7a36b3",
            name="hello-world-service",
            version="v1.0",
            provider="kenji.sato@acme.example",
            display_name="Hello World",
            project_id=_STOREFRONT.id,
            backend="http://hello-world.storefront-{env}.svc.cluster.local:9090",
            peak_hourly_requests=24,
            error_rate=0.02,
            backend_latency_ms=12,
            cache_hit_ratio=None,
            resources=(Resource("/greeting", "GET", 1.0),),
            subscriptions=(Subscription(_PARTNER.id, 1.0),),
        ),
    ),
    automations=(
        AutomationComponent(
            id="fd674f45-1bee-4d2a-b04f-7480bcf4e916",
            name="inventory-sync",
            project_id=_LOGISTICS.id,
            interval_minutes=15,
            start_minute=5,
            failure_rate=0.03,
            timeout_rate=0.01,
        ),
        AutomationComponent(
            id="5bc20dad-28ff-44e8-b443-168d5097245f",
            name="stale-cart-cleanup",
            project_id=_STOREFRONT.id,
            interval_minutes=60,
            start_minute=30,
            failure_rate=0.02,
            timeout_rate=0.0,
        ),
        AutomationComponent(
            id="771e346b-dcad-482c-874d-1dd596361318",
            name="nightly-invoice-export",
            project_id=_STOREFRONT.id,
            interval_minutes=1440,
            start_minute=120,
            failure_rate=0.08,
            timeout_rate=0.04,
        ),
    ),
)
