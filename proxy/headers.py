"""Header policy: what never crosses the proxy, in either direction.

Hop-by-hop headers are listed in RFC 9110 section 7.6.1: `Connection` and every header it names,
plus `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade`.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})

# Never copied from an upstream response: framing is recomputed for the bytes the proxy sends,
# cookies must not reach clients that share one credential, and the proxy sets its own cache
# validators and identity headers.
RESPONSE_DROP = HOP_BY_HOP | {
    "content-length", "content-encoding", "set-cookie", "set-cookie2", "date", "server",
    "age", "etag", "cache-status", "x-request-id", "alt-svc",
}


SIMPLE_CONNECTION = frozenset({"keep-alive", "close"})


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Return the lower-cased header names listed in `Connection` headers."""
    names: set[str] = set()
    for value in headers.getall("Connection", ()):
        names.update(part.strip().lower() for part in value.split(",") if part.strip())
    return names


def response_headers(upstream: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """Select the upstream response headers that may be passed on to the client."""
    drop = RESPONSE_DROP
    # "Connection: keep-alive" (or close) names nothing beyond the standard hop-by-hop set.
    if any(value.strip().lower() not in SIMPLE_CONNECTION
           for value in upstream.getall("Connection", ())):
        drop = drop | connection_tokens(upstream)
    return [(name, value) for name, value in upstream.items() if name.lower() not in drop]


def has_header(headers: Iterable[tuple[str, str]], name: str) -> bool:
    lowered = name.lower()
    return any(key.lower() == lowered for key, _ in headers)
