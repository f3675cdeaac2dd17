"""Look inside a database in a web browser (read-only): objects, links, census.

`durus browse TARGET [--port P]` serves pages on 127.0.0.1 only, at a URL
carrying a random token that every request must present (the link sets it
as a cookie). TARGET is a storage file, a postgresql:// URI or
durus://HOST:PORT (a running server, as a client that never commits).
"""

import argparse
import os
import secrets
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from logging import DEBUG, WARNING
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from durus.btree import BTree
from durus.error import DurusKeyError, ReadConflictError
from durus.logger import log
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.record_format import unpack_record
from durus.tools import browse_pages as pages
from durus.tools.raw_state import RawObject, Ref, decode_class_name, decode_record, import_class
from durus.tools.target import SERVER_SCHEME, open_target
from durus.utils import int8_to_str

HOST = "127.0.0.1"
PAGE_SIZE = 50

# The containers whose contents are shown page by page: the class, and the
# attribute of its state that holds the contents.
_CONTAINERS = ((PersistentDict, "data"), (PersistentList, "data"), (PersistentSet, "s"),
               (BTree, "root"))
_CONTAINER_NAMES = {"%s.%s" % (cls.__module__, cls.__name__): (cls, attribute)
                    for cls, attribute in _CONTAINERS}


def container_of(class_name: str) -> tuple[type, str] | None:
    """Return (container class, contents attribute) if class_name is one of
    the containers or a subclass that imports here, else None."""
    if class_name in _CONTAINER_NAMES:
        return _CONTAINER_NAMES[class_name]
    cls = import_class(class_name)
    for container, attribute in _CONTAINERS:
        if cls is not None and issubclass(cls, container):
            return container, attribute
    return None


