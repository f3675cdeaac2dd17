"""The 'durus' logger that the storage server and tools report through.

Levels are plain numbers, as in Durus: 20 for what an operator wants to see
(server ready, commits, packs), 10 and below for debugging detail.
"""

import logging
import sys
from logging import INFO
from typing import TextIO

logger = logging.getLogger("durus")
log = logger.log


def direct_output(file: TextIO) -> None:
    """Send durus log lines, one bare message per line, to the open text file.

    Unless file is the original stderr, stray prints and tracebacks are sent
    there as well, so that a server started with a log file keeps all its
    output in one place.
    """
    logger.handlers[:] = []
    handler = logging.StreamHandler(file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(INFO)
    if file is sys.__stderr__:
        return
    if sys.stdout is sys.__stdout__:
        sys.stdout = file
    if sys.stderr is sys.__stderr__:
        sys.stderr = file


def is_logging(level: int) -> bool:
    """Tell whether a message at level would be emitted: guards costly formatting."""
    return logger.isEnabledFor(level)
