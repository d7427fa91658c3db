"""The response cache and the merging of identical queries in flight."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.cache import CachedAnswer, InFlight, MemoryResponseCache
from proxy.config import CacheSettings
from proxy.query import GraphQLRequest, RequestMemo

from .conftest import FakeClock, proxy_config, wait_for


class ScriptedUpstream:
    """An Insights-like upstream whose response body, status and delay the test sets."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = 200
        self.delay = 0.0
        self.payload: Any = None
        self.bodies: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.json()
        self.bodies.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        payload = self.payload if self.payload is not None else {
            "data": {"echo": {"call": self.calls, "variables": body.get("variables")}}}
        return web.json_response(payload, status=self.status)


@pytest.fixture
async def upstream(aiohttp_server):
    scripted = ScriptedUpstream()
    app = web.Application()
    app.router.add_post("/q", scripted.handle)
    server = await aiohttp_server(app)
    scripted.url = str(server.make_url("/q"))
    return scripted


@pytest.fixture
async def cached_proxy(stand_in, start_proxy, upstream, clock):
    async def start(**cache: Any):
        raw = proxy_config(stand_in, upstream={"url": upstream.url}, cache=cache)
        return await start_proxy(raw, clock=clock)
    return start


async def post(proxy, payload: dict, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with proxy.session.post(proxy.url, json=payload, headers=headers) as response:
        return response, await response.read()


SAME = [
    ({"query": "{ a { b } }"}, {"query": "query {\n  a {\n    b\n  }\n}"}),
    ({"query": "{ a { b } }"}, {"query": "# leading comment\n{ a { b } } # trailing"}),
    ({"query": "{ a(x: 1, y: 2) { b } }"}, {"query": "{ a(x:1 y:2) { b } }"}),
    ({"query": "query Q($v: Int) { a(x: $v) }", "variables": {"v": 1, "w": 2}},
     {"query": "query Q($v: Int) { a(x: $v) }", "variables": {"w": 2, "v": 1}}),
    ({"query": "{ a }"}, {"query": "{ a }", "variables": {}}),
    ({"query": "{ a }"}, {"query": "{ a }", "variables": None}),
]
DIFFERENT = [
    ({"query": "{ a { b } }"}, {"query": "{ a { c } }"}),
    ({"query": "query Q($v: Int) { a(x: $v) }", "variables": {"v": 1}},
     {"query": "query Q($v: Int) { a(x: $v) }", "variables": {"v": "1"}}),
    ({"query": "query Q($v: Int) { a(x: $v) }", "variables": {"v": None}},
     {"query": "query Q($v: Int) { a(x: $v) }", "variables": {}}),
    ({"query": "query Q($v: Int) { a(x: $v) }", "variables": {"v": 1}},
     {"query": "query Q($v: Int) { a(x: $v) }", "variables": {"v": 1.5}}),
    ({"query": "query A { a } query B { b }", "operationName": "A"},
     {"query": "query A { a } query B { b }", "operationName": "B"}),
]


@pytest.mark.parametrize(("first", "second"), SAME)
async def test_cache_equivalent_requests_hit(cached_proxy, upstream, first, second):
    """Formatting, comments, variable order and absent variables do not change the key."""
    proxy = await cached_proxy()
    await post(proxy, first)
    response, _ = await post(proxy, second)
    assert response.headers["Cache-Status"].startswith("insights-proxy; hit")
    assert upstream.calls == 1


@pytest.mark.parametrize(("first", "second"), DIFFERENT)
async def test_cache_different_requests_miss(cached_proxy, upstream, first, second):
    """Selections, value types, nulls and operation names change the key."""
    proxy = await cached_proxy()
    await post(proxy, first)
    response, _ = await post(proxy, second)
    assert "fwd=miss" in response.headers["Cache-Status"]
    assert upstream.calls == 2


async def test_cache_credentials_never_share_entries(stand_in, start_proxy, upstream):
    """Two credential identities sharing one cache object would still not share keys."""
    raw_a = proxy_config(stand_in, upstream={"url": upstream.url})
    raw_b = proxy_config(stand_in, upstream={"url": upstream.url},
                         oauth={"extra_params": {"orgHandle": "other"}})
    proxy_a = await start_proxy(raw_a)
    proxy_b = await start_proxy(raw_b)
    reader_a = proxy_a.server.holder.current.reader
    reader_b = proxy_b.server.holder.current.reader
    body = b'{"query": "{ a }"}'
    assert reader_a.from_body(body).cache_key != reader_b.from_body(body).cache_key


@pytest.mark.parametrize("query", [
    "mutation { a }",
    "# comment first\nmutation { a }",
    "subscription { a }",
])
async def test_cache_mutation_never_stored(cached_proxy, upstream, query):
    """Mutations and subscriptions are forwarded every time and marked uncacheable."""
    proxy = await cached_proxy()
    for _ in range(2):
        response, _ = await post(proxy, {"query": query})
        assert response.headers["Cache-Status"] == "insights-proxy; fwd=uncacheable"
    assert upstream.calls == 2


async def test_cache_selected_mutation_not_query(cached_proxy, upstream):
    """A document with a query and a mutation is not cached when the mutation is selected."""
    proxy = await cached_proxy()
    document = "query Q { a } mutation M { b }"
    for _ in range(2):
        await post(proxy, {"query": document, "operationName": "M"})
    assert upstream.calls == 2
    for _ in range(2):
        await post(proxy, {"query": document, "operationName": "Q"})
    assert upstream.calls == 3


@pytest.mark.parametrize(("status", "payload"), [
    (200, {"data": None, "errors": [{"message": "bad"}]}),
    (200, {"errors": [{"message": "bad"}]}),
    (200, {"no_data": True}),
    (400, {"errors": [{"message": "bad"}]}),
    (429, {"error_message": "Message throttled out"}),
    (500, {"data": {}}),
    (503, {"code": "102503"}),
])
async def test_cache_failed_answers_not_stored(cached_proxy, upstream, status, payload):
    """Responses with errors, without data, or with a non-200 status are never stored."""
    proxy = await cached_proxy()
    upstream.status, upstream.payload = status, payload
    for _ in range(2):
        response, _ = await post(proxy, {"query": "{ a }"})
        assert response.status == status
        assert "stored" not in response.headers["Cache-Status"]
    assert upstream.calls == 2


async def test_cache_ttl_expiry(cached_proxy, upstream, clock):
    """An entry is served for cache.ttl_s seconds, then fetched again."""
    proxy = await cached_proxy(ttl_s=30)
    response, _ = await post(proxy, {"query": "{ a }"})
    assert response.headers["Cache-Status"] == "insights-proxy; fwd=miss; stored"
    clock.advance(12)
    response, _ = await post(proxy, {"query": "{ a }"})
    assert response.headers["Cache-Status"] == "insights-proxy; hit; ttl=18"
    assert response.headers["Age"] == "12"
    clock.advance(19)
    response, _ = await post(proxy, {"query": "{ a }"})
    assert "fwd=miss" in response.headers["Cache-Status"]
    assert upstream.calls == 2


async def test_cache_hit_same_content_headers(cached_proxy, upstream):
    """A hit has the same body and content headers as the miss that stored it, plus an ETag."""
    proxy = await cached_proxy()
    miss, miss_body = await post(proxy, {"query": "{ a }"})
    hit, hit_body = await post(proxy, {"query": "{ a }"})
    assert hit_body == miss_body
    assert hit.headers["Content-Type"] == miss.headers["Content-Type"]
    assert hit.headers["ETag"] == miss.headers["ETag"]
    assert hit.headers["Content-Length"] == str(len(hit_body))


async def test_cache_etag_not_modified(cached_proxy, upstream):
    """If-None-Match with the entry's ETag gives 304 without a body."""
    proxy = await cached_proxy()
    miss, _ = await post(proxy, {"query": "{ a }"})
    etag = miss.headers["ETag"]
    response, body = await post(proxy, {"query": "{ a }"}, **{"If-None-Match": etag})
    assert response.status == 304
    assert body == b""
    assert response.headers["ETag"] == etag
    response, _ = await post(proxy, {"query": "{ a }"}, **{"If-None-Match": '"other"'})
    assert response.status == 200


async def test_cache_no_cache_refreshes(cached_proxy, upstream):
    """Cache-Control: no-cache skips the stored answer and stores the fresh one."""
    proxy = await cached_proxy()
    await post(proxy, {"query": "{ a }"})
    response, body = await post(proxy, {"query": "{ a }"}, **{"Cache-Control": "no-cache"})
    assert response.headers["Cache-Status"] == "insights-proxy; fwd=request; stored"
    assert json.loads(body)["data"]["echo"]["call"] == 2
    response, body = await post(proxy, {"query": "{ a }"})
    assert json.loads(body)["data"]["echo"]["call"] == 2
    assert upstream.calls == 2


async def test_cache_no_store_neither_reads_nor_writes(cached_proxy, upstream):
    """Cache-Control: no-store bypasses the cache in both directions."""
    proxy = await cached_proxy()
    await post(proxy, {"query": "{ a }"})
    response, body = await post(proxy, {"query": "{ a }"}, **{"Cache-Control": "no-store"})
    assert response.headers["Cache-Status"] == "insights-proxy; fwd=request"
    assert json.loads(body)["data"]["echo"]["call"] == 2
    await post(proxy, {"query": "{ b }"}, **{"Cache-Control": "no-store"})
    response, _ = await post(proxy, {"query": "{ b }"})
    assert "fwd=miss" in response.headers["Cache-Status"]


async def test_cache_ttl_zero_still_merges(cached_proxy, upstream):
    """ttl_s = 0 stores nothing but still merges identical queries in flight."""
    proxy = await cached_proxy(ttl_s=0)
    upstream.delay = 0.3
    results = await asyncio.gather(*(post(proxy, {"query": "{ a }"}) for _ in range(10)))
    assert upstream.calls == 1
    assert {r.headers["Cache-Status"].split(";")[1].strip() for r, _ in results} == {"fwd=bypass"}
    upstream.delay = 0
    await post(proxy, {"query": "{ a }"})
    assert upstream.calls == 2


async def test_cache_ttl_zero_passes_through_without_etag(cached_proxy, upstream):
    """With the cache off a response is passed on as it came: no ETag, no 304."""
    proxy = await cached_proxy(ttl_s=0)
    first, _ = await post(proxy, {"query": "{ a }"})
    assert "ETag" not in first.headers
    second, body = await post(proxy, {"query": "{ a }"}, **{"If-None-Match": '"anything"'})
    assert second.status == 200
    assert body


async def test_cache_concurrent_identical_one_call(cached_proxy, upstream):
    """100 identical concurrent queries cause one upstream call; all get its answer."""
    proxy = await cached_proxy()
    upstream.delay = 0.3
    results = await asyncio.gather(*(post(proxy, {"query": "{ a }"}) for _ in range(100)))
    assert upstream.calls == 1
    assert len({body for _, body in results}) == 1
    collapsed = [r for r, _ in results if "collapsed" in r.headers["Cache-Status"]]
    assert len(collapsed) == 99


async def test_cache_first_caller_disconnect(cached_proxy, upstream):
    """The first caller leaving does not fail the others, and nothing is left stuck."""
    proxy = await cached_proxy()
    upstream.delay = 0.5
    first = asyncio.ensure_future(post(proxy, {"query": "{ a }"}))
    await wait_for(lambda: upstream.calls == 1)
    others = [asyncio.ensure_future(post(proxy, {"query": "{ a }"})) for _ in range(5)]
    await asyncio.sleep(0.1)
    first.cancel()
    results = await asyncio.gather(*others)
    assert {response.status for response, _ in results} == {200}
    assert upstream.calls == 1
    service = proxy.server.holder.current.service
    assert len(service._flights) == 0


async def test_cache_all_callers_leave_cancels_upstream(cached_proxy, upstream):
    """When every waiter leaves, the shared upstream call is cancelled and removed."""
    proxy = await cached_proxy()
    upstream.delay = 5
    callers = [asyncio.ensure_future(post(proxy, {"query": "{ a }"})) for _ in range(3)]
    await wait_for(lambda: upstream.calls == 1)
    for caller in callers:
        caller.cancel()
    service = proxy.server.holder.current.service
    await wait_for(lambda: len(service._flights) == 0)


async def test_cache_failure_reaches_only_waiters(cached_proxy, upstream):
    """A failed shared call is not stored: the next request goes upstream again."""
    proxy = await cached_proxy()
    upstream.status, upstream.payload, upstream.delay = 502, {"code": "x"}, 0.2
    results = await asyncio.gather(*(post(proxy, {"query": "{ a }"}) for _ in range(5)))
    assert {r.status for r, _ in results} == {502}
    upstream.status, upstream.payload, upstream.delay = 200, None, 0
    response, _ = await post(proxy, {"query": "{ a }"})
    assert response.status == 200
    assert upstream.calls == 2


async def test_cache_hit_needs_no_token(cached_proxy, upstream, stand_in):
    """With a stored answer, a token endpoint outage is invisible to the client."""
    proxy = await cached_proxy()
    await post(proxy, {"query": "{ a }"})
    proxy.server.holder.current.tokens._store.discard()
    async with proxy.session.post(f"{stand_in.base}/_standin/faults",
                                  json={"token_endpoint": "down"}):
        pass
    response, _ = await post(proxy, {"query": "{ a }"})
    assert response.status == 200
    assert response.headers["Cache-Status"].startswith("insights-proxy; hit")


@pytest.mark.parametrize("stale_s", [0, 60])
async def test_cache_stale_if_error(cached_proxy, upstream, clock, stale_s):
    """With stale_if_error_s, an expired answer is served when the upstream fails."""
    proxy = await cached_proxy(ttl_s=10, stale_if_error_s=stale_s)
    await post(proxy, {"query": "{ a }"})
    clock.advance(20)
    upstream.status, upstream.payload = 503, {"code": "102503"}
    response, _ = await post(proxy, {"query": "{ a }"})
    if stale_s:
        assert response.status == 200
        assert "stale-if-error" in response.headers["Cache-Status"]
        assert "ttl=-10" in response.headers["Cache-Status"]
    else:
        assert response.status == 503


def answer(body: bytes, clock: FakeClock, ttl: float = 30) -> CachedAnswer:
    return CachedAnswer(200, (("Content-Type", "application/json"),), body, '"e"',
                        clock(), clock() + ttl)


def test_cache_entry_count_limit(clock):
    """cache.max_entries bounds the number of entries; the oldest goes first."""
    cache = MemoryResponseCache(CacheSettings(max_entries=3), clock=clock)
    for key in "abcd":
        assert cache.store(key, answer(b"x" * 10, clock))
    assert cache.lookup("a") is None
    assert cache.stats()[0] == 3


def test_cache_byte_limit(clock):
    """cache.max_bytes bounds the bytes held; an entry over max_entry_bytes is not stored."""
    cache = MemoryResponseCache(CacheSettings(max_bytes=1000, max_entry_bytes=600), clock=clock)
    assert cache.store("a", answer(b"x" * 400, clock))
    assert cache.store("b", answer(b"x" * 400, clock))
    assert cache.store("c", answer(b"x" * 400, clock))
    entries, size = cache.stats()
    assert size <= 1000
    assert cache.lookup("a") is None
    assert not cache.store("big", answer(b"x" * 700, clock))
    assert cache.lookup("big") is None


def test_cache_full_evicts_expired_first(clock):
    """A full cache drops an expired entry before it evicts a fresh one."""
    cache = MemoryResponseCache(CacheSettings(max_entries=2), clock=clock)
    assert cache.store("old", answer(b"x", clock, ttl=5))
    clock.advance(1)
    assert cache.store("fresh", answer(b"y", clock, ttl=60))
    assert cache.lookup("old") is not None  # "fresh" is now the least recently used
    clock.advance(10)  # "old" has expired; "fresh" has not
    assert cache.store("new", answer(b"z", clock, ttl=60))
    assert cache.lookup("fresh") is not None
    assert cache.lookup("new") is not None
    assert cache.lookup("old") is None


def test_cache_purge_counts(clock):
    """purge empties the cache and returns how many entries it removed."""
    cache = MemoryResponseCache(CacheSettings(), clock=clock)
    for key in "abc":
        cache.store(key, answer(b"{}", clock))
    assert cache.purge() == 3
    assert cache.stats() == (0, 0)


async def test_inflight_new_caller_after_last_left_gets_result():
    """A caller arriving while an abandoned call is being cancelled starts a call of its own."""
    flights: InFlight[str] = InFlight()
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return "answer"

    first = asyncio.ensure_future(flights.run("k", call))
    await asyncio.sleep(0.05)
    first.cancel()
    await asyncio.sleep(0)  # the first caller's cleanup cancels the shared call
    second = await asyncio.wait_for(flights.run("k", call), 5)
    assert second == ("answer", False)
    assert calls == 2
    assert len(flights) == 0


async def test_inflight_exception_not_reported_when_unwatched():
    """A shared call that fails after all waiters left leaves nothing behind."""
    flights: InFlight[int] = InFlight()
    started = asyncio.Event()

    async def call() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    waiter = asyncio.ensure_future(flights.run("k", call))
    await started.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0)
    assert len(flights) == 0


