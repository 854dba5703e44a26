"""Structured logs on stderr: the one structlog set-up every process of reconciler uses.

Cross-cutting, beside `secrets` (whose `redact_processor` runs last before
rendering, so no resolved secret reaches a log line). `reconciler run` and
`reconciler worker` log JSON lines with tracebacks rendered into the record;
`apply` and `demo` log JSON off a terminal and readable lines on one.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog

from reconciler.secrets import redact_processor


def configure_logging(*, json_logs: bool, tracebacks: bool = False) -> None:
    """Log to stderr: JSON lines (`json_logs`) or console lines; `tracebacks` renders
    an exception's traceback into the record (for the long-running processes)."""
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if tracebacks:
        processors.append(structlog.processors.format_exc_info)
    processors.append(redact_processor)
    processors.append(
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=processors,
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
