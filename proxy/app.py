"""The GraphQL listener: one route, `server.path`, and the request log line.

The handler is written as one flat function because it is the hot path: every check is a
plain statement, and a cache hit touches no token, no upstream and no GraphQL parser.
"""

from __future__ import annotations

import asyncio
import re
import os
from itertools import chain, count
from time import perf_counter

import structlog
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from .errors import (
    BadRequest, MethodNotAllowed, RateLimited, NotFound, PayloadTooLarge, ProxyError, URITooLong,
    UnsupportedMediaType, HeadersTooLarge,
)
from .log import ACCESS_LOG
from .runtime import Runtime, RuntimeHolder
from .service import NAME, NO_DIRECTIVES, Directives, Outcome

log = structlog.get_logger("insights_proxy.app")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Generated ids are a random per-process prefix and a counter: unique, and cheaper than uuid4.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = count(1)
JSON_TYPES = frozenset({"application/json"})
# The content codings aiohttp 3.14 decodes in a request body without optional packages; it
# passes any other value through undecoded, as if it were "identity".
CONTENT_CODINGS = frozenset({"", "identity", "gzip", "deflate"})
ALLOW = "GET, POST"
MAX_DECOMPRESSED_BODY_BYTES = 64 * 2**20
CORS_HEADERS = "Content-Type, Authorization, X-Request-ID, Cache-Control, If-None-Match"


def create_proxy_server(holder: RuntimeHolder, **kwargs: object) -> web.Server:
    """Build the GraphQL listener as aiohttp's low-level server around one handler.

    The listener serves one path, so it needs no router, no middleware and no application.
    Leaving them out saves about a tenth of a cache hit's time. `kwargs` go to aiohttp's
    request handler (parser limits, cancellation, access log).
    """
    ACCESS_LOG.trusted_path = holder.current.settings.server.path
    return web.Server(GraphQLHandler(holder), request_factory=_request_factory, **kwargs)


def _request_factory(message, payload, protocol, writer, task) -> web.BaseRequest:  # type: ignore[no-untyped-def]
    # Body limits are checked in `_read_body` against the current runtime's settings; aiohttp's
    # own cap only bounds a decompressed body, which `_read_body` cannot see beforehand.
    return web.BaseRequest(message, payload, protocol, writer, task, protocol._loop,
                           client_max_size=MAX_DECOMPRESSED_BODY_BYTES)


class GraphQLHandler:
    """Handle every request of the GraphQL listener with the runtime current when it starts."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self._holder = holder

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = perf_counter()
        runtime = self._holder.current
        request_id = request.headers.get("X-Request-ID")
        if request_id is None or REQUEST_ID.match(request_id) is None:
            request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
        client: str | None = None
        origin: str | None = None
        runtime.enter()
        try:
            try:
                _admit(request, runtime)
                origin = runtime.origins.check(request.headers)
                if runtime.clients.enabled:
                    client = _authenticate(request, runtime, origin)
                outcome = await _answer(request, runtime, request_id)
            except RateLimited as exc:
                client = exc.client
                outcome = _error_outcome(exc)
            except ProxyError as exc:
                outcome = _error_outcome(exc)
            except asyncio.CancelledError:
                _log_line(request, runtime, request_id, client, None, started, cancelled=True)
                raise
            except Exception:
                log.exception("request.failed", request_id=request_id, path=request.path)
                outcome = _error_outcome(ProxyError(
                    f"the proxy failed unexpectedly; the log has the details under request id "
                    f"{request_id}"))
            response = _respond(outcome, request_id, origin)
            _log_line(request, runtime, request_id, client, outcome, started)
            return response
        finally:
            runtime.leave()


def _admit(request: web.BaseRequest, runtime: Runtime) -> None:
    """Check Host, path and sizes: the checks before origin, key, cache, token or upstream."""
    runtime.hosts.check(request.headers.get("Host"))
    server = runtime.settings.server
    raw_path = request.raw_path
    if raw_path != server.path and raw_path.partition("?")[0] != server.path:
        raise NotFound(f"nothing is served at {raw_path.partition('?')[0][:200]!r}; "
                       f"send GraphQL requests to {server.path}")
    if len(raw_path) > server.max_url_bytes:
        raise URITooLong(f"the URL is {len(raw_path)} bytes long, over the limit of "
                         f"{server.max_url_bytes} (server.max_url_bytes); send the query with "
                         "POST instead")
    raw_headers = request.raw_headers
    # Each line is "name: value\r\n", four bytes more than the name and the value.
    header_bytes = sum(map(len, chain.from_iterable(raw_headers))) + 4 * len(raw_headers)
    if header_bytes > server.max_header_bytes:
        raise HeadersTooLarge(f"the request headers are {header_bytes} bytes, over the limit of "
                              f"{server.max_header_bytes} (server.max_header_bytes)")


def _authenticate(request: web.BaseRequest, runtime: Runtime, origin: str | None) -> str | None:
    """Return the client's name when client keys are configured."""
    if (request.method == "OPTIONS" and origin is not None
            and "Access-Control-Request-Method" in request.headers):
        # Browsers never attach credentials to a CORS preflight, so it cannot carry a client
        # key; the request that follows it must.
        return None
    return runtime.clients.authenticate(request.headers.get("Authorization"))


