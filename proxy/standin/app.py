"""Assembly of the stand-in app, a runner that serves it on a local port, and its URLs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.standin.faults import Faults, add_control_routes
from proxy.standin.gateway import add_gateway_routes, insights_path, route_not_found
from proxy.standin.jwt import SigningKey
from proxy.standin.settings import StandinSettings
from proxy.standin.state import STANDIN_STATE, StandinState
from proxy.standin.sts import add_sts_routes
from proxy.standin.tokens import TokenStore

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Under these prefixes a wrong method keeps aiohttp's 405 with an Allow header. Elsewhere it gets the router's 404.
_OWN_PREFIXES = ("/oauth2/", "/_standin/")


@web.middleware
async def router_not_found(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Replace aiohttp's 404, and its 405 outside the STS and control routes, with Choreo Connect's router 404."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return route_not_found()
    except web.HTTPMethodNotAllowed:
        if request.path.startswith(_OWN_PREFIXES):
            raise
        return route_not_found()


async def _release_pauses(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for in-flight handlers, so injected sleeps end at once.
    app[STANDIN_STATE].closing.set()


def create_standin_app(settings: StandinSettings | None = None) -> web.Application:
    """Build the stand-in: STS, Insights gateway and control routes, with a freshly generated signing key."""
    settings = settings or StandinSettings()
    signing_key = SigningKey.generate()
    state = StandinState(
        settings=settings,
        faults=Faults.from_settings(settings),
        signing_key=signing_key,
        tokens=TokenStore(signing_key, settings.clock),
    )

    app = web.Application(middlewares=[router_not_found])
    app[STANDIN_STATE] = state
    add_sts_routes(app)
    add_gateway_routes(app, settings.org_prefix)
    add_control_routes(app)
    app.on_shutdown.append(_release_pauses)
    return app


def _base_url(host: str, port: int) -> str:
    # A wildcard address is not reachable as a destination, so the URLs name loopback instead.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def start_standin(
    settings: StandinSettings | None = None, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve a new stand-in on ``host:port`` (0 picks a free port) and return its runner and base URL.

    The caller stops it with ``await runner.cleanup()``. ``host`` should be one address such as
    127.0.0.1: with port 0, a name such as localhost may bind each of its addresses to a different port.

    Raises:
        OSError: the address cannot be bound, for example because the port is in use.
    """
    runner = web.AppRunner(create_standin_app(settings), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, _base_url(host, bound_port)


def token_url(base: str) -> str:
    return f"{base.rstrip('/')}/oauth2/token"


def revoke_url(base: str) -> str:
    return f"{base.rstrip('/')}/oauth2/revoke"


def jwks_url(base: str) -> str:
    return f"{base.rstrip('/')}/oauth2/jwks"


def insights_url(base: str, org_prefix: str = "93tu") -> str:
    return f"{base.rstrip('/')}{insights_path(org_prefix)}"


def stats_url(base: str) -> str:
    return f"{base.rstrip('/')}/_standin/stats"


def faults_url(base: str) -> str:
    return f"{base.rstrip('/')}/_standin/faults"
