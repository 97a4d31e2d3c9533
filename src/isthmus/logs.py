"""Process logging as text or JSON (``ISTHMUS_LOG_FORMAT``), with secrets scrubbed from messages."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

# Anything shaped like a credential is masked before a line is written, whatever logged it.
_SECRET = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|"
    r"(?i:x-api-key|x-goog-api-key|api-key|authorization)[\"']?\s*[:=]\s*[\"']?[^\s\"',}]+|[?&]key=[^&\s\"']+)"
)


def scrub(text: str) -> str:
    return _SECRET.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    value = match.group(0)
    for sep in (":", "=", " "):
        if sep in value and not value.startswith("sk-"):
            head = value.split(sep, 1)[0]
            return f"{head}{sep}[redacted]"
    return value[:6] + "…[redacted]"


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