async def test_cache_burst_from_several_clients_one_insights_call(stand_in, start_proxy):
    """A burst of one query from several clients reaches the stand-in's Insights API once."""
    from proxy.standin.insights import FIXTURE_ORG

    proxy = await start_proxy(proxy_config(stand_in))
    async with proxy.session.post(f"{stand_in.base}/_standin/faults",
                                  json={"insights_latency_ms": 300}):
        pass
    payload = {"query": "query ($org: OrgFilter!) { listEnvironments(org: $org) { id name } }",
               "variables": {"org": {"orgId": FIXTURE_ORG.uuid}}}

    async def client() -> list[int]:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(3):
                async with session.post(proxy.url, json=payload) as response:
                    await response.read()
                    statuses.append(response.status)
            return statuses

    results = await asyncio.gather(*(client() for _ in range(8)))
    assert {status for statuses in results for status in statuses} == {200}
    assert stand_in.stats["insights_requests"] == 1


async def test_cache_if_none_match_star_ignored(cached_proxy, upstream):
    """If-None-Match: * never turns a miss or an error answer into an empty 304."""
    proxy = await cached_proxy()
    upstream.payload = {"errors": [{"message": "Cannot query field"}]}
    response, body = await post(proxy, {"query": "{ nope }"}, **{"If-None-Match": "*"})
    assert response.status == 200
    assert b"Cannot query field" in body
    assert "ETag" not in response.headers


