"""Logging: structlog for our events, with aiohttp's stdlib loggers sent through the same chain.

Every line passes the redactor, which masks bearer credentials, JWT-shaped strings and any
secret registered with `register_secret`, so a stray value does not reach the output. Tracebacks
are rendered without local variables, since locals hold secrets and tokens. Repeats of the same
warning or error within a window are folded into one line with a count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
MASK = "[redacted]"
REPEAT_WINDOW_S = 60.0

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask this exact value in every later log line (client secrets, tokens, admin tokens)."""
    if len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    text = BEARER.sub(lambda match: f"{match.group(1)} {MASK}", text)
    text = JWT.sub(MASK, text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask credentials in every string value of the event."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact_text(value)
    return event


class RepeatFolder:
    """structlog processor: let one warning or error through per window, then count repeats.

    Only events with an `error` field fold, keyed by event name and error text.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        self._window_s = window_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def __call__(self, _logger: Any, method: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if method not in ("warning", "error", "critical", "exception") or "error" not in event:
            return event  # only repeats of a known error fold; unexpected faults always log
        key = (str(event.get("event")), str(event.get("error", "")))
        now = time.monotonic()
        first, repeats = self._seen.get(key, (0.0, 0))
        if now - first < self._window_s:
            self._seen[key] = (first, repeats + 1)
            raise structlog.DropEvent
        if len(self._seen) > 1024:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if repeats:
            event["repeated"] = repeats
        return event


class RepeatFilter(logging.Filter):
    """stdlib filter: let one record per logger and message through per window.

    aiohttp logs every malformed request it rejects, so any local client could otherwise
    flood the log. Repeats are counted into the next record that passes.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self._window_s = window_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not isinstance(record.msg, str):
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        first, repeats = self._seen.get(key, (0.0, 0))
        if now - first < self._window_s:
            self._seen[key] = (first, repeats + 1)
            return False
        if len(self._seen) > 1024:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if repeats:
            record.msg = f"{record.msg} (repeated {repeats} times in the last window)"
        return True


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact,
]


def build_formatter(use_json: bool, *, colors: bool = False) -> structlog.stdlib.ProcessorFormatter:
    """Return the formatter that renders our events and aiohttp's stdlib records alike."""
    if use_json:
        renderer: Any = structlog.processors.JSONRenderer()
        exceptions: list[Any] = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback, colors=colors)
        exceptions = [structlog.processors.format_exc_info]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED_PROCESSORS,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions,
                    _redact_exception, renderer],
    )


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Set up structlog and the stdlib root logger for the whole process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(build_formatter(use_json, colors=sys.stderr.isatty()))
    root = logging.getLogger()
    for existing in [h for h in root.handlers if getattr(h, "_insights_proxy", False)]:
        root.removeHandler(existing)
    handler._insights_proxy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    ACCESS_LOG.configure(use_json, level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.client"):
        foreign = logging.getLogger(name)
        if not any(isinstance(existing, RepeatFilter) for existing in foreign.filters):
            foreign.addFilter(RepeatFilter())
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *SHARED_PROCESSORS, RepeatFolder(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _redact_exception(_logger: Any, _name: str,
                      event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in ("exception", "exc_info"):
        if isinstance(event.get(key), str):
            event[key] = redact_text(event[key])
    if isinstance(event.get("exception"), list):
        event["exception"] = redact_text_tree(event["exception"])
    return event


def redact_text_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_text_tree(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_text_tree(item) for key, item in value.items()}
    return value


try:  # orjson serialises the request line about five times faster than json
    import orjson

    def _dumps(fields: dict[str, Any]) -> str:
        return orjson.dumps(fields, default=str).decode()
except ImportError:  # pragma: no cover - orjson is optional
    def _dumps(fields: dict[str, Any]) -> str:
        return json.dumps(fields, default=str, separators=(",", ":"))


class AccessLog:
    """The one line per request, written straight to standard error.

    It runs on every request, so it skips the structlog and stdlib chain (about a third of the
    CPU time of a cache hit when measured) and renders the same fields, keys and format
    directly. Only `path` comes from the client as free text, so only it passes the redactor.
    """

    logger_name = "insights_proxy.access"

    flush_after_s = 0.1
    flush_bytes = 64 * 1024

    def __init__(self) -> None:
        self.enabled = True
        self.use_json = True
        self.trusted_path = ""  # the configured endpoint path, which needs no redaction
        self.stream: Any = None  # None: sys.stderr, looked up at each write
        self._second = -1
        self._prefix = ""
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def configure(self, use_json: bool, level: str) -> None:
        self.use_json = use_json
        self.enabled = logging.getLevelName(level.upper()) <= logging.INFO

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = fields.get("path")
        if isinstance(path, str) and path != self.trusted_path:
            fields["path"] = redact_text(path)
        fields["event"] = "request"
        fields["level"] = "info"
        fields["logger"] = self.logger_name
        fields["timestamp"] = self._timestamp()
        if self.use_json:
            line = _dumps(fields)
        else:
            line = " ".join(f"{key}={value}" for key, value in fields.items()
                            if value is not None)
        self._buffer(line + "\n")

    def _buffer(self, line: str) -> None:
        # Lines are written in batches (at most flush_after_s late, like nginx's buffered
        # access_log), since a write per request costs a system call on the hot path.
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= self.flush_bytes:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_after_s, self.flush)

    def flush(self) -> None:
        """Write the buffered lines now (also called at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        stream = self.stream or sys.stderr
        stream.write(text)
        stream.flush()

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


ACCESS_LOG = AccessLog()
