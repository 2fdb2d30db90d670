"""Structured (JSON) logs on stderr, with secrets kept out. Libraries' standard-library log records
(Alembic, gRPC, SQLAlchemy) go through the same JSON renderer, and so do uncaught exceptions.

Redaction runs last, after exceptions are rendered: a traceback's text (an exception message quoting
a header, a SQL parameter, a connection URL) is scrubbed like any message."""

from __future__ import annotations

import logging
import os
import re
import sys

import structlog

_SECRET_KEYS = {"authorization", "api_key", "password", "pin", "secret", "token", "passphrase"}
_PATTERNS = [
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"fk_(admin|pos|read)_[A-Za-z0-9_-]+"), "fk_[redacted]"),
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), "whsec_[redacted]"),
    # postgresql://user:password@host -> postgresql://user:[redacted]@host
    (re.compile(r"(?i)(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)[^@\s]*@"), r"\1[redacted]@"),
    # pin=1234, "passphrase": "…", --so-pin 5678: short secrets are recognisable only by their name.
    (re.compile(r"""(?i)(?<![a-z])((?:so[-_]?)?pin|passphrase|password)(["']?\s*[:=]\s*["']?|\s+(?=\d))([^\s"',;}]+)"""),
     r"\1\2[redacted]"),
]
# Environment variables whose values are secrets: their literal values are scrubbed wherever they appear.
_SECRET_ENV = re.compile(r"(PASSWORD|PASSPHRASE|_PIN|SECRET|TOKEN_KEY|SECRET_KEY|_CREDENTIALS|_TOKEN)$")
_MIN_LITERAL = 6  # shorter values (a 4-digit PIN) would blank out unrelated numbers; the patterns cover them


def _env_secrets() -> list[str]:
    values = {value for name, value in os.environ.items() if _SECRET_ENV.search(name) and len(value) >= _MIN_LITERAL}
    return sorted(values, key=len, reverse=True)


_literals: list[str] = _env_secrets()


def redact_text(text: str) -> str:
    for literal in _literals:
        text = text.replace(literal, "[redacted]")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value):
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in _SECRET_KEYS else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact(_, __, event_dict):
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _log_uncaught(kind, value, traceback) -> None:
    structlog.get_logger().critical("uncaught exception", exc_info=(kind, value, traceback))


def configure_logging(service: str, level: str = "INFO") -> None:
    global _literals
    _literals = _env_secrets()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Exceptions are rendered to text first, then everything (the traceback too) is redacted.
    render = [structlog.processors.format_exc_info, _redact, structlog.processors.JSONRenderer()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO is a line per plugin at every start
    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    sys.excepthook = _log_uncaught  # Python's default would print an unredacted traceback
