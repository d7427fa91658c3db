"""Errors the proxy responds with, each mapped to an HTTP status and a GraphQL error code.

The tree::

    ProxyError                      (500 INTERNAL_ERROR)
    ├── BadRequest                  (400 BAD_REQUEST)
    │   ├── GraphQLParseFailed      (400 GRAPHQL_PARSE_FAILED)
    │   └── QueryTooComplex         (400 QUERY_TOO_COMPLEX)
    ├── ClientKeyRequired           (401 CLIENT_KEY_REQUIRED)
    ├── HostNotAllowed              (403 HOST_NOT_ALLOWED)
    ├── OriginNotAllowed            (403 ORIGIN_NOT_ALLOWED)
    ├── NotFound                    (404 NOT_FOUND)
    ├── MethodNotAllowed            (405 METHOD_NOT_ALLOWED)
    ├── PayloadTooLarge             (413 PAYLOAD_TOO_LARGE)
    ├── URITooLong                  (414 URI_TOO_LONG)
    ├── UnsupportedMediaType        (415 UNSUPPORTED_MEDIA_TYPE)
    ├── RateLimited                 (429 RATE_LIMITED)
    ├── HeadersTooLarge             (431 HEADERS_TOO_LARGE)
    ├── TokenError
    │   ├── TokenEndpointError      (502 TOKEN_ENDPOINT_ERROR)
    │   └── TokenEndpointUnavailable (503 TOKEN_ENDPOINT_UNAVAILABLE)
    └── UpstreamError
        ├── UpstreamRejectedToken   (502 UPSTREAM_REJECTED_TOKEN)
        ├── UpstreamUnavailable     (502 UPSTREAM_UNAVAILABLE)
        └── UpstreamTimeout         (504 UPSTREAM_TIMEOUT)

`ConfigError` stands apart: it stops the process (exit 2) and never reaches a client.
Messages must never contain a secret or a token; callers pass fingerprints at most.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping


class ProxyError(Exception):
    """An error sent to the client as a GraphQL-shaped JSON body."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        payload = {"errors": [{"message": self.message, "extensions": {"code": self.code}}]}
        return json.dumps(payload, separators=(",", ":")).encode()


class BadRequest(ProxyError):
    status = 400
    code = "BAD_REQUEST"


class GraphQLParseFailed(BadRequest):
    code = "GRAPHQL_PARSE_FAILED"


class QueryTooComplex(BadRequest):
    code = "QUERY_TOO_COMPLEX"


class ClientKeyRequired(ProxyError):
    status = 401
    code = "CLIENT_KEY_REQUIRED"


class HostNotAllowed(ProxyError):
    status = 403
    code = "HOST_NOT_ALLOWED"


class OriginNotAllowed(ProxyError):
    status = 403
    code = "ORIGIN_NOT_ALLOWED"


class NotFound(ProxyError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(ProxyError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class PayloadTooLarge(ProxyError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class URITooLong(ProxyError):
    status = 414
    code = "URI_TOO_LONG"


class UnsupportedMediaType(ProxyError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(ProxyError):
    status = 429
    code = "RATE_LIMITED"
    client: str | None = None  # the client over its limit, for the request log line


class HeadersTooLarge(ProxyError):
    status = 431
    code = "HEADERS_TOO_LARGE"


class TokenError(ProxyError):
    """The proxy could not obtain an access token."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        headers = {}
        if retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        super().__init__(message, headers=headers)
        self.retry_after_s = retry_after_s


class TokenEndpointError(TokenError):
    """The token endpoint refused the credentials or returned something unusable."""

    status = 502
    code = "TOKEN_ENDPOINT_ERROR"

    def __init__(self, message: str, *, oauth_error: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.oauth_error = oauth_error


class TokenEndpointUnavailable(TokenError):
    """The token endpoint cannot be reached or keeps failing."""

    status = 503
    code = "TOKEN_ENDPOINT_UNAVAILABLE"


class UpstreamError(ProxyError):
    """The Insights API could not be used."""


class UpstreamRejectedToken(UpstreamError):
    status = 502
    code = "UPSTREAM_REJECTED_TOKEN"


class UpstreamUnavailable(UpstreamError):
    status = 502
    code = "UPSTREAM_UNAVAILABLE"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "UPSTREAM_TIMEOUT"


class ConfigError(Exception):
    """The configuration is invalid; `problems` contains one message per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
