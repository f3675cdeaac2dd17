"""Prometheus metrics of a storage server: `durus -s --metrics HOST:PORT`.

A ServerMetrics owns the metrics, in a registry of its own, and serves them
over HTTP (at /metrics, or any path) from a thread of the official client
library (prometheus-client, the `metrics` extra, imported only then). The
server, its sessions and its pack call its plain methods as things happen;
a server without metrics holds NO_METRICS, whose methods do nothing.
"""

import ipaddress
import threading
from logging import INFO, WARNING
from wsgiref.simple_server import WSGIServer

from durus.exposure import is_loopback
from durus.logger import log

# Where --metrics PORT listens when no host is given: this machine only.
DEFAULT_METRICS_HOST = "127.0.0.1"

# Commit latencies, in seconds: a durable commit takes a disk flush (a
# millisecond or more), a commit waiting for its turn behind others longer.
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                          1.0, 2.5, 5.0, 10.0)

# The kinds of conflict counted, as the label values of durus_conflicts_total.
CONFLICT_KINDS = {
    "load": "a load answered 'invalid' (the client raises ReadConflictError)",
    "commit": "a commit refused as a conflict (WriteConflictError)",
    "client": "a commit the client gave up when the invalidations showed a conflict",
}


def parse_metrics_address(text: str) -> tuple[str, int]:
    """Return (host, port) for 'HOST:PORT', '[IPv6]:PORT' or 'PORT' (host
    DEFAULT_METRICS_HOST); port 0 lets the system pick one. Raises
    ValueError saying what is wrong."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        host = DEFAULT_METRICS_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError("%r has no host before the ':' (use 0.0.0.0 to listen on every "
                         "interface)" % text)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("%r is not HOST:PORT" % text) from None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("%r is not HOST:PORT or PORT with a port from 0 to 65535" % text)
    return host, int(port_text)


class NoMetrics:
    """What a server reports as things happen; this one keeps nothing."""

    def connected(self, count: int) -> None:
        """count clients are connected now."""

    def loaded(self, count: int) -> None:
        """A client asked for count records."""

    def committed(self, size: int, seconds: float) -> None:
        """A commit of size payload bytes was answered, seconds after it was requested."""

    def conflict(self, kind: str) -> None:
        """A conflict of a kind in CONFLICT_KINDS happened."""

    def pack_started(self) -> None:
        """A pack started."""

    def pack_stepped(self) -> None:
        """The pack underway took a step."""

    def pack_ended(self, finished: bool) -> None:
        """The pack is over: finished, or failed or abandoned."""


NO_METRICS = NoMetrics()


class ServerMetrics(NoMetrics):
    """The metrics of one storage server, and their HTTP endpoint.

    registry: the prometheus_client.CollectorRegistry holding them.
    address: (host, port) the endpoint listens on, once listen() returned.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.registry = CollectorRegistry()
        self.address: tuple[str, int] | None = None
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        registry = self.registry
        self._clients = Gauge("durus_clients_connected", "Clients connected to the server.",
                              registry=registry)
        self._loads = Counter("durus_loads", "Records requested by loads and bulk loads.",
                              registry=registry)
        self._commits = Counter("durus_commits", "Commits answered as done.", registry=registry)
        self._commit_seconds = Histogram(
            "durus_commit_seconds", "Seconds from a commit request to its answer, the wait "
            "for the commit turn and the flush to disk included.",
            buckets=COMMIT_SECONDS_BUCKETS, registry=registry)
        self._bytes = Counter("durus_committed_bytes",
                              "Bytes of commit payloads written to the storage.",
                              registry=registry)
        self._conflicts = Counter(
            "durus_conflicts", "Conflicts, by kind: " + "; ".join(
                "%s: %s" % item for item in CONFLICT_KINDS.items()) + ".",
            ["kind"], registry=registry)
        for kind in CONFLICT_KINDS:
            self._conflicts.labels(kind)  # shown at 0 before the first one
        self._pack_running = Gauge("durus_pack_running", "1 while a pack runs, else 0.",
                                   registry=registry)
        self._pack_steps = Gauge("durus_pack_steps",
                                 "Steps done by the pack underway, or by the last one.",
                                 registry=registry)
        self._packs = Counter("durus_packs", "Packs finished.", registry=registry)

    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve the metrics over HTTP at (host, port) from a daemon thread;
        return the address it listens on (its port, if port was 0).
        Raises OSError if it cannot listen there."""
        from prometheus_client import start_http_server
        try:
            server, thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise OSError("cannot serve the metrics at %s:%d: %s" % (host, port, exc)) from None
        self._http = server, thread
        self.address = (host, server.server_address[1])
        log(INFO, "Metrics on http://%s/metrics", self.url_authority())
        if not is_loopback(server.socket):
            log(WARNING, "The metrics at %s can be read from other machines, by anyone "
                "who can reach them", self.url_authority())
        return self.address

    def url_authority(self) -> str:
        """Return 'host:port' of the endpoint as a URL names it."""
        assert self.address is not None, "listen() first"
        host, port = self.address
        return "%s:%d" % ("[%s]" % host if ":" in host else host, port)

    def close(self) -> None:
        """Stop serving the metrics, if they are served."""
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join()
            self._http = None

    # What the server reports.

    def connected(self, count: int) -> None:
        self._clients.set(count)

    def loaded(self, count: int) -> None:
        self._loads.inc(count)

    def committed(self, size: int, seconds: float) -> None:
        self._commits.inc()
        self._bytes.inc(size)
        self._commit_seconds.observe(seconds)

    def conflict(self, kind: str) -> None:
        self._conflicts.labels(kind).inc()

    def pack_started(self) -> None:
        self._pack_running.set(1)
        self._pack_steps.set(0)

    def pack_stepped(self) -> None:
        self._pack_steps.inc()

    def pack_ended(self, finished: bool) -> None:
        self._pack_running.set(0)
        if finished:
            self._packs.inc()
