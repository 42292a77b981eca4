"""One structured log line per request, and the request id that ties a line to a client's call."""

import logging
import os
import re
import time
from typing import Any

import orjson
from starlette.types import Scope

logger = logging.getLogger("backend.access")

# A client's request id is echoed into logs and headers: accept only a plain token.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has; anything else was passed in `extra` and belongs in the line.
# (uvicorn adds `color_message`, a copy of the message with terminal colours.)
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # Our lines never show the caller's file and line, thread or process, so
        # the logging module need not look them up for every record: that was
        # about a third of the cost of a request's log line (py-spy). These are
        # the switches the logging HOWTO's "Optimization" section names.
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        self._second = -1
        self._time = ""

    def _timestamp(self, created: float) -> str:
        # One strftime per second, not per line.
        second = int(created)
        if second != self._second:
            self._second, self._time = second, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._time

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # What was passed in `extra`, in a stable order. Set arithmetic rather than a
        # test of every record attribute: half the cost of formatting a request's line.
        fields = vars(record)
        for key in sorted(fields.keys() - _RECORD_ATTRIBUTES):
            line[key] = fields[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # orjson: a tenth of the json module's time for a request's line, which
        # was 2.6% of a task read's CPU instructions (callgrind).
        return orjson.dumps(line, default=str).decode()


def logging_config(level: str) -> dict[str, Any]:
    """`logging.config.dictConfig` settings: JSON lines on stderr, applied by uvicorn in every worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # Our access line replaces uvicorn's, which would log the raw request line.
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def log_request(scope: Scope, status: int, seconds: float, request_id: str) -> str:
    """The request's line: method, route template (never the raw path or headers), status,
    duration and request id. Returns the template, which the metrics are labelled with."""
    # The template, not the path: paths carry user ids.
    # (`path_format`: the template without its convertors, `{task_id}` not `{task_id:task_id}`.)
    route: str = getattr(scope.get("route"), "path_format", None) or "unmatched"
    logger.info(
        "request",
        extra={
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": request_id,
        },
    )
    return route


def request_id_of(scope: Scope) -> tuple[str, bool]:
    """The request's id (the client's `X-Request-ID` if it is a plain token, else a new one),
    and whether it came with an `Origin`: one pass over the headers for both."""
    given: bytes | None = None
    origin = False
    for name, value in scope["headers"]:
        if name == b"x-request-id" and given is None:
            given = value
        elif name == b"origin":
            origin = True
    if given is not None:
        candidate = given.decode("latin-1")
        if _REQUEST_ID.fullmatch(candidate):
            return candidate, origin
    return os.urandom(16).hex(), origin  # as random as uuid4().hex, without building a UUID
