"""The GraphQL endpoint end to end: proxy and stand-in on loopback sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest
from aiohttp import web

from proxy.standin.insights import FIXTURE_ORG

from .conftest import SAMPLE_QUERY, proxy_config


def org_variables() -> dict:
    return {"org": {"orgId": FIXTURE_ORG.uuid}}


async def test_sample_query_returns_environments(proxy, stand_in):
    """The documented listEnvironments query works through the proxy without a token."""
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 200
    names = sorted(env["name"] for env in body["data"]["listEnvironments"])
    assert names == ["Development", "Production"]
    assert response.headers["X-Request-ID"]
    assert stand_in.stats["token_requests"] == 1


async def test_get_request_sent_upstream_as_post(proxy, stand_in):
    """A GET with URL parameters reaches the upstream as a JSON POST."""
    params = {"query": SAMPLE_QUERY, "variables": json.dumps(org_variables())}
    async with proxy.session.get(proxy.url, params=params) as response:
        body = await response.json()
    assert response.status == 200
    assert len(body["data"]["listEnvironments"]) == 2
    recorded = stand_in.state.recorded[-1]
    assert recorded.method == "POST"
    assert recorded.json()["query"] == SAMPLE_QUERY


async def test_cold_start_burst_one_token_request(stand_in, start_proxy):
    """200 concurrent requests at a cold start cause exactly one token request."""
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}))
    queries = [proxy.query(SAMPLE_QUERY, {"org": {"orgId": FIXTURE_ORG.uuid}, "n": i})
               for i in range(200)]
    results = await asyncio.gather(*queries)
    assert {response.status for response, _ in results} == {200}
    assert stand_in.stats["token_requests"] == 1


async def test_upstream_401_replayed_once(proxy, stand_in):
    """An upstream 401 drops the token, obtains a new one and replays the same body."""
    await proxy.query(SAMPLE_QUERY, org_variables())
    async with proxy.session.post(f"{stand_in.base}/_standin/faults",
                                  json={"insights_fail_next": {"count": 1, "status": 401}}):
        pass
    response, body = await proxy.query(SAMPLE_QUERY, {**org_variables(), "x": 1})
    assert response.status == 200
    assert "listEnvironments" in body["data"]
    assert stand_in.stats["token_requests"] == 2
    first, second = stand_in.state.recorded[-2], stand_in.state.recorded[-1]
    assert first.body == second.body
    assert first.headers["Authorization"] != second.headers["Authorization"]


async def test_second_401_becomes_502(proxy, stand_in):
    """A fresh token rejected again gives 502 UPSTREAM_REJECTED_TOKEN."""
    async with proxy.session.post(f"{stand_in.base}/_standin/faults",
                                  json={"insights_fail_next": {"count": 2, "status": 401}}):
        pass
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 502
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_REJECTED_TOKEN"


async def test_upstream_403_passed_through(start_stand_in, start_proxy):
    """A 403 (application not subscribed) passes through untouched."""
    stand_in = await start_stand_in(subscribed=False)
    proxy = await start_proxy(proxy_config(stand_in))
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 403
    assert body["code"] == "900908"
    assert stand_in.stats["token_requests"] == 1


@pytest.mark.parametrize("mode", ["revoke_previous", "keep_previous", "reuse"])
async def test_reissue_modes_steady_traffic(start_stand_in, start_proxy, mode):
    """Under each re-issue mode, steady traffic across token lifetimes gets no client error."""
    stand_in = await start_stand_in(token_lifetime_s=3, reissue=mode)
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}))
    statuses: list[int] = []
    deadline = time.monotonic() + 7

    async def client(number: int) -> None:
        count = 0
        while time.monotonic() < deadline:
            count += 1
            response, _ = await proxy.query(SAMPLE_QUERY, {**org_variables(), "c": number,
                                                          "n": count})
            statuses.append(response.status)
            await asyncio.sleep(0.05)

    await asyncio.gather(*(client(i) for i in range(8)))
    assert set(statuses) == {200}
    stats = stand_in.stats
    assert stats["expired_tokens_presented"] == 0
    assert stats["token_requests"] <= 7


class RecordingUpstream:
    """An upstream that records request headers and responds with awkward headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        body = gzip.compress(json.dumps({"data": {"listOrganizations": []}}).encode())
        return web.Response(body=body, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip",
            "Set-Cookie": "session=abc", "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1", "Keep-Alive": "timeout=5", "X-Upstream": "kept",
        })


