"""Access tokens the stand-in's STS has issued: issuing, the three re-issue modes, revocation and lookup."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from proxy.standin.jwt import SigningKey, decode_segment

# Tokens expired longer ago than this are forgotten, which bounds memory in long soak runs. The gateway
# then rejects a forgotten revoked token with the invalid-credentials body instead of the revoked-token
# body. Both are 401 with code 900901.
FORGET_AFTER_EXPIRY_S = 3600.0


@dataclass
class IssuedToken:
    """One issued access token. Times are seconds on the stand-in's clock."""

    value: str
    jti: str
    client_id: str
    scope: str
    issued_at: int
    expires_at: int
    revoked_at: float | None = None
    # When the gateway starts rejecting the revoked token: revoked_at plus the revocation delay.
    rejected_from: float | None = None

    @property
    def owner(self) -> str:
        """The token's ``sub``: the stand-in names the client as the owner of its application tokens."""
        return self.client_id

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_active(self, now: float) -> bool:
        return not self.is_revoked() and not self.is_expired(now)

    def is_rejected_as_revoked(self, now: float) -> bool:
        return self.rejected_from is not None and now >= self.rejected_from


@dataclass(frozen=True)
class Grant:
    """The result of a token request: the token and the ``expires_in`` to send with it."""

    token: IssuedToken
    expires_in: int
    reused: bool
    # The client's earlier token that this grant revoked (mode "revoke_previous"), if any.
    revoked_previous: IssuedToken | None


class TokenStore:
    """Tokens by ``jti``, and the newest token for each (client id, scope) pair."""

    def __init__(self, signing_key: SigningKey, clock: Callable[[], float]) -> None:
        self._signing_key = signing_key
        self._clock = clock
        self._by_jti: dict[str, IssuedToken] = {}
        self._newest: dict[tuple[str, str], IssuedToken] = {}
        self.issuers: set[str] = set()

    def grant(
        self,
        *,
        client_id: str,
        scope: str,
        issuer: str,
        lifetime_s: int,
        reissue: str,
        revocation_delay_s: float,
    ) -> Grant:
        """Return the token for a token request under the re-issue mode ``reissue``, minting one when needed.

        ``reuse`` returns the client's active token with the whole seconds it has left, as long as at
        least one is left. ``revoke_previous`` revokes the client's active token for the same scope
        (as WSO2 Identity Server's JWT issuer does by default), and ``keep_previous`` leaves it valid.
        """
        now = self._clock()
        previous = self._newest.get((client_id, scope))
        if previous is not None and not previous.is_active(now):
            previous = None

        if reissue == "reuse" and previous is not None:
            remaining = int(previous.expires_at - now)
            if remaining >= 1:
                return Grant(token=previous, expires_in=remaining, reused=True, revoked_previous=None)

        token = self._mint(client_id=client_id, scope=scope, issuer=issuer, lifetime_s=lifetime_s, now=now)
        revoked_previous = None
        if reissue == "revoke_previous" and previous is not None:
            self.revoke(previous, revocation_delay_s)
            revoked_previous = previous
        self._forget_expired(now)
        return Grant(token=token, expires_in=lifetime_s, reused=False, revoked_previous=revoked_previous)

    def revoke(self, token: IssuedToken, delay_s: float) -> None:
        """Mark ``token`` revoked now. The gateway rejects it once ``delay_s`` seconds have passed."""
        now = self._clock()
        token.revoked_at = now
        token.rejected_from = now + delay_s

    def find_by_jti(self, jti: object) -> IssuedToken | None:
        if not isinstance(jti, str):
            return None
        return self._by_jti.get(jti)

    def find_by_value(self, value: str) -> IssuedToken | None:
        """Return the issued token whose compact form is exactly ``value``, or None."""
        parts = value.split(".")
        if len(parts) != 3:
            return None
        try:
            claims = json.loads(decode_segment(parts[1]))
        except ValueError:
            return None
        if not isinstance(claims, dict):
            return None
        token = self.find_by_jti(claims.get("jti"))
        if token is None or token.value != value:
            return None
        return token

    def count_active(self) -> int:
        now = self._clock()
        return sum(1 for token in self._by_jti.values() if token.is_active(now))

    def _mint(self, *, client_id: str, scope: str, issuer: str, lifetime_s: int, now: float) -> IssuedToken:
        issued_at = int(now)
        expires_at = issued_at + lifetime_s
        jti = str(uuid.uuid4())
        # Claim names and order follow WSO2 Identity Server's JWT access tokens.
        claims = {
            "iss": issuer,
            "sub": client_id,
            "aud": client_id,
            "azp": client_id,
            "client_id": client_id,
            "scope": scope,
            "aut": "APPLICATION",
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": jti,
        }
        token = IssuedToken(
            value=self._signing_key.sign(claims),
            jti=jti,
            client_id=client_id,
            scope=scope,
            issued_at=issued_at,
            expires_at=expires_at,
        )
        self._by_jti[jti] = token
        self._newest[(client_id, scope)] = token
        self.issuers.add(issuer)
        return token

    def _forget_expired(self, now: float) -> None:
        cutoff = now - FORGET_AFTER_EXPIRY_S
        stale = [jti for jti, token in self._by_jti.items() if token.expires_at < cutoff]
        for jti in stale:
            del self._by_jti[jti]
