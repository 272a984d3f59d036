"""Structured JSON logs (structlog) for the gateway and any process that wants them.

Why one setup: a log line per notification is only useful if it can be searched by field
(``{"event": "accepted", "id": "n-1", "type": ...}``), and the standard-library loggers
the rest of the code uses (``logging.getLogger(__name__)``) must come out as the same JSON,
so both go through structlog's ``ProcessorFormatter`` on one stderr handler.
"""

from __future__ import annotations

import logging
import sys

import structlog


def _drop_color(_logger, _name, event: dict) -> dict:
    event.pop("color_message", None)  # uvicorn's ANSI copy of the message
    return event


_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(level: str | int = "INFO") -> None:
    """Route structlog and stdlib logging to one JSON-lines handler on stderr."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder(), _drop_color],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
