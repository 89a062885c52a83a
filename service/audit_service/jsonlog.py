"""One JSON object a line, with the request's correlation id on every line logged inside it."""

from __future__ import annotations

import contextvars
import logging
import socket
import sys
import time
from datetime import UTC, datetime

import orjson

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# Attributes every LogRecord has; anything else was passed with extra= and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "host": self.host,
            "process": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid is not None:
            doc["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class BatchedStreamHandler(logging.StreamHandler):
    """Writes lines in batches: at most every FLUSH_INTERVAL seconds, and at once for warnings
    and errors. Two lines per request, each its own write system call, were a tenth of the API's
    time under load; a line now waits at most FLUSH_INTERVAL (a background flusher sees to that
    when the process is idle, and logging.shutdown flushes at exit)."""

    FLUSH_INTERVAL = 0.25

    def __init__(self, stream):
        super().__init__(stream)
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
            return
        with self.lock:
            self._buffer.append(line)
            if (
                record.levelno >= logging.WARNING
                or time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL
            ):
                self._write()

    def _write(self) -> None:
        if self._buffer:
            self.stream.write("\n".join(self._buffer) + "\n")
            self._buffer.clear()
        self.stream.flush()
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        with self.lock:
            self._write()


def start_flusher() -> None:
    """Flush batched log lines regularly while the process idles (run inside the event loop)."""
    import asyncio

    async def flusher() -> None:
        while True:
            await asyncio.sleep(BatchedStreamHandler.FLUSH_INTERVAL)
            for handler in logging.getLogger().handlers:
                handler.flush()

    task = asyncio.get_running_loop().create_task(flusher())
    _flushers.add(task)  # keep a reference: the loop holds tasks only weakly


_flushers: set = set()


def setup(level: str, service: str, stream=None) -> None:
    handler = BatchedStreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log would duplicate ours, in another format.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
