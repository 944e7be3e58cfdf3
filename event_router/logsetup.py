"""Logging for the router: human-readable (coloured on a TTY) or JSON lines, with redaction.

Every record goes through a :class:`RedactingFilter` on the handler, which replaces each
known secret (the config's passwords, secret keys, access keys, and their ``user:password``
Basic-auth encodings) with ``[REDACTED]`` in the message, its arguments, extra fields and
the traceback. Code must still never log a secret; this is defence in depth.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterable
from typing import IO, Any

from event_router.timefmt import rfc3339_epoch

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED = "[REDACTED]"
#: secrets shorter than this are not replaced (they would garble every line)
MIN_SECRET_LEN = 3

#: attributes every LogRecord has; anything else was passed with ``extra=``
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "color_message", "taskName"}

_COLOURS = {
    logging.DEBUG: "\033[36m",  # cyan
    logging.INFO: "\033[32m",  # green
    logging.WARNING: "\033[33m",  # yellow
    logging.ERROR: "\033[31m",  # red
    logging.CRITICAL: "\033[1;31m",
}
_DIM = "\033[2m"
_RESET = "\033[0m"


class Redactor:
    """A set of secret strings and the function that blanks them out of text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = set(self._secrets)
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LEN:
                continue
            found.add(secret)
            variants = (
                urllib.parse.quote(secret, safe=""),
                urllib.parse.quote(secret),
                urllib.parse.quote_plus(secret),
                json.dumps(secret)[1:-1],
            )
            for variant in variants:
                if len(variant) >= MIN_SECRET_LEN:
                    found.add(variant)
        with self._lock:
            # longest first, so a secret containing another is replaced whole
            self._secrets = tuple(sorted(found, key=len, reverse=True))

    def add_basic_auth(self, username: str, password: str) -> None:
        """Also blank the ``Authorization: Basic`` encoding of this pair."""
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.add([password, token])

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)


#: the process-wide redactor used by the handler :func:`setup_logging` installs
REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Renders a record's message and traceback and blanks every secret in them."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what we have
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_info:
            # the formatted text replaces the live exception, whose str() may hold secrets
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _redact_value(value, redact))
        return True


def _redact_value(value: Any, redact: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _redact_value(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, redact) for v in value]
    return redact(str(value))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


def _timestamp(record: logging.LogRecord) -> str:
    return rfc3339_epoch(record.created, 3)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, error (traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": _level_name(record.levelno),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["error"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``2024-01-01T10:00:00.000Z  INFO  logger  message  key=value``, coloured on a TTY."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        level = _level_name(record.levelno).upper().ljust(5)
        ts = _timestamp(record)
        name = record.name
        if self.colour:
            level = f"{_COLOURS.get(record.levelno, '')}{level}{_RESET}"
            ts = f"{_DIM}{ts}{_RESET}"
            name = f"{_DIM}{name}{_RESET}"
        line = f"{ts}  {level}  {name}  {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={_kv(v)}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _kv(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def _level_name(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def use_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


_handler: logging.Handler | None = None


def setup_logging(
    level: str = "info",
    json_logs: bool = False,
    *,
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
) -> logging.Handler:
    """Configure the root logger once (calling again replaces our handler).

    ``level`` is one of debug, info, warn, error. Returns the installed handler.
    """
    global _handler
    try:
        levelno = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level: {level!r} is not allowed (allowed: debug, info, warn, error)"
        ) from None
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter() if json_logs else ConsoleFormatter(use_colour(out)))
    REDACTOR.add(secrets)
    handler.addFilter(RedactingFilter(REDACTOR))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(levelno)
    _handler = handler
    # libraries that are chatty at debug and say nothing a router user needs
    quiet = logging.INFO if levelno <= logging.DEBUG else levelno
    for name in ("asyncio", "urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(name).setLevel(max(quiet, logging.INFO))
    logging.captureWarnings(True)
    return handler
