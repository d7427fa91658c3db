"""Fault injection and counters: the stand-in's control routes under ``/_standin/``.

Routes, all responding with JSON:

- ``GET /_standin/stats``: the counters of :class:`proxy.standin.state.Stats` plus ``active_tokens``.
- ``POST /_standin/stats/reset``: zero the counters and return them.
- ``GET /_standin/faults``: the current fault settings.
- ``POST /_standin/faults``: change any of the keys below. The body is a JSON object, for example
  ``{"token_endpoint": "down", "insights_fail_next": {"count": 2, "status": 503}}``. The update is
  applied only when every key is valid. Otherwise the response is 400 naming the key and its allowed values.
- ``DELETE /_standin/faults``: restore the values the stand-in started with.

Fault keys:

- ``token_endpoint``: ``"up"`` is normal. ``"down"`` resets the connection without a response.
  ``"error"`` responds with 500 ``server_error``. ``"slow"`` waits ``token_latency_ms`` (30 s when
  that is 0) and then responds normally. The fault applies to the token and the revoke endpoint,
  which share one STS host.
- ``token_latency_ms``, ``insights_latency_ms``: delay before each response, in milliseconds.
- ``insights_fail_next``: ``{"count": N, "status": S, "retry_after_s": R}`` makes the next N
  Insights requests fail with status S, whatever their token. 401 is the enforcer's invalid-credentials
  body, 429 its throttling body with ``Retry-After`` R seconds ahead (default 60), 500 a GraphQL error
  from the backend, and 502, 503 and 504 router bodies. ``{"count": 0}`` cancels pending failures.
- ``revocation_delay_s``, ``token_lifetime_s``, ``reissue``, ``subscribed``, ``required_scope``:
  override the settings of the same names. A new lifetime applies to tokens issued afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.standin.settings import REISSUE_MODES, StandinSettings
from proxy.standin.state import STANDIN_STATE, StandinState

logger = logging.getLogger(__name__)

TOKEN_ENDPOINT_MODES = ("up", "down", "error", "slow")
INSIGHTS_FAIL_STATUSES = (401, 429, 500, 502, 503, 504)
# Delay of the "slow" fault when token_latency_ms is 0, chosen to outlast typical client timeouts.
SLOW_TOKEN_ENDPOINT_S = 30.0
MAX_LATENCY_MS = 600_000
DEFAULT_RETRY_AFTER_S = 60
FAULT_KEYS = (
    "token_endpoint",
    "token_latency_ms",
    "insights_latency_ms",
    "insights_fail_next",
    "revocation_delay_s",
    "token_lifetime_s",
    "reissue",
    "subscribed",
    "required_scope",
)


class InvalidFaultError(ValueError):
    """A fault update with an unknown key or an invalid value. The message names the key, the value and the fix."""


@dataclass
class Faults:
    """The fault settings in force, plus the settings that the control routes may override."""

    revocation_delay_s: float
    token_lifetime_s: int
    reissue: str
    subscribed: bool
    required_scope: str | None
    token_endpoint: str = "up"
    token_latency_ms: float = 0.0
    insights_latency_ms: float = 0.0
    insights_fail_count: int = 0
    insights_fail_status: int = 503
    insights_retry_after_s: int = DEFAULT_RETRY_AFTER_S

    @classmethod
    def from_settings(cls, settings: StandinSettings) -> Faults:
        return cls(
            revocation_delay_s=settings.revocation_delay_s,
            token_lifetime_s=settings.token_lifetime_s,
            reissue=settings.reissue,
            subscribed=settings.subscribed,
            required_scope=settings.required_scope,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "token_endpoint": self.token_endpoint,
            "token_latency_ms": self.token_latency_ms,
            "insights_latency_ms": self.insights_latency_ms,
            "insights_fail_next": {
                "count": self.insights_fail_count,
                "status": self.insights_fail_status,
                "retry_after_s": self.insights_retry_after_s,
            },
            "revocation_delay_s": self.revocation_delay_s,
            "token_lifetime_s": self.token_lifetime_s,
            "reissue": self.reissue,
            "subscribed": self.subscribed,
            "required_scope": self.required_scope,
        }

    def take_insights_failure(self) -> int | None:
        """Consume one injected Insights failure and return its status, or None when none is pending."""
        if self.insights_fail_count <= 0:
            return None
        self.insights_fail_count -= 1
        return self.insights_fail_status

    def token_delay_s(self) -> float:
        if self.token_endpoint == "slow" and self.token_latency_ms <= 0:
            return SLOW_TOKEN_ENDPOINT_S
        return self.token_latency_ms / 1000


async def pause(state: StandinState, seconds: float) -> None:
    """Sleep for ``seconds`` of real time, or less when the app shuts down meanwhile."""
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(state.closing.wait(), timeout=seconds)
    except TimeoutError:
        pass


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(json.dumps(option) for option in allowed)
        raise InvalidFaultError(f"Fault {key!r} has the invalid value {json.dumps(value)}. Use one of {listed}.")
    return value


def _milliseconds(key: str, value: object) -> float:
    if not _is_number(value) or not 0 <= value <= MAX_LATENCY_MS:  # type: ignore[operator]
        raise InvalidFaultError(
            f"Fault {key!r} has the invalid value {json.dumps(value)}. "
            f"Use a number of milliseconds from 0 to {MAX_LATENCY_MS}."
        )
    return float(value)  # type: ignore[arg-type]


def _fail_next(value: object) -> dict[str, int]:
    usage = (
        'Use {"count": N, "status": S} with N a whole number >= 0, '
        f"S one of {', '.join(str(status) for status in INSIGHTS_FAIL_STATUSES)}, "
        'and optionally "retry_after_s" in whole seconds >= 0.'
    )
    if not isinstance(value, dict):
        raise InvalidFaultError(f"Fault 'insights_fail_next' has the invalid value {json.dumps(value)}. {usage}")
    unknown = sorted(set(value) - {"count", "status", "retry_after_s"})
    if unknown:
        raise InvalidFaultError(f"Fault 'insights_fail_next' has the unknown member {unknown[0]!r}. {usage}")

    count = value.get("count")
    if not _is_integer(count) or count < 0:
        raise InvalidFaultError(f"Fault 'insights_fail_next.count' has the invalid value {json.dumps(count)}. {usage}")
    status = value.get("status")
    if status is None and count == 0:
        status = 503
    if not _is_integer(status) or status not in INSIGHTS_FAIL_STATUSES:
        raise InvalidFaultError(
            f"Fault 'insights_fail_next.status' has the invalid value {json.dumps(status)}. {usage}"
        )
    retry_after_s = value.get("retry_after_s", DEFAULT_RETRY_AFTER_S)
    if not _is_integer(retry_after_s) or retry_after_s < 0:
        raise InvalidFaultError(
            f"Fault 'insights_fail_next.retry_after_s' has the invalid value {json.dumps(retry_after_s)}. {usage}"
        )
    return {"insights_fail_count": count, "insights_fail_status": status, "insights_retry_after_s": retry_after_s}


def parse_fault_update(update: object) -> dict[str, Any]:
    """Validate a fault update and return it as :class:`Faults` attribute names and values.

    Raises:
        InvalidFaultError: ``update`` is not an object, names an unknown key, or has an invalid value.
    """
    if not isinstance(update, dict):
        raise InvalidFaultError(f"The fault update must be a JSON object, not {json.dumps(update)}.")

    changes: dict[str, Any] = {}
    for key, value in update.items():
        if key == "token_endpoint":
            changes[key] = _choice(key, value, TOKEN_ENDPOINT_MODES)
        elif key in ("token_latency_ms", "insights_latency_ms"):
            changes[key] = _milliseconds(key, value)
        elif key == "insights_fail_next":
            changes.update(_fail_next(value))
        elif key == "revocation_delay_s":
            if not _is_number(value) or value < 0:
                raise InvalidFaultError(
                    f"Fault 'revocation_delay_s' has the invalid value {json.dumps(value)}. Use seconds >= 0."
                )
            changes[key] = float(value)
        elif key == "token_lifetime_s":
            if not _is_integer(value) or value < 1:
                raise InvalidFaultError(
                    f"Fault 'token_lifetime_s' has the invalid value {json.dumps(value)}. Use whole seconds >= 1."
                )
            changes[key] = value
        elif key == "reissue":
            changes[key] = _choice(key, value, REISSUE_MODES)
        elif key == "subscribed":
            if not isinstance(value, bool):
                raise InvalidFaultError(
                    f"Fault 'subscribed' has the invalid value {json.dumps(value)}. Use true or false."
                )
            changes[key] = value
        elif key == "required_scope":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidFaultError(
                    f"Fault 'required_scope' has the invalid value {json.dumps(value)}. Use a scope name or null."
                )
            changes[key] = value
        else:
            raise InvalidFaultError(f"Unknown fault {key!r}. Use any of {', '.join(FAULT_KEYS)}.")
    return changes



def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _invalid(message: str) -> web.Response:
    return _json({"error": "invalid_fault", "message": message}, status=400)


async def get_stats(request: web.Request) -> web.Response:
    return _json(request.app[STANDIN_STATE].stats_snapshot())


async def reset_stats(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    state.stats.reset()
    return _json(state.stats_snapshot())


async def get_faults(request: web.Request) -> web.Response:
    return _json(request.app[STANDIN_STATE].faults.as_dict())


async def set_faults(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    try:
        update = json.loads(await request.read())
    except ValueError as exc:
        return _invalid(
            f"The fault update is not valid JSON ({exc}). Send a JSON object such as {{\"reissue\": \"reuse\"}}."
        )
    try:
        changes = parse_fault_update(update)
    except InvalidFaultError as exc:
        return _invalid(str(exc))

    for name, value in changes.items():
        setattr(state.faults, name, value)
    logger.info("Stand-in faults changed: %s", json.dumps(update, sort_keys=True))
    return _json(state.faults.as_dict())


async def clear_faults(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    state.faults = Faults.from_settings(state.settings)
    logger.info("Stand-in faults restored to the start-up settings")
    return _json(state.faults.as_dict())


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_standin/stats", get_stats)
    app.router.add_post("/_standin/stats/reset", reset_stats)
    app.router.add_get("/_standin/faults", get_faults)
    app.router.add_post("/_standin/faults", set_faults)
    app.router.add_delete("/_standin/faults", clear_faults)
