"""The admin listener: health, readiness, token control, cache purge, reload and metrics.

Every route but `/healthz` needs `Authorization: Bearer <admin.token>` when a token is set,
compared in constant time. Browser requests (any `Origin`, or `Sec-Fetch-Site: cross-site`) and
`Host` values outside `server.allowed_hosts` are rejected, so a web page cannot drive these
routes. Responses never contain a token or secret: tokens appear only as fingerprints.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from .errors import ClientKeyRequired, MethodNotAllowed, NotFound, OriginNotAllowed, ProxyError, TokenError
from .keys import METRICS, RELOADER, RUNTIME
from .metrics import Metrics
from .reload import Reloader
from .runtime import RuntimeHolder

audit = structlog.get_logger("insights_proxy.audit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTES: dict[str, tuple[str, str]] = {
    "/healthz": ("GET", "healthz"),
    "/readyz": ("GET", "readyz"),
    "/metrics": ("GET", "metrics"),
    "/admin/token": ("GET", "token_status"),
    "/admin/token/revoke": ("POST", "revoke"),
    "/admin/token/refresh": ("POST", "refresh"),
    "/admin/cache/purge": ("POST", "purge"),
    "/admin/reload": ("POST", "reload"),
}


def create_admin_app(holder: RuntimeHolder, metrics: Metrics, reloader: Reloader) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[RUNTIME] = holder
    app[METRICS] = metrics
    app[RELOADER] = reloader
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def dispatch(request: web.Request) -> web.StreamResponse:
    try:
        route = ROUTES.get(request.path)
        if route is None:
            raise NotFound(f"no admin route at {request.path[:200]!r}; see the routes in the "
                           "operations guide")
        method, name = route
        if request.method != method:
            raise MethodNotAllowed(f"{request.path} takes {method} only",
                                   headers={"Allow": method})
        if name != "healthz":
            _guard(request)
        return await HANDLERS[name](request)
    except ProxyError as exc:
        return web.Response(status=exc.status, body=exc.body(), headers=exc.headers,
                            content_type="application/json")


def _guard(request: web.Request) -> None:
    runtime = request.app[RUNTIME].current
    runtime.hosts.check(request.headers.get("Host"))
    if "Origin" in request.headers or \
            request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        raise OriginNotAllowed("the admin routes do not accept browser requests; call them "
                               "with insights-proxy admin or curl")
    expected = runtime.settings.admin.token.get_secret_value()
    if not expected:
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(),
                                                             expected.encode()):
        audit.warning("admin.denied", path=request.path, remote=request.remote)
        raise ClientKeyRequired("this admin route requires 'Authorization: Bearer <admin.token>'",
                                headers={"WWW-Authenticate": 'Bearer realm="insights-proxy-admin"'})


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload, indent=2) + "\n",
                        content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[RUNTIME].draining:
        return _json({"ready": False, "reason": "the proxy is shutting down", "code": None}, 503)
    status = request.app[RUNTIME].current.tokens.status()
    if status["fingerprint"] is not None:
        return _json({"ready": True, "token": status["state"]})
    reason = status["last_error"] or "no token has been obtained yet"
    return _json({"ready": False, "reason": reason, "code": status["last_error_code"]}, 503)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    runtime = request.app[RUNTIME].current

    def refresh() -> None:
        token = runtime.tokens.status()
        registry.token_expires_in.set(max(0.0, token["expires_in_s"] or 0.0))
        entries, size = runtime.service.cache.stats()
        registry.cache_entries.set(entries)
        registry.cache_bytes.set(size)

    body = registry.render(refresh)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def token_status(request: web.Request) -> web.Response:
    return _json(request.app[RUNTIME].current.tokens.status())


async def revoke(request: web.Request) -> web.Response:
    tokens = request.app[RUNTIME].current.tokens
    new_error: TokenError | None = None
    try:
        old, outcome = await tokens.revoke_and_replace()
    except TokenError as exc:
        new_error = exc
        old, outcome = tokens.last_revoked, tokens.last_revocation
    if outcome is None:
        _audit(request, "revoke", "nothing")
        return _json({"revoked": False, "message": "no token was held; nothing to revoke"})
    new = tokens.current()
    payload = {
        "revoked": outcome.ok,
        "old_fingerprint": old.fingerprint if old else None,
        "new_fingerprint": new.fingerprint if new else None,
        "revocation": {"ok": outcome.ok, "status": outcome.status, "detail": outcome.detail},
        "new_token_error": new_error.message if new_error else None,
    }
    _audit(request, "revoke", "ok" if outcome.ok else "failed",
           old_fingerprint=payload["old_fingerprint"], new_fingerprint=payload["new_fingerprint"])
    return _json(payload, 200 if outcome.ok and new_error is None else 502)


async def refresh(request: web.Request) -> web.Response:
    tokens = request.app[RUNTIME].current.tokens
    before = tokens.current()
    try:
        token = await tokens.refresh()
    except TokenError as exc:
        _audit(request, "refresh", "failed", error=exc.message)
        return web.Response(status=exc.status, body=exc.body(), headers=exc.headers,
                            content_type="application/json")
    _audit(request, "refresh", "ok", old_fingerprint=before.fingerprint if before else None,
           new_fingerprint=token.fingerprint)
    return _json({"old_fingerprint": before.fingerprint if before else None,
                  "new_fingerprint": token.fingerprint, "reissued": token.reissued,
                  "expires_in_s": round(token.expires_at - tokens.status_clock(), 1)})


async def purge(request: web.Request) -> web.Response:
    removed = request.app[RUNTIME].current.service.cache.purge()
    _audit(request, "cache_purge", "ok", removed=removed)
    return _json({"removed": removed})


async def reload(request: web.Request) -> web.Response:
    ok, detail = await request.app[RELOADER].reload(source="admin")
    _audit(request, "reload", "ok" if ok else "rejected")
    return _json(detail, 200 if ok else 400)


def _audit(request: web.Request, action: str, outcome: str, **fields: Any) -> None:
    audit.info("admin.action", action=action, outcome=outcome, remote=request.remote, **fields)


HANDLERS: dict[str, Handler] = {
    "healthz": healthz, "readyz": readyz, "metrics": metrics, "token_status": token_status,
    "revoke": revoke, "refresh": refresh, "purge": purge, "reload": reload,
}