async def test_header_hygiene_both_directions(stand_in, start_proxy, aiohttp_server):
    """Client credentials, cookies and hop-by-hop headers never cross the proxy either way."""
    upstream = RecordingUpstream()
    app = web.Application()
    app.router.add_post("/q", upstream.handle)
    server = await aiohttp_server(app)
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": str(server.make_url("/q"))}))
    headers = {"Authorization": "Bearer client-own-token", "Cookie": "a=b",
               "Connection": "X-Client-Hop", "X-Client-Hop": "1", "TE": "trailers",
               "Proxy-Authorization": "Basic eDp5", "X-Request-ID": "req-123"}
    response = await proxy.post({"query": "{ listOrganizations { id } }"}, headers=headers)
    body = await response.read()
    sent = upstream.headers[-1]
    assert sent["authorization"].startswith("Bearer ey")
    for name in ("cookie", "x-client-hop", "te", "proxy-authorization"):
        assert name not in sent
    assert sent["x-request-id"] == "req-123"
    for name in ("Set-Cookie", "X-Secret-Hop", "Keep-Alive", "Content-Encoding"):
        assert name not in response.headers
    assert response.headers["X-Upstream"] == "kept"
    assert response.headers["X-Request-ID"] == "req-123"
    assert int(response.headers["Content-Length"]) == len(body)
    assert json.loads(body) == {"data": {"listOrganizations": []}}