async def test_cache_control_every_header_read(cached_proxy, upstream):
    """A no-store in a second Cache-Control header, or max-age=00, is honoured."""
    proxy = await cached_proxy()
    await post(proxy, {"query": "{ a }"})
    async with proxy.session.post(proxy.url, json={"query": "{ a }"}, headers=[
            ("Cache-Control", "max-age=10"), ("Cache-Control", "no-store")]) as response:
        await response.read()
    assert response.headers["Cache-Status"] == "insights-proxy; fwd=request"
    response, _ = await post(proxy, {"query": "{ a }"}, **{"Cache-Control": "max-age=00"})
    assert response.headers["Cache-Status"].startswith("insights-proxy; fwd=request")


def test_request_memo_drops_oldest_over_budget():
    """The request memo keeps its byte budget by dropping the oldest entries first."""
    memo = RequestMemo(max_bytes=1000)
    requests = {key: GraphQLRequest("query", None, key, key.encode()) for key in "abcd"}
    for key, request in requests.items():
        memo.put(key, request, 300)
    assert memo.get("a") is None
    assert [memo.get(key) for key in "bcd"] == [requests[key] for key in "bcd"]
    assert len(memo) == 3
    memo.put("huge", requests["a"], 1001)
    assert memo.get("huge") is None
    assert len(memo) == 3
