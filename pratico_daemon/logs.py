"""Logging: one line per event, JSON off a TTY (journald), readable on a TTY.

Context travels as `extra={"conn": …, "room": …, "user": …}`; those fields come
out as JSON keys. Nothing here ever prints a token: `scrub` removes anything
that looks like one from messages, and callers pass ids, never credentials.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

import orjson

CONTEXT_FIELDS = ("conn", "room", "user", "node", "code", "peer", "event")
_SECRET_KEYS = r"(?:access_|guest_)?token|auth|jwt_secret|secret|password|secret_access_key"
# (pattern, replacement): what a credential looks like wherever it turns up in
# free text: a JWT anywhere, `token=…` in a query string, `"token": "…"` in a
# JSON or Python dict, `Bearer …` in a header, a password inside a URL.
_SECRETS = (
    (re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), "***"),
    (re.compile(rf"\b((?:{_SECRET_KEYS})=)[^&\s\"']+"), r"\1***"),
    (re.compile(rf"([\"'](?:{_SECRET_KEYS})[\"']\s*:\s*[\"'])[^\"']*"), r"\1***"),
    (re.compile(r"\b(Bearer\s+)[^\s\"']+", re.IGNORECASE), r"\1***"),
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+(@)"), r"\1***\2"),
)


def scrub(text: str) -> str:
    """Hide tokens, secrets and URL passwords in free text (messages, tracebacks)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _field(value: Any) -> Any:
    return scrub(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                out[field] = _field(value)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        present = [f for f in CONTEXT_FIELDS if record.__dict__.get(f) is not None]
        fields = " ".join(f"{f}={_field(record.__dict__[f])}" for f in present)
        line = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))} "
            f"{record.levelname:<7} {record.name}: {scrub(record.getMessage())}"
        )
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + scrub(self.formatException(record.exc_info))
        return line


class ReopenableFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A file handler that reopens its path on SIGHUP (after logrotate moved it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(open(path, "a", encoding="utf-8"))  # noqa: SIM115

    def close(self) -> None:
        # StreamHandler.close() leaves the stream open: it never opened it. We did.
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()

    def reopen(self) -> None:
        self.acquire()
        try:
            old: IO[str] = self.stream
            self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            old.close()
        finally:
            self.release()


def setup(level: str = "info", fmt: str = "auto", file: str = "") -> None:
    """Configure the `pratico` logger tree once for the process."""
    handler: logging.Handler
    if file:
        handler = ReopenableFileHandler(file)
        stream_is_tty = False
    else:
        handler = logging.StreamHandler(sys.stderr)
        stream_is_tty = sys.stderr.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not stream_is_tty)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger("pratico")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def reopen() -> None:
    """SIGHUP: reopen log files so logrotate can move them."""
    for handler in logging.getLogger("pratico").handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"pratico.{name}")
