"""The response cache and the merging of identical requests in flight.

`MemoryResponseCache` bounds entries by count (`cache.max_entries`), by the bytes of stored
bodies (`cache.max_bytes`) and per entry (`cache.max_entry_bytes`). Entries stay in memory for
`ttl_s + stale_if_error_s`, so that an expired response can still be served when the upstream
fails; `lookup` tells fresh from stale. `InFlight` runs one upstream call per key at a time in a
task of its own: waiters share its result, a waiter that leaves does not cancel it for the
others, and the call is cancelled only when nobody waits any more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from cachetools import TTLCache

from .config import CacheSettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored upstream response, with times in wall-clock seconds."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)
    etag: str
    stored_at: float
    fresh_until: float

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(name) + len(value) for name, value in self.headers)


class ResponseCache(Protocol):
    @property
    def enabled(self) -> bool:
        """Tell whether responses are stored at all."""
        ...

    def lookup(self, key: str) -> CachedAnswer | None: ...

    def store(self, key: str, answer: CachedAnswer) -> bool: ...

    def purge(self) -> int: ...

    def stats(self) -> tuple[int, int]:
        """Return the number of entries and the bytes they hold."""
        ...


class MemoryResponseCache:
    """A `ResponseCache` in this process's memory."""

    def __init__(self, settings: CacheSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        keep_s = settings.ttl_s + settings.stale_if_error_s
        self._entries: TTLCache[str, CachedAnswer] = TTLCache(
            maxsize=max(1, settings.max_bytes), ttl=max(keep_s, 0.001), timer=clock,
            getsizeof=lambda answer: answer.size)

    @property
    def enabled(self) -> bool:
        s = self._settings
        return s.ttl_s > 0 and s.max_entries > 0 and s.max_bytes > 0

    def lookup(self, key: str) -> CachedAnswer | None:
        return self._entries.get(key)

    def store(self, key: str, answer: CachedAnswer) -> bool:
        """Store an answer unless storing is off or it is over a size limit; tell which."""
        s = self._settings
        if not self.enabled or answer.size > min(s.max_entry_bytes, s.max_bytes):
            return False
        self._entries.pop(key, None)
        while len(self._entries) >= s.max_entries:
            self._entries.popitem()
        self._entries[key] = answer
        return True

    def purge(self) -> int:
        self._entries.expire()
        count = len(self._entries)
        self._entries.clear()
        return count

    def stats(self) -> tuple[int, int]:
        self._entries.expire()
        return len(self._entries), int(self._entries.currsize)


@dataclass
class _Flight(Generic[T]):
    task: asyncio.Future[T]
    waiters: int = 0


class InFlight(Generic[T]):
    """Merge concurrent calls that share a key into one call."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return the call's result and whether this caller joined a call already running."""
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(call()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda task: self._finish(key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # the last waiter left, so the result is no longer needed

    def _finish(self, key: str, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved so that a result no caller awaited is not reported as unhandled
