"""Progress of a long operation: a bar (done, rate, time left) when stderr is a
terminal, drawn by rich; log lines otherwise, so that a log stays readable."""

import sys
import time
from contextlib import contextmanager
from logging import INFO
from typing import Callable, Iterator

from durus.logger import log

# Seconds between log lines when there is no terminal.
LOG_INTERVAL = 5.0


@contextmanager
def progress(description: str, total: int | None = None, unit: str = "records",
             terminal: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yield advance(n), to be called as n more units are done; show the
    progress on a terminal (default: if stderr is one), else log it every
    LOG_INTERVAL seconds and once at the end."""
    if terminal is None:
        terminal = sys.stderr.isatty()
    if terminal:
        with _bar(description, total, unit) as advance:
            yield advance
    else:
        with _log_lines(description, total, unit) as advance:
            yield advance


@contextmanager
def _bar(description: str, total: int | None, unit: str):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text("%.0f %s/s" % (task.speed or 0, unit))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  RateColumn(), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextmanager
def _log_lines(description: str, total: int | None, unit: str):
    start = last = time.monotonic()
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= LOG_INTERVAL:
            last = now
            log(INFO, "%s: %s (%.0f %s/s)", description, _count(done, total, unit),
                done / (now - start), unit)

    yield advance
    elapsed = time.monotonic() - start
    log(INFO, "%s: done, %s in %.1f s", description, _count(done, total, unit), elapsed)


def _count(done: int, total: int | None, unit: str) -> str:
    if total is None:
        return "%d %s" % (done, unit)
    return "%d of %d %s" % (done, total, unit)
