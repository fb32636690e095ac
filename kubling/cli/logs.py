"""Structured logs: one line per event, ``text`` for people and ``json`` for machines."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys

import orjson


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        text = f"{stamp:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"
        line = f"{text} {record.levelname.lower():5} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``-v``, read by ``setup``."""
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log line format (default %(default)s)")
    parser.add_argument("-v", "--verbosity", action="count", default=0,
                        help="more logs (-v info, -vv debug)")


def setup(*, fmt: str = "text", verbosity: int = 0) -> None:
    """Configure the root logger: warnings by default, info at -v, debug at -vv."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.INFO if verbosity <= 1 else logging.DEBUG
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if verbosity == 0:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