async def test_upstream_redirect_returned_not_followed(stand_in, start_proxy, aiohttp_server):
    """A 3xx from the upstream is returned to the client, never followed."""
    followed = []

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request)
        return web.json_response({"data": {}})

    app = web.Application()
    app.router.add_post("/q", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    server = await aiohttp_server(app)
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": str(server.make_url("/q"))}))
    response = await proxy.post({"query": "{ a }"}, allow_redirects=False)
    assert response.status == 307
    assert followed == []


def error_code(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize(("data", "content_type", "status", "code"), [
    (b"not json", "application/json", 400, "BAD_REQUEST"),
    (b"[1, 2]", "application/json", 400, "BAD_REQUEST"),
    (b'{"variables": {}}', "application/json", 400, "BAD_REQUEST"),
    (b'{"query": 5}', "application/json", 400, "BAD_REQUEST"),
    (b'{"query": "{ a }", "variables": [1]}', "application/json", 400, "BAD_REQUEST"),
    (b'{"query": "{ a }", "operationName": 7}', "application/json", 400, "BAD_REQUEST"),
    (b'{"query": "query A { a } query B { b }"}', "application/json", 400, "BAD_REQUEST"),
    (b'{"query": "{ a ", "variables": {}}', "application/json", 400, "GRAPHQL_PARSE_FAILED"),
    (b'{"query": "{ a }"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
    (b'query={a}', "application/x-www-form-urlencoded", 415, "UNSUPPORTED_MEDIA_TYPE"),
])
async def test_bad_requests_rejected(proxy, stand_in, data, content_type, status, code):
    """Bad bodies get a GraphQL-shaped error and nothing is sent upstream."""
    async with proxy.session.post(proxy.url, data=data,
                                  headers={"Content-Type": content_type}) as response:
        body = await response.json()
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert error_code(body) == code
    assert stand_in.stats["insights_requests"] == 0


async def test_parse_error_names_line_and_column(proxy, stand_in):
    """GRAPHQL_PARSE_FAILED carries the line and column of the syntax error."""
    response, body = await proxy.query("query {\n  listOrganizations {\n    id\n")
    assert response.status == 400
    assert error_code(body) == "GRAPHQL_PARSE_FAILED"
    assert "line 4, column 1" in body["errors"][0]["message"]


async def test_other_paths_not_found(proxy, stand_in):
    """Only server.path is served; every other path is 404 NOT_FOUND."""
    for path in ("/", "/query-api/", "/graphql", "/query-api/x", "//query-api"):
        async with proxy.session.post(proxy.url.replace("/query-api", path),
                                      json={"query": "{ a }"}) as response:
            body = await response.json()
        assert response.status == 404, path
        assert error_code(body) == "NOT_FOUND"
    assert stand_in.stats["insights_requests"] == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
async def test_other_methods_not_allowed(proxy, method):
    """Methods other than GET and POST get 405 with an Allow header."""
    async with proxy.session.request(method, proxy.url) as response:
        await response.read()
    assert response.status == 405
    assert response.headers["Allow"] == "GET, POST"


async def test_body_over_limit_413(stand_in, start_proxy):
    """A body over server.max_body_bytes gets 413, with or without a Content-Length."""
    proxy = await start_proxy(proxy_config(stand_in, server={"port": 0, "max_body_bytes": 1000}))
    payload = json.dumps({"query": "{ a }", "variables": {"pad": "x" * 2000}}).encode()
    async with proxy.session.post(proxy.url, data=payload,
                                  headers={"Content-Type": "application/json"}) as response:
        assert response.status == 413
        assert error_code(await response.json()) == "PAYLOAD_TOO_LARGE"

    async def chunks():
        for _ in range(4):
            yield payload[:600]

    async with proxy.session.post(proxy.url, data=chunks(),
                                  headers={"Content-Type": "application/json"}) as response:
        assert response.status == 413
    assert stand_in.stats["insights_requests"] == 0


async def test_url_over_limit_414(proxy):
    """A URL over server.max_url_bytes gets 414 with a hint to use POST."""
    async with proxy.session.get(proxy.url, params={"query": "{ a }" + " " * 9000}) as response:
        body = await response.json()
    assert response.status == 414
    assert "POST" in body["errors"][0]["message"]


async def test_headers_over_limit_431(proxy):
    """Request headers over server.max_header_bytes get 431."""
    async with proxy.session.post(proxy.url, json={"query": "{ a }"},
                                  headers={"X-Big": "x" * 17000}) as response:
        body = await response.json()
    assert response.status == 431
    assert error_code(body) == "HEADERS_TOO_LARGE"


async def test_mutation_over_get_405(proxy, stand_in):
    """A mutation sent with GET is refused with 405 and Allow: POST."""
    async with proxy.session.get(proxy.url, params={"query": "mutation { a }"}) as response:
        await response.read()
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert stand_in.stats["insights_requests"] == 0


async def test_wrong_secret_token_endpoint_error(start_stand_in, start_proxy):
    """Rejected credentials give 502 TOKEN_ENDPOINT_ERROR naming the OAuth error."""
    stand_in = await start_stand_in()
    raw = proxy_config(stand_in)
    raw["oauth"]["client_secret"] = "wrong-secret-123"
    proxy = await start_proxy(raw)
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 502
    assert error_code(body) == "TOKEN_ENDPOINT_ERROR"
    assert "invalid_client" in body["errors"][0]["message"]
    assert "wrong-secret-123" not in json.dumps(body)


async def test_token_endpoint_down_503(stand_in, start_proxy):
    """An unreachable token endpoint gives 503 with Retry-After, not a hang."""
    raw = proxy_config(stand_in)
    raw["oauth"]["token_url"] = "http://127.0.0.1:9/oauth2/token"
    proxy = await start_proxy(raw)
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) >= 1


async def test_upstream_unreachable_502(stand_in, start_proxy):
    """A refused upstream connection gives 502 UPSTREAM_UNAVAILABLE."""
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": "http://127.0.0.1:9/q"}))
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 502
    assert error_code(body) == "UPSTREAM_UNAVAILABLE"


async def test_upstream_timeout_504(stand_in, start_proxy):
    """No upstream answer within upstream.timeout_s answers 504 UPSTREAM_TIMEOUT."""
    proxy = await start_proxy(proxy_config(stand_in, upstream={"timeout_s": 0.3}))
    async with proxy.session.post(f"{stand_in.base}/_standin/faults",
                                  json={"insights_latency_ms": 2000}):
        pass
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 504
    assert error_code(body) == "UPSTREAM_TIMEOUT"


async def test_upstream_5xx_passed_through(proxy, stand_in):
    """An upstream 503 passes through with its status and body."""
    async with proxy.session.post(f"{stand_in.base}/_standin/faults",
                                  json={"insights_fail_next": {"count": 1, "status": 503}}):
        pass
    response, body = await proxy.query(SAMPLE_QUERY, org_variables())
    assert response.status == 503
    assert body["code"] == "102503"


async def test_unexpected_fault_500_without_trace(proxy, monkeypatch):
    """An unexpected exception becomes 500 INTERNAL_ERROR with the request id, no traceback."""
    runtime = proxy.server.holder.current

    async def broken(*args, **kwargs):
        raise RuntimeError("boom in the handler")

    monkeypatch.setattr(runtime.service, "answer", broken)
    response, body = await proxy.query("{ listOrganizations { id } }")
    assert response.status == 500
    assert error_code(body) == "INTERNAL_ERROR"
    assert "boom" not in json.dumps(body)
    assert response.headers["X-Request-ID"] in body["errors"][0]["message"]


async def test_default_variables_merged_under_client(stand_in, start_proxy):
    """upstream.default_variables fill declared variables; the client's values win."""
    proxy = await start_proxy(proxy_config(
        stand_in, upstream={"default_variables": {"org": {"orgId": FIXTURE_ORG.uuid},
                                                  "unused": 1}}))
    response, body = await proxy.query(SAMPLE_QUERY)
    assert response.status == 200
    assert len(body["data"]["listEnvironments"]) == 2
    sent = stand_in.state.recorded[-1].json()
    assert sent["variables"] == {"org": {"orgId": FIXTURE_ORG.uuid}}
    response, body = await proxy.query(SAMPLE_QUERY, {"org": {"orgId": "other-org"}})
    assert body["data"]["listEnvironments"] == []


async def test_large_body_forwarded_without_warning(stand_in, start_proxy, aiohttp_server):
    """A body over 1 MiB (allowed by server.max_body_bytes) is forwarded intact."""
    received = []

    async def upstream(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.json_response({"data": {}})

    app = web.Application(client_max_size=8 * 2**20)
    app.router.add_post("/q", upstream)
    server = await aiohttp_server(app)
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": str(server.make_url("/q"))},
                                           server={"port": 0, "max_body_bytes": 4 * 2**20}))
    import io
    body = json.dumps({"query": "{ a }", "variables": {"pad": "x" * (2 * 2**20)}}).encode()
    async with proxy.session.post(proxy.url, data=io.BytesIO(body),
                                  headers={"Content-Type": "application/json"}) as response:
        await response.read()
    assert response.status == 200
    assert received == [len(body)]
