"""Settings of the Choreo stand-in: its one fake application and its gateway switches."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

REISSUE_MODES = ("revoke_previous", "keep_previous", "reuse")

# Public demo credentials in the shape of real Choreo consumer keys: 28 URL-safe characters ending in "a".
DEMO_CLIENT_ID = "Xq3vT9bLmZ2kR7wN4pYc8dHs1fGa"
DEMO_CLIENT_SECRET = "pV8sN2kLq5XcR9tYb3MwZ7hDf4Ja"


@dataclass(frozen=True)
class StandinSettings:
    """Configuration of one stand-in: the fake application's credentials and the gateway's behaviour.

    The defaults describe an application subscribed to Insights with Choreo's likely current token
    lifetime (900 s). ``clock`` returns wall-clock seconds. Every expiry decision uses it, so tests
    inject a fake clock and advance it by hand.
    """

    client_id: str = DEMO_CLIENT_ID
    client_secret: str = field(default=DEMO_CLIENT_SECRET, repr=False)
    token_lifetime_s: int = 900
    reissue: str = "revoke_previous"
    org_prefix: str = "93tu"
    # Scope granted when the request names no allowed scope (WSO2 API Manager falls back to "default").
    default_scope: str = "default"
    allowed_scopes: frozenset[str] = frozenset({"apim:api_manage"})
    # False makes the gateway reject every valid token on the Insights route with 403 code 900908.
    subscribed: bool = True
    # When set, tokens without this scope get 403 code 900910 on the Insights route.
    required_scope: str | None = None
    # Seconds between a revocation and the moment the gateway starts rejecting the token.
    revocation_delay_s: float = 0.0
    # Content type of the enforcer's error bodies: the live capture shows text/plain, the source application/json.
    gateway_content_type: str = "text/plain"
    # When set, a token request whose orgHandle form field differs is rejected. None accepts any orgHandle.
    org_handle: str | None = None
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not self.client_id or ":" in self.client_id:
            raise ValueError(
                f"client_id {self.client_id!r} is invalid: give a non-empty id without ':' "
                "(HTTP Basic authentication splits the id from the secret at the first ':')"
            )
        if not self.client_secret:
            raise ValueError("client_secret is empty: give the secret the fake application accepts")
        if self.token_lifetime_s < 1:
            raise ValueError(f"token_lifetime_s {self.token_lifetime_s!r} is invalid: give whole seconds >= 1")
        if self.reissue not in REISSUE_MODES:
            raise ValueError(f"reissue {self.reissue!r} is invalid: use one of {', '.join(REISSUE_MODES)}")
        if not self.org_prefix or "/" in self.org_prefix:
            raise ValueError(f"org_prefix {self.org_prefix!r} is invalid: give one path segment such as '93tu'")
        if self.revocation_delay_s < 0:
            raise ValueError(f"revocation_delay_s {self.revocation_delay_s!r} is invalid: give seconds >= 0")
        if not self.default_scope:
            raise ValueError("default_scope is empty: give the scope granted when no requested scope is allowed")
