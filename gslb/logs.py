"""Logging set-up: human text by default, one JSON object per line with ``json``.

JSON lines carry ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg`` and, for
exceptions, ``exc``; they are what log shippers want. The prober process logs
in the same format as the server.
"""

from __future__ import annotations

import json
import logging
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: int, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def current() -> tuple[int, str]:
    """(level, format) of this process's logging, for a child process to set up the same."""
    level = logging.getLogger("gslb").getEffectiveLevel()
    handlers = logging.getLogger().handlers
    fmt = "json" if handlers and isinstance(handlers[0].formatter, JsonFormatter) else "text"
    return level, fmt
