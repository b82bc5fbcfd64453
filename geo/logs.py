"""civicgrid's log records: every module logs to ``logging.getLogger(__name__)``, under the ``civicgrid`` logger.

The library only emits records (store writes and migrations, imports, the service's requests, errors answered
with a 5xx status); it never configures logging nor prints. An application shows them: the ``civicgrid``
command does with ``--log-level`` (default: the ``log_level`` setting, WARNING), through
:func:`configure_logging`; a notebook or script may call it too, or configure :mod:`logging` as it likes.
"""

from __future__ import annotations

import logging
import sys

#: The logger every civicgrid module's logger descends from.
ROOT_LOGGER = "civicgrid"

#: Format of the records :func:`configure_logging` writes.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (looked up at each record, so it follows a stream that
    was swapped after configuration, as click's test runner does)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the stream is always the current sys.stderr
        pass


def configure_logging(level: str | int = "WARNING") -> None:
    """Write civicgrid's log records at ``level`` and above to standard error.

    Calling it again replaces the level (and the handler it added before); other loggers are left alone.

    Parameters
    ----------
    level
        A level name (``"INFO"``, any case) or number.
    """
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
