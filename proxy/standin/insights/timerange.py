"""Time filters, granularities and time buckets of the Insights stand-in.

``TimeFilter.from`` and ``to`` take ISO-8601 timestamps in the forms real clients send:
``2021-08-16T12:00:00.000+05:30``, JavaScript's ``...Z``, Java's ``OffsetDateTime`` output (seconds
left out when zero), and any number of fractional digits up to nine. A timestamp without a zone is
UTC. ``from`` must be earlier than ``to``.

Data resolution is one minute: a minute counts towards a range when its start lies in
``[from, to)``, so ranges that meet at the same instant never count a minute twice.

Buckets are aligned to the granularity in UTC: minutes, quarter hours, hours and days start at
multiples of their length since the Unix epoch, and ``7d`` and ``1w`` buckets start on Monday
00:00 UTC. For a caller in ``+05:30``, daily buckets therefore start at 05:30 local time.
NOTE: the documentation's example bucket ``2021-06-21T00:00:00.0000000+05:30`` hints that the real
API may align daily buckets to the caller's midnight; the stand-in keeps UTC alignment.

Each bucket is labelled by its start, rendered in the UTC offset of ``from`` with seven fractional
digits, e.g. ``2021-06-21T05:30:00.0000000+05:30``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from proxy.standin.insights.arguments import InvalidArgumentError

MINUTE = 60
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
# Buckets of 7d and 1w start on Mondays; 1970-01-05, four days after the epoch, was a Monday.
_WEEK_ANCHOR = 4 * DAY

# Bucket length in seconds per accepted granularity: the documented five plus the observed "1w".
GRANULARITIES: dict[str, int] = {"1m": MINUTE, "15m": 15 * MINUTE, "1h": HOUR, "1d": DAY, "7d": WEEK, "1w": WEEK}

# Granularity used when a query gives none, by the length of its range (upper bound inclusive).
DEFAULT_GRANULARITY_TABLE: tuple[tuple[int, str], ...] = (
    (HOUR, "1m"),
    (12 * HOUR, "15m"),
    (7 * DAY, "1h"),
    (90 * DAY, "1d"),
)
DEFAULT_GRANULARITY_BEYOND = "7d"

# Upper bound on the buckets of one series, so that a 1m series over a year is rejected at once
# instead of tying up the stand-in; 2000 covers a day at 1m and 83 days at 1h.
MAX_BUCKETS = 2000

_EXAMPLE_TIMESTAMP = "2021-08-16T12:00:00.000+05:30"


@dataclass(frozen=True)
class TimeRange:
    """A parsed TimeFilter in Unix seconds; ``start`` and ``end`` are rounded up to whole minutes."""

    requested_start: float
    requested_end: float
    start: int
    end: int
    # UTC offset of ``from``, used to render every timestamp of the response.
    offset: timezone

    @property
    def duration(self) -> float:
        return self.requested_end - self.requested_start


@dataclass(frozen=True)
class Granularity:
    name: str
    seconds: int

    def bucket_start(self, instant: int) -> int:
        anchor = _WEEK_ANCHOR if self.seconds == WEEK else 0
        return instant - (instant - anchor) % self.seconds


def parse_timestamp(text: str, argument: str) -> datetime:
    """Parse an ISO-8601 timestamp into an aware datetime; a timestamp without a zone is UTC."""
    candidate = text.strip()
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{argument} {text!r} is not an ISO-8601 timestamp; give one like {_EXAMPLE_TIMESTAMP!r}"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def parse_time_filter(time_filter: Mapping[str, Any], argument: str) -> TimeRange:
    """Parse a TimeFilter argument; ``argument`` names it in messages (``filter`` or ``timeFilter``)."""
    start = parse_timestamp(time_filter["from"], f"{argument}.from")
    end = parse_timestamp(time_filter["to"], f"{argument}.to")
    if start >= end:
        raise InvalidArgumentError(
            f"{argument}.from {time_filter['from']!r} is not earlier than {argument}.to {time_filter['to']!r}; "
            "give a range whose start comes before its end"
        )
    offset = start.utcoffset() or timedelta(0)
    requested_start = start.timestamp()
    requested_end = end.timestamp()
    return TimeRange(
        requested_start=requested_start,
        requested_end=requested_end,
        start=math.ceil(requested_start / MINUTE) * MINUTE,
        end=math.ceil(requested_end / MINUTE) * MINUTE,
        offset=timezone(offset),
    )


def default_range(now: float) -> TimeRange:
    """Return the last seven days up to ``now`` in UTC, used where a TimeFilter is optional."""
    end = math.ceil(now / MINUTE) * MINUTE
    return TimeRange(
        requested_start=end - WEEK, requested_end=end, start=end - WEEK, end=end, offset=timezone.utc
    )


def default_granularity(time_range: TimeRange) -> str:
    for upper_bound, name in DEFAULT_GRANULARITY_TABLE:
        if time_range.duration <= upper_bound:
            return name
    return DEFAULT_GRANULARITY_BEYOND


def resolve_granularity(value: str | None, time_range: TimeRange, argument: str) -> Granularity:
    """Check a granularity string, or pick the default for the range, and bound the bucket count."""
    name = default_granularity(time_range) if value is None else value.strip()
    if name not in GRANULARITIES:
        raise InvalidArgumentError(
            f"{argument} {value!r} is not a supported granularity; use one of {', '.join(GRANULARITIES)}"
        )
    granularity = Granularity(name=name, seconds=GRANULARITIES[name])
    buckets = count_buckets(time_range, granularity)
    if buckets > MAX_BUCKETS:
        raise InvalidArgumentError(
            f"{argument} {name!r} splits the time range into {buckets} buckets, over the maximum of "
            f"{MAX_BUCKETS}; use {_coarser_suggestion(time_range)} or a shorter time range"
        )
    return granularity


def count_buckets(time_range: TimeRange, granularity: Granularity) -> int:
    if time_range.start >= time_range.end:
        return 0
    first = granularity.bucket_start(time_range.start)
    last = granularity.bucket_start(time_range.end - 1)
    return (last - first) // granularity.seconds + 1


def _coarser_suggestion(time_range: TimeRange) -> str:
    for name in ("15m", "1h", "1d", "7d"):
        if count_buckets(time_range, Granularity(name, GRANULARITIES[name])) <= MAX_BUCKETS:
            return f"a coarser granularity such as {name!r}"
    return "a coarser granularity"


def bucket_starts(start: int, end: int, granularity: Granularity) -> range:
    """Return the starts of the buckets that overlap ``[start, end)``."""
    if start >= end:
        return range(0)
    first = granularity.bucket_start(start)
    return range(first, end, granularity.seconds)


def format_timestamp(instant: float, offset: timezone) -> str:
    """Render Unix seconds in ``offset`` with seven fractional digits, e.g. ``...T00:00:00.0000000+05:30``."""
    moment = datetime.fromtimestamp(instant, offset)
    # Ticks of 100 ns, the precision of the documented format.
    ticks = moment.microsecond * 10
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ticks:07d}{_format_offset(moment.utcoffset())}"


def _format_offset(offset: timedelta | None) -> str:
    seconds = int((offset or timedelta(0)).total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, remainder = divmod(abs(seconds), HOUR)
    minutes, seconds = divmod(remainder, MINUTE)
    text = f"{sign}{hours:02d}:{minutes:02d}"
    return f"{text}:{seconds:02d}" if seconds else text
