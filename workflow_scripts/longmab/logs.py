"""Logging set-up shared by rule scripts and the CLI: one format, to a file and to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "longmab"


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the ``longmab`` logger (and warnings) to ``log_path`` and stderr; return it."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        # Truncate now, then append: vLLM's import runs logging.config.dictConfig, which closes every
        # existing handler; a closed mode-"w" FileHandler never reopens (everything logged after the
        # engine started was lost), a mode-"a" one reopens on the next record.
        Path(log_path).write_text("", encoding="utf-8")
        handlers.append(logging.FileHandler(log_path, mode="a", encoding="utf-8"))
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.propagate = False
    logging.captureWarnings(True)
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")
