"""Structured (JSON) logs on stderr, with secrets kept out. Libraries' standard-library log records
(Alembic, gRPC, SQLAlchemy) go through the same JSON renderer."""

from __future__ import annotations

import logging
import re
import sys

import structlog

_SECRET_KEYS = {"authorization", "api_key", "password", "pin", "secret", "token", "passphrase"}
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
_KEY_LITERAL = re.compile(r"fk_(admin|pos|read)_[A-Za-z0-9_-]+")


def _redact(_, __, event_dict):
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            value = _BEARER.sub("Bearer [redacted]", event_dict[key])
            event_dict[key] = _KEY_LITERAL.sub("fk_[redacted]", value)
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO is a line per plugin at every start
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