async def _answer(request: web.BaseRequest, runtime: Runtime, request_id: str) -> Outcome:
    method = request.method
    if method == "POST":
        body = _arrived_body(request, runtime)
        if body is None:
            body = await _read_body(request, runtime)
        graphql_request = runtime.reader.from_body(body)
    elif method == "GET":
        graphql_request = runtime.reader.from_params(request.query_string, request.query)
        if not graphql_request.is_query:
            raise MethodNotAllowed(f"a {graphql_request.operation_type} cannot be sent with "
                                   "GET; use POST", headers={"Allow": "POST"})
    elif method == "OPTIONS" and request.headers.get("Origin"):
        return Outcome(204, [("Access-Control-Allow-Methods", ALLOW),
                             ("Access-Control-Allow-Headers", CORS_HEADERS),
                             ("Access-Control-Max-Age", "600")], b"", "fwd=bypass")
    else:
        raise MethodNotAllowed(f"method {method} is not supported; use GET or POST",
                               headers={"Allow": ALLOW})
    directives = _directives(request)
    service = runtime.service
    # A fresh hit is served without creating the coroutine of `answer`.
    return (service.fresh_hit(graphql_request, directives)
            or await service.answer(graphql_request, directives, request_id))


def _arrived_body(request: web.BaseRequest, runtime: Runtime) -> bytes | None:
    """Check the body's headers and return the body if all of it has already arrived.

    Return None when it must be read (not all there yet, chunked or compressed). Small bodies
    have usually arrived with the headers, and taking them here without a coroutine and a read
    loop saves a few percent of a cache hit.
    """
    headers = request.headers
    content_type = headers.get("Content-Type", "")
    if content_type != "application/json":
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type not in JSON_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {content_type[:100]!r} is not supported; send the GraphQL "
                "request as application/json")
    encoding = headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() not in CONTENT_CODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:100]!r} is not supported; send the body uncompressed "
            "or with gzip or deflate")
    length = request.content_length
    limit = runtime.settings.server.max_body_bytes
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes, over the limit of {limit} "
                              "(server.max_body_bytes)")
    payload = request.content
    if (length is not None and "Content-Encoding" not in headers and payload.is_eof()
            and payload.exception() is None):
        return payload.read_nowait()
    return None  # `_read_body` reads it, and turns a broken body into the right error


