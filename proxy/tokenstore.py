"""Storage of the current access token.

The token manager talks to a `TokenStore` so that replicas can later share one token through an
external store; `MemoryTokenStore` keeps it in this process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol


def fingerprint(secret: str) -> str:
    """Return the first 12 hex digits of the SHA-256 of a token: safe to log and show."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class AccessToken:
    """An access token and its timing, all in wall-clock seconds since the epoch."""

    value: str = field(repr=False)
    obtained_at: float
    expires_at: float
    refresh_at: float
    reissued: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)

    @property
    def lifetime_s(self) -> float:
        return self.expires_at - self.obtained_at

    def __repr__(self) -> str:
        return (f"AccessToken(fingerprint={self.fingerprint!r}, obtained_at={self.obtained_at}, "
                f"expires_at={self.expires_at})")


class TokenStore(Protocol):
    def get(self) -> AccessToken | None: ...

    def set(self, token: AccessToken) -> None: ...

    def discard(self, value: str | None = None) -> bool:
        """Drop the token (only if it still is `value`, when given); tell whether one was dropped."""
        ...


class MemoryTokenStore:
    """A `TokenStore` for one process."""

    def __init__(self) -> None:
        self._token: AccessToken | None = None

    def get(self) -> AccessToken | None:
        return self._token

    def set(self, token: AccessToken) -> None:
        self._token = token

    def discard(self, value: str | None = None) -> bool:
        if self._token is None:
            return False
        if value is not None and self._token.value != value:
            return False
        self._token = None
        return True
