"""The response cache and the merging of identical requests in flight.

`MemoryResponseCache` bounds entries by count (`cache.max_entries`), by the bytes of stored
bodies (`cache.max_bytes`) and per entry (`cache.max_entry_bytes`). An entry is served for
`ttl_s`, and when the upstream fails for `stale_if_error_s` more; the caller compares
`fresh_until` to tell fresh from stale. The store is cachetools' `LRUCache` and entries carry
their own deadlines, so a lookup drops an entry past both windows, and `stats` and `purge` drop
all such entries. `TTLCache` would cost about a microsecond more per lookup (a few percent of a
cache hit) to keep an expiry order.

`InFlight` runs one upstream call per key at a time in a task of its own: waiters share its
result, a waiter that leaves does not cancel it for the others, and the call is cancelled only
when nobody waits any more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from cachetools import Cache, LRUCache

from .config import CacheSettings

T = TypeVar("T")
SWEEP_INTERVAL_S = 1.0  # minimum time between two sweeps of expired entries by `store`


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
        self._entries: LRUCache[str, CachedAnswer] = LRUCache(
            maxsize=max(1, settings.max_bytes), getsizeof=lambda answer: answer.size)
        self._next_sweep = 0.0
        self.enabled = settings.ttl_s > 0 and settings.max_entries > 0 and settings.max_bytes > 0

    def lookup(self, key: str) -> CachedAnswer | None:
        """Return the entry for `key`, fresh or still within its stale-if-error window."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() >= entry.fresh_until + self._settings.stale_if_error_s:
            del self._entries[key]
            return None
        return entry

    def store(self, key: str, answer: CachedAnswer) -> bool:
        """Store an answer unless storing is off or it is over a size limit; tell which."""
        s = self._settings
        if not self.enabled or answer.size > min(s.max_entry_bytes, s.max_bytes):
            return False
        self._entries.pop(key, None)
        full = (len(self._entries) >= s.max_entries
                or self._entries.currsize + answer.size > self._entries.maxsize)
        if full and self._clock() >= self._next_sweep:
            # Expired entries go before fresh ones are evicted. The sweep walks every entry,
            # so a cache that stays full of fresh entries runs it at most once a second.
            self._expire()
            self._next_sweep = self._clock() + SWEEP_INTERVAL_S
        while len(self._entries) >= s.max_entries:
            self._entries.popitem()
        self._entries[key] = answer
        return True

    def purge(self) -> int:
        self._expire()
        count = len(self._entries)
        self._entries.clear()
        return count

    def stats(self) -> tuple[int, int]:
        self._expire()
        return len(self._entries), int(self._entries.currsize)

    def _expire(self) -> None:
        # Runs on a scrape or an admin call, over at most `cache.max_entries` entries.
        # Reading through `Cache.__getitem__` leaves the recency order as it is.
        deadline = self._clock() - self._settings.stale_if_error_s
        peek = Cache.__getitem__
        for key in [key for key in self._entries if peek(self._entries, key).fresh_until <= deadline]:
            del self._entries[key]


class _Flight(Generic[T]):
    """One shared call: its task and the futures of the callers waiting for it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters: list[asyncio.Future[T]] = []

    def relay(self, task: asyncio.Task[T]) -> None:
        """Pass the call's outcome on to every caller still waiting."""
        for waiter in self.waiters:
            if waiter.done():
                continue
            if task.cancelled():
                waiter.cancel()
            elif (error := task.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(task.result())


class InFlight(Generic[T]):
    """Merge concurrent calls that share a key into one call.

    Each caller waits on a future of its own, which the call's task completes: cancelling a
    caller cancels only that future. This does what `asyncio.shield` does per caller, at
    about half its cost, which matters because every forwarded request passes through here.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first call

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return the call's result and whether this caller joined a call already running."""
        flight = self._flights.get(key)
        joined = flight is not None
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if flight is None:
            flight = _Flight(loop.create_task(call()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda task: self._finish(key, flight))
        waiter: asyncio.Future[T] = loop.create_future()
        flight.waiters.append(waiter)
        try:
            return await waiter, joined
        finally:
            flight.waiters.remove(waiter)
            if not flight.waiters and not flight.task.done():
                # The last waiter left, so the result is no longer needed. The flight is
                # forgotten at once: an identical request arriving before the cancelled task
                # has finished must start a call of its own, not join one that is ending.
                flight.task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]

    def _finish(self, key: str, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.relay(flight.task)
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved so that a result no caller awaited is not reported as unhandled
