"""Packing: a server's pack, run a step at a time between requests."""

from datetime import datetime
from logging import ERROR, INFO
from typing import Generator

from durus.logger import log
from durus.metrics import NO_METRICS, NoMetrics
from durus.storage import Storage


class Packing:
    """Packs storage on request, or once gcbytes bytes were committed since
    the last pack (0: never by itself), a step at a time.

    bytes_since_pack: int, bytes committed since the last pack ended.
    metrics: a durus.metrics.ServerMetrics told of the pack's progress.
    """

    def __init__(self, storage: Storage, gcbytes: int | float, metrics: NoMetrics = NO_METRICS) -> None:
        self.storage = storage
        self.gcbytes = gcbytes
        self.bytes_since_pack = 0
        self.metrics = metrics
        self._steps: Generator | None = None

    @property
    def running(self) -> bool:
        return self._steps is not None

    def start(self) -> None:
        """Start a pack unless one runs."""
        if self.running:
            log(INFO, "Pack already in progress at %s", datetime.now())
            return
        log(INFO, "Pack started at %s", datetime.now())
        self._begin()

    def note_committed(self, size: int) -> None:
        """Count size bytes committed; start a pack if they make gcbytes."""
        self.bytes_since_pack += size
        if not self.running and 0 < self.gcbytes <= self.bytes_since_pack:
            log(INFO, "Automatic pack started at %s after %d bytes committed",
                datetime.now(), self.bytes_since_pack)
            self._begin()

    def step(self) -> None:
        """Run one step of the pack underway."""
        assert self._steps is not None, "no pack is running"
        try:
            step = next(self._steps)
            if isinstance(step, str):
                log(15, "Pack: %s", step)
            self.metrics.pack_stepped()
        except StopIteration:
            self._finished()
        except Exception:  # noqa: BLE001 - a failed pack must not stop the server
            log(ERROR, "Pack failed", exc_info=True)
            self._steps = None
            self.metrics.pack_ended(finished=False)
            # The next automatic pack waits for another gcbytes, rather than
            # retrying (and likely failing) again at once, over and over.
            self.bytes_since_pack = 0

    def abandon(self) -> None:
        """Stop the pack underway, if any, leaving the storage as it was."""
        if self._steps is not None:
            self._steps.close()
            self._steps = None
            log(INFO, "Pack abandoned: the server is stopping")
            self.metrics.pack_ended(finished=False)

    def _begin(self) -> None:
        self.metrics.pack_started()
        self._steps = self.storage.get_packer()  # type: ignore[assignment]  # a generator, from the storages that pack in steps
        if self._steps is None:
            # The storage cannot pack a step at a time: do it all now.
            self.storage.pack()
            self._finished()

    def _finished(self) -> None:
        self._steps = None
        self.bytes_since_pack = 0
        log(INFO, "Pack finished at %s", datetime.now())
        self.metrics.pack_ended(finished=True)