class Browser:
    """The storage being browsed. Every use of it runs on one thread of its
    own, one at a time: storages are not thread-safe, and an SQLite one
    belongs to the thread that opened it. Use it through run()."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="durus-browse-storage")
        try:
            self.storage = self._thread.submit(open_target, target, True).result()
        except BaseException:
            self._thread.shutdown()
            raise
        self._file_stamp = self._stamp()
        self._census: dict | None = None

    def run(self, function: Callable[["Browser"], Any]) -> Any:
        """Return function(self), called on the storage's thread once the
        storage shows what was committed since the last call."""
        return self._thread.submit(self._refreshed, function).result()

    def _refreshed(self, function):
        self.refresh()
        return function(self)

    def _stamp(self) -> tuple | None:
        """(size, mtime) of a file target, to notice commits by a writer."""
        if self.target.startswith(SERVER_SCHEME) or not os.path.isfile(self.target):
            return None
        status = os.stat(self.target)
        return status.st_size, status.st_mtime_ns

    def refresh(self) -> None:
        """Let the next loads see what was committed since the last request."""
        stamp = self._stamp()
        if stamp != self._file_stamp:
            # A read-only file storage reads its index once: open it anew.
            self.storage.close()
            self.storage = open_target(self.target, readonly=True)
            self._file_stamp = stamp
            self._census = None
        elif self.storage.sync():
            self._census = None

    def load(self, oid: int) -> RawObject:
        return decode_record(self.storage.load(int8_to_str(oid)))

    def census(self) -> dict:
        """Return {class name: (objects, bytes)}, counted once per change."""
        if self._census is None:
            census: dict[str, tuple[int, int]] = {}
            for _, record in self.storage.gen_oid_record():
                name = decode_class_name(unpack_record(record)[1])
                count, size = census.get(name, (0, 0))
                census[name] = (count + 1, size + len(record))
            self._census = census
        return self._census

    def close(self) -> None:
        self._thread.submit(self.storage.close).result()
        self._thread.shutdown()


def walk_btree(load: Callable[[Ref], dict], root: dict, at: list, step: int) -> Iterator[tuple[list[int], Any]]:
    """Yield (position, (key, value)) of a BTree's items from position at,
    ascending (step 1, the item at included) or descending (step -1, the
    item at excluded); load(Ref) returns a node's state.

    A position is the list of slots on the way down from root: in a node of n
    items, slot 2i is child i and slot 2i + 1 item i, so the tree in order is
    the slots in order. An empty at starts at the first item.
    """
    stack: list[list[Any]] = [[root, at[0] if at else 0]]
    for slot in at[1:]:
        node, parent_slot = stack[-1]
        stack.append([load(node["nodes"][parent_slot // 2]), slot])
    if step < 0:
        stack[-1][1] -= 1
    while stack:
        entry = stack[-1]
        node, slot = entry
        items = node["items"]
        if not 0 <= slot <= 2 * len(items):
            stack.pop()
            if stack:
                stack[-1][1] += step
        elif slot % 2:
            yield [s for _, s in stack], items[slot // 2]
            entry[1] += step
        elif node["nodes"] is None:
            entry[1] += step
        else:
            child = load(node["nodes"][slot // 2])
            stack.append([child, 0 if step > 0 else 2 * len(child["items"])])


def _is_position(load, root: dict, at: list) -> bool:
    """Tell whether at is the position of an item of the tree under root."""
    node = root
    for depth, slot in enumerate(at):
        last = depth == len(at) - 1
        if slot % 2 != last or not 0 <= slot // 2 < len(node["items"]) + (not last):
            return False
        if not last:
            if node["nodes"] is None:
                return False
            node = load(node["nodes"][slot // 2])
    return bool(at)


def _page_number(query: dict) -> int:
    try:
        return max(1, int(query.get("page", ["1"])[0]))
    except ValueError:
        return 1


def _btree_contents(browser: Browser, oid: int, root_ref, query: dict) -> str:
    def load(ref: Ref) -> Any:
        return browser.load(ref.oid).state

    root = load(root_ref)
    page_number = _page_number(query)
    try:
        at = [int(slot) for slot in query.get("at", [""])[0].split(".") if slot]
    except ValueError:
        at = []
    if not _is_position(load, root, at):  # none, or a tree changed since
        at, page_number = [], 1
    shown = list(islice(walk_btree(load, root, at, 1), PAGE_SIZE + 1))
    following = previous = None
    if len(shown) > PAGE_SIZE:
        following = {"at": _format_position(shown[-1][0]), "page": page_number + 1}
    if at:
        before = list(islice(walk_btree(load, root, at, -1), PAGE_SIZE))
        if len(before) == PAGE_SIZE and page_number > 2:
            previous = {"at": _format_position(before[-1][0]), "page": page_number - 1}
        elif before:
            previous = {"page": 1}
    rows = [item for _, item in shown[:PAGE_SIZE]]
    pager = pages.pager_html(oid, page_number, previous, following)
    return pages.contents_html("Items", rows, pager)


def _format_position(position: list) -> str:
    return ".".join(map(str, position))


def _sequence_contents(oid: int, rows: list, query: dict) -> str:
    """The contents section of a dict, list or set: rows, a page at a time."""
    last_page = max(1, -(-len(rows) // PAGE_SIZE))
    page_number = min(_page_number(query), last_page)
    start = (page_number - 1) * PAGE_SIZE
    previous = {"page": page_number - 1} if page_number > 1 else None
    following = {"page": page_number + 1} if page_number < last_page else None
    pager = pages.pager_html(oid, page_number, previous, following, last_page)
    return pages.contents_html("%d items" % len(rows), rows[start:start + PAGE_SIZE], pager)


def object_view(browser: Browser, oid: int, query: dict) -> str:
    """Return the page of the object of oid; query holds the contents' page."""
    obj = browser.load(oid)
    attributes = dict(obj.state) if isinstance(obj.state, dict) else None
    container = container_of(obj.class_name)
    contents = ""
    if container is not None and attributes is not None and container[1] in attributes:
        cls, attribute = container
        if cls is BTree:
            contents = _btree_contents(browser, oid, attributes[attribute], query)
        else:
            data = attributes.pop(attribute)
            rows = list(data.items()) if isinstance(data, dict) else list(enumerate(data))
            contents = _sequence_contents(oid, rows, query)
    importable = import_class(obj.class_name) is not None
    return pages.object_page(obj, importable, attributes, contents)