async def _read_body(request: web.BaseRequest, runtime: Runtime) -> bytes:
    """Read a body that `_arrived_body` accepted but could not take yet."""
    limit = runtime.settings.server.max_body_bytes
    if (request.version == HttpVersion11
            and request.headers.get("Expect", "").strip().lower() == "100-continue"):
        # The client waits for this before it sends the body. aiohttp's router would send it,
        # but the listener has none; the checks in `_arrived_body` have passed by now.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim response is not part of the response size
    # NOTE: aiohttp 3.14 does not pass a chunk-framing error that arrives after this read
    # started on to `read()`, so such a request waits until the client disconnects.
    try:
        if request.content_length is not None and "Content-Encoding" not in request.headers:
            # Within the limit checked before; aiohttp reads exactly Content-Length bytes.
            return await request.read()
        # Chunked or compressed: count the decoded bytes against the current runtime's limit,
        # so a reloaded server.max_body_bytes applies and a compression bomb stops early.
        body = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            body.extend(chunk)
            if len(body) > limit:
                raise PayloadTooLarge(f"the body is over the limit of {limit} bytes "
                                      "(server.max_body_bytes)")
        return bytes(body)
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes "
                              "(server.max_body_bytes)") from None
    except web.RequestPayloadError as exc:
        # NOTE: the client gets this 400, but aiohttp then reads on to discard the rest of the
        # body. It meets the same error and logs it as "Unhandled exception" with a traceback.
        raise BadRequest("the request body cannot be decoded or its framing is invalid; "
                         "check Content-Encoding and Transfer-Encoding") from exc
    except ConnectionResetError:
        raise BadRequest("the connection closed before the whole request body arrived") from None


def _directives(request: web.BaseRequest) -> Directives:
    headers = request.headers
    if ("Cache-Control" not in headers and "Pragma" not in headers
            and "If-None-Match" not in headers):
        return NO_DIRECTIVES
    directives = Directives(if_none_match=headers.get("If-None-Match"))
    cache_control = ",".join(headers.getall("Cache-Control", ()))
    if cache_control:
        for part in cache_control.lower().split(","):
            name, _, value = part.strip().partition("=")
            name = name.strip()
            if name == "no-cache" or (name == "max-age" and value.strip().strip('"') .isdigit()
                                      and int(value.strip().strip('"')) == 0):
                directives.no_cache = True
            elif name == "no-store":
                directives.no_store = True
    if headers.get("Pragma", "").lower() == "no-cache" and not cache_control:
        directives.no_cache = True
    return directives


def _error_outcome(error: ProxyError) -> Outcome:
    headers = [("Content-Type", "application/json"), *error.headers.items()]
    return Outcome(error.status, headers, error.body(), "fwd=bypass", code=error.code)


def _respond(outcome: Outcome, request_id: str, origin: str | None) -> web.Response:
    headers = CIMultiDict(outcome.headers)
    headers.add("X-Request-ID", request_id)
    headers.add("Cache-Status", f"{NAME}; {outcome.cache_status}")
    if origin is not None:
        headers.add("Access-Control-Allow-Origin", origin)
        headers.add("Access-Control-Expose-Headers", "Cache-Status, Age, ETag, X-Request-ID")
        headers.add("Vary", "Origin")
    # aiohttp uses a CIMultiDict without copying it, then adds Content-Length, Date and Server.
    return web.Response(status=outcome.status, body=outcome.body or None, headers=headers)


def _log_line(request: web.BaseRequest, runtime: Runtime, request_id: str, client: str | None,
              outcome: Outcome | None, started: float, *, cancelled: bool = False) -> None:
    elapsed = perf_counter() - started
    status = 499 if cancelled or outcome is None else outcome.status
    code = outcome.code if outcome is not None else "CLIENT_CLOSED_REQUEST"
    cache = outcome.cache_status.partition(";")[0] if outcome is not None else "none"
    upstream_s = outcome.upstream_s if outcome is not None else None
    runtime.metrics.record_request(status, code or "", cache, client or "", elapsed, upstream_s,
                                   outcome.upstream_status if outcome is not None else None)
    if not ACCESS_LOG.enabled:
        return
    ACCESS_LOG.write({
        "request_id": request_id,
        "client": client,
        "method": request.method,
        "path": request.path[:200],
        "status": status,
        "code": code,
        "upstream_status": outcome.upstream_status if outcome is not None else None,
        "cache": outcome.cache_status if outcome is not None else None,
        "duration_ms": round(elapsed * 1000, 2),
        "upstream_ms": round(upstream_s * 1000, 2) if upstream_s is not None else None,
        "remote": request.remote,
    })
