"""CommitTurn: one committer at a time between a commit's two phases.

A client that commits first gets the oids others committed since it last
synced, checks them against what it read, and only then sends its records.
So that the invalidations it checked are still the whole truth when its
records are applied, one session at a time holds the turn from the first
phase to the end of the second; others wait in order, first come, first
served. A holder that goes silent, or keeps the turn too long while others
wait, loses it (its own commit is then refused as a conflict if anyone
committed meanwhile: the session sees the oids in its invalid set).
"""

import collections
import time
from logging import INFO
from typing import TYPE_CHECKING

from durus.logger import log

if TYPE_CHECKING:
    from durus.session import Session


class CommitTurn:
    """Who holds the commit turn, who waits for it, and when a holder loses it.

    grace: seconds a holder may stay silent while others wait.
    timeout: seconds a holder may keep the turn while others wait.
    holder: the session holding the turn, or None.
    """

    def __init__(self, grace: float, timeout: float) -> None:
        self.grace = grace
        self.timeout = timeout
        self.holder = None
        self.granted_at = 0.0  # monotonic time the holder got the turn
        self._waiting: collections.deque = collections.deque()  # sessions, first come first

    def request(self, session: "Session") -> bool:
        """Queue session for the turn unless it is queued; tell whether it
        now holds the turn (it is free and session is first in line)."""
        if session not in self._waiting:
            self._waiting.append(session)
        if self.holder is not None or self._waiting[0] is not session:
            return False
        self._waiting.popleft()
        self.holder = session
        self.granted_at = time.monotonic()
        return True

    def release(self, session: "Session") -> None:
        """End session's turn, if it holds it."""
        if self.holder is session:
            self.holder = None

    def forget(self, session: "Session") -> None:
        """Drop session (gone) from the turn and from the line."""
        self.release(session)
        if session in self._waiting:
            self._waiting.remove(session)

    def next_in_line(self) -> "Session | None":
        """Return the session to grant the free turn to, or None."""
        if self.holder is None and self._waiting:
            return self._waiting[0]
        return None

    def revoke_if_stalled(self, now: float, last_heard: float) -> None:
        """Take the turn from a holder last heard from at last_heard (monotonic)
        when others wait and it has been silent or held the turn too long."""
        holder = self.holder
        if holder is None or not self._waiting:
            return
        silent, held = now - last_heard, now - self.granted_at
        if silent > self.grace:
            log(INFO, "Client %s lost the commit turn: silent for %.1f s", holder.name, silent)
        elif held > self.timeout:
            log(INFO, "Client %s lost the commit turn: held it for %.1f s", holder.name, held)
        else:
            return
        self.holder = None