class _Handler(BaseHTTPRequestHandler):
    server: "BrowseServer"
    timeout = 60  # a connection the browser opened and left idle is dropped

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        server = self.server
        token = query.get("token", [None])[0]
        if token is not None and secrets.compare_digest(token, server.token):
            # Once in a cookie, the token leaves the address bar and history.
            self._send(303, "", {"Location": url.path,
                                 "Set-Cookie": "%s=%s; Path=/; HttpOnly; SameSite=Lax"
                                 % (server.cookie_name, server.token)})
            return
        cookie = SimpleCookie(self.headers.get("Cookie", "")).get(server.cookie_name)
        if cookie is None or not secrets.compare_digest(cookie.value, server.token):
            self._send(403, pages.error_page(
                "Forbidden", "Open the URL with the token that durus browse printed."))
            return
        self._send(*self._route(url.path, query))

    def _route(self, path: str, query: dict) -> tuple:
        """Return (status, page, headers) for an authorised request."""
        if path == "/goto":
            oid = query.get("oid", [""])[0].strip()
            if not oid.isdigit():
                return 400, pages.error_page("Bad oid", "An oid is a number: %r is not." % oid)
            return 303, "", {"Location": "/oid/%d" % int(oid)}
        if path == "/census":
            return self._with_storage(lambda browser: pages.census_page(browser.census()))
        oid_text = "0" if path == "/" else path.removeprefix("/oid/")
        if path != "/" and (oid_text == path or not oid_text.isdigit()):
            return 404, pages.error_page("Not found", "There is no page %s." % path)
        oid = int(oid_text)
        return self._with_storage(lambda browser: object_view(browser, oid, query),
                                  "There is no object with oid %d." % oid)

    def _with_storage(self, render, missing: str = "") -> tuple:
        """Return (status, page) of render(browser), run with the storage up to date."""
        for _ in range(3):
            try:
                return 200, self.server.browser.run(render)
            except ReadConflictError:
                continue  # committed between our sync and a load: again
            except DurusKeyError:
                return 404, pages.error_page("Not found", missing)
            except ConnectionError as exc:
                return 502, pages.error_page("Storage unreachable", str(exc))
            except Exception as exc:  # a damaged record must not stop the server
                log(WARNING, "durus browse: %s failed", self.path, exc_info=True)
                return 500, pages.error_page("Cannot show this", "%s: %s" % (
                    type(exc).__name__, exc))
        return 503, pages.error_page("Busy", "The database keeps changing: reload.")

    def _send(self, status: int, body: str, headers: dict | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                         "base-uri 'none'; frame-ancestors 'none'")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log(DEBUG, "durus browse: " + format, *args)


class BrowseServer(ThreadingHTTPServer):
    """The HTTP server of one Browser, on 127.0.0.1; token: the secret every
    request must carry (query parameter once, then cookie)."""

    daemon_threads = True

    def __init__(self, browser: Browser, port: int = 0) -> None:
        super().__init__((HOST, port), _Handler)
        self.browser = browser
        self.token = secrets.token_urlsafe(24)
        self.port = self.server_address[1]
        # Per port: cookies are shared by every port of a host.
        self.cookie_name = "durus_browse_%d" % self.port

    def url(self) -> str:
        return "http://%s:%d/?token=%s" % (HOST, self.port, self.token)


def _stop(signum, frame):
    raise KeyboardInterrupt


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("%r is not a port number (0 to 65535)" % text)
    return int(text)


def main(argv: list) -> None:
    """Serve the pages of TARGET until stopped (Ctrl-C or SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="durus browse", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a storage file, postgresql:// URI or durus://HOST:PORT")
    parser.add_argument("--port", type=_port, default=0,
                        help="the port of the pages on 127.0.0.1 (default: any free port)")
    args = parser.parse_args(argv)
    browser = Browser(args.target)
    try:
        server = BrowseServer(browser, args.port)
    except BaseException:
        browser.close()
        raise
    signal.signal(signal.SIGTERM, _stop)
    sys.stdout.write("Browse %s at %s\n" % (args.target, server.url()))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        browser.close()
