"""Access control for the GraphQL listener: Host allowlist, browser origins, client keys.

The checks run before the cache and before any token or upstream work, so a request that fails
them costs nothing upstream and learns nothing from the cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import ClientSettings, ServerSettings
from .errors import ClientKeyRequired, HostNotAllowed, OriginNotAllowed, RateLimited

KEY_HASH_PREFIX = "sha256:"
HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
PORT = re.compile(r"[0-9]{1,5}")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="insights-proxy", Basic realm="insights-proxy"'}


def hash_client_key(key: str) -> str:
    """Return the value to store as `key_hash` for a client key."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def split_host(value: str) -> tuple[str, int | None] | None:
    """Split a `Host` value into a normalised host and its port, or return None if malformed.

    Names are lower-cased without a trailing dot. IPv6 literals keep their brackets in
    compressed form, so `[0:0::1]` and `[::1]` compare equal. Anything else after the host,
    such as `localhost:80@evil.example` or `[::1]x`, makes the value malformed.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        try:
            address = ipaddress.IPv6Address(value[1:end])
        except ValueError:
            return None
        host, rest = f"[{address.compressed}]", value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        host = host.rstrip(".")
        if not HOST_NAME.fullmatch(host):
            return None
    if not port:
        return host, None
    if not PORT.fullmatch(port):
        return None
    return host, int(port)


class HostAllowlist:
    """Accept only the `Host` values of `server.allowed_hosts` (DNS-rebinding defence).

    An entry without a port allows any port; an entry with one allows only that port.
    """

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self._entries = [entry for entry in map(split_host, allowed) if entry is not None]
        self._known: dict[str, bool] = {}

    def check(self, header: str | None) -> None:
        if header is None:
            raise HostNotAllowed("the request has no Host header; send one that is listed in "
                                 "server.allowed_hosts")
        allowed = self._known.get(header)
        if allowed is None:
            allowed = self._matches(header)
            if len(self._known) < 256:
                self._known[header] = allowed
        if not allowed:
            raise HostNotAllowed(f"Host {header[:200]!r} is not allowed; add it to "
                                 "server.allowed_hosts if this proxy should answer to that name")

    def _matches(self, header: str) -> bool:
        parsed = split_host(header)
        if parsed is None:
            return False
        host, port = parsed
        return any(host == entry_host and (entry_port is None or entry_port == port)
                   for entry_host, entry_port in self._entries)


class OriginPolicy:
    """Reject browser cross-site requests unless their origin is in `server.allowed_origins`."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self._allowed = frozenset(origin.rstrip("/").lower() for origin in allowed)

    def check(self, headers: Mapping[str, str]) -> str | None:
        """Return the allowed origin to echo in CORS headers, or None when there is no Origin."""
        origin = headers.get("Origin")
        if origin is not None:
            if origin.rstrip("/").lower() in self._allowed:
                return origin
            raise OriginNotAllowed(f"requests from the browser origin {origin[:200]!r} are not "
                                   "allowed; add it to server.allowed_origins to permit them")
        if headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise OriginNotAllowed("cross-site browser requests are not allowed; list the "
                                   "calling page's origin in server.allowed_origins")
        return None


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ClientKeys:
    """Authenticate `[[clients]]` by key and apply their per-minute rate limits.

    The rate-limit buckets live in this object. A reload keeps it while `[[clients]]` is
    unchanged; a changed client list starts every budget afresh.
    """

    def __init__(self, clients: tuple[ClientSettings, ...], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clients = clients
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._clients)

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the client's name, or None when no keys are configured."""
        if not self._clients:
            return None
        key = _presented_key(authorization)
        if key is None:
            raise ClientKeyRequired("this proxy requires a client key; send it as "
                                    "'Authorization: Bearer <key>' or as the password of HTTP "
                                    "Basic authentication", headers=CHALLENGE)
        presented = hash_client_key(key).encode()
        match = None
        for client in self._clients:
            if hmac.compare_digest(presented, client.key_hash.encode()):
                match = client
        if match is None:
            raise ClientKeyRequired("the client key is not valid; check the key, or ask the "
                                    "operator for one listed in [[clients]]", headers=CHALLENGE)
        self._take(match)
        return match.name

    def _take(self, client: ClientSettings) -> None:
        limit = client.requests_per_minute
        if limit is None:
            return
        rate = limit / 60.0
        now = self._clock()
        bucket = self._buckets.setdefault(client.name, _Bucket(float(limit), now))
        bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            error = RateLimited(f"client {client.name!r} is over its limit of {limit} requests "
                                f"per minute; retry in {math.ceil(wait)} s",
                                headers={"Retry-After": str(max(1, math.ceil(wait)))})
            error.client = client.name
            raise error
        bucket.tokens -= 1.0


def _presented_key(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, _, password = decoded.partition(":")
        return password or None
    return None


def server_guards(server: ServerSettings) -> tuple[HostAllowlist, OriginPolicy]:
    return HostAllowlist(server.allowed_hosts), OriginPolicy(server.allowed_origins)
