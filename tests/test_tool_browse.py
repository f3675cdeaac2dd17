"""durus browse as a person uses it: a real `durus browse` process on real
databases, driven through Debian's Chromium, headless, with Playwright."""

import http.cookiejar
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request

import pytest

from durus.btree import BTree
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList

from readme import shell_commands
from server_processes import ROOT, TESTS, free_port, our_env


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
# Where the README's picture of an object page comes from (see test_screenshot).
SCREENSHOT = ROOT / "docs" / "browse-object-page.png"
TREE_SIZE = 1_000_000
SCRIPT = "<script>alert('boo')</script>"

try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
# CI runs scripts/test-all.sh, which installs both: there, their absence fails.
if sync_playwright is None or not os.path.exists(CHROMIUM):
    reason = ("needs Debian's Chromium at %s (scripts/setup-browser.sh) and playwright "
              "(pip install -e '.[test]')" % CHROMIUM)
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


# A module the browse process cannot import: its classes show from raw state.
_vanished = types.ModuleType("vanished_app")


class Library(Persistent):
    pass


class Point:
    pass


for _cls in (Library, Point):
    _cls.__module__ = _vanished.__name__
    setattr(_vanished, _cls.__name__, _cls)


def build_database(path) -> dict:
    """Make the test database at path; return {name: oid} of its objects and
    the number of nodes of its BTree."""
    sys.modules[_vanished.__name__] = _vanished
    try:
        connection = Connection(FileStorage(str(path)))
        root = connection.get_root()
        library = root["library"] = Library()
        library.name = "City library"
        library.motto = SCRIPT
        library.where = Point()
        library.where.x = 3
        shelf = PersistentDict(label="Novels")
        shelf["books"] = PersistentList(["Dune", "Emma"])
        library.shelves = PersistentList([shelf])
        root["numbers"] = PersistentList(range(120))
        tree = root["tree"] = BTree()
        connection.commit()
        step = 200_000
        for start in range(0, TREE_SIZE, step):
            tree.update((key, "v%d" % key) for key in range(start, start + step))
            connection.commit()
        oids = {name: int.from_bytes(obj._p_oid, "big") for name, obj in (
            ("root", root), ("library", library), ("shelves", library.shelves),
            ("shelf", shelf), ("numbers", root["numbers"]), ("tree", tree))}
        oids["nodes"] = tree.get_node_count()
        connection.storage.close()
        return oids
    finally:
        del sys.modules[_vanished.__name__]


class Browse:
    """A `durus browse` process; url is the URL with the token it printed."""

    def __init__(self, *args: str, cwd=None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durus", "browse", *args], cwd=cwd, env=our_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._first_line()
        match = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=\S+", line)
        if not match:
            self.stop()
            raise AssertionError("no URL in %r; stderr: %s" % (line, self.process.stderr.read()))
        self.url = match.group(0)
        self.base = match.group(1)

    def _first_line(self, timeout: float = 30) -> str:
        if select.select([self.process.stdout], [], [], timeout)[0]:
            return self.process.stdout.readline()
        return ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        finally:
            self.process.kill()
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> tuple:
    """(path, oids) of the test database, built by build_database in a child
    process that has the C accelerator even when the tests run without it:
    the data are the same, made in a third of the time."""
    path = tmp_path_factory.mktemp("browse") / "big.durus"
    env = {name: value for name, value in our_env().items() if name != "DURUS_PURE_PYTHON"}
    env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(TESTS)))
    built = subprocess.run(
        [sys.executable, "-c", "import json, sys, test_tool_browse as t; "
         "print(json.dumps(t.build_database(sys.argv[1])))", str(path)],
        env=env, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return path, json.loads(built.stdout)


@pytest.fixture(scope="module")
def oids(database) -> dict:
    return database[1]


@pytest.fixture(scope="module")
def browse(database):
    path = database[0]
    before = path.read_bytes()
    process = Browse(str(path))
    yield process
    assert process.stop() == 0
    assert path.read_bytes() == before  # read-only


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, browse):
    """A page in a fresh browser context, at the root (token taken);
    page.dialogs lists every dialog a script opened."""
    context = chromium.new_context()
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.goto(browse.url)
    yield tab
    context.close()


def heading(page) -> str:
    return page.inner_text("h1")


def keys_shown(page) -> list:
    return [int(text) for text in page.locator("table.contents td.key").all_inner_texts()]


def test_token_moves_to_a_cookie_and_the_root_shows(page, browse, oids):
    assert page.url == browse.base + "/"
    assert heading(page) == "PersistentDict %d" % oids["root"]
    assert page.inner_text("#class") == "durus.persistent_dict.PersistentDict"


def test_click_down_three_levels_and_back(page, oids):
    path = [("library", "Library"), ("shelves", "PersistentList"), ("shelf", "PersistentDict")]
    for name, class_name in path:
        page.click('a.ref[href="/oid/%d"]' % oids[name])
        assert heading(page) == "%s %d" % (class_name, oids[name])
    assert "'Novels'" in page.inner_text("table.contents")
    for name, class_name in reversed([("root", "PersistentDict")] + path[:-1]):
        page.go_back()
        assert heading(page) == "%s %d" % (class_name, oids[name])


def test_btree_pages_forward_and_back(page, browse, oids):
    page.goto("%s/oid/%d" % (browse.base, oids["tree"]))
    assert keys_shown(page) == list(range(50))
    assert page.locator('a[rel="prev"]').count() == 0
    for number in (2, 3, 4):
        started = time.monotonic()
        page.click('a[rel="next"]')
        assert time.monotonic() - started < 2  # a page of a million keys, at once
        assert keys_shown(page) == list(range(50 * (number - 1), 50 * number))
        assert "page %d" % number in page.inner_text(".position")
    assert page.locator("table.contents tr").first.inner_text() == "150\t'v150'"
    for number in (3, 2, 1):
        page.click('a[rel="prev"]')
        assert keys_shown(page) == list(range(50 * (number - 1), 50 * number))
    assert page.locator('a[rel="prev"]').count() == 0


def test_list_pages(page, browse, oids):
    page.goto("%s/oid/%d" % (browse.base, oids["numbers"]))
    assert page.inner_text("h2 >> nth=-1") == "120 items"
    assert keys_shown(page) == list(range(50))
    page.click('a[rel="next"]')
    page.click('a[rel="next"]')
    assert keys_shown(page) == list(range(100, 120))
    assert page.locator(".position").first.inner_text() == "page 3 of 3"
    assert page.locator('a[rel="next"]').count() == 0


def test_census_chart_names_the_classes(page, oids):
    page.click("nav >> text=Census")
    chart = page.locator("svg#census-chart")
    assert chart.count() == 1
    labels = chart.locator("text.label").all_text_contents()
    assert {"BNode16", "BTree", "Library", "PersistentDict", "PersistentList"} <= set(labels)
    rows = {row[0]: row[1:] for row in (
        line.split("\t") for line in page.locator("table.census tr").all_inner_texts())}
    assert rows["durus.btree.BNode16"][0] == str(oids["nodes"])
    assert rows["vanished_app.Library"][0] == "1"


def test_go_to_an_oid(page, oids):
    page.fill('input[name="oid"]', str(oids["shelf"]))
    page.press('input[name="oid"]', "Enter")
    assert heading(page) == "PersistentDict %d" % oids["shelf"]
    page.fill('input[name="oid"]', "987654321")
    page.press('input[name="oid"]', "Enter")
    assert "no object with oid 987654321" in page.inner_text("body")


def test_unimportable_class_shows_from_its_raw_state(page, browse, oids):
    page.goto("%s/oid/%d" % (browse.base, oids["library"]))
    assert page.inner_text("#class") == "vanished_app.Library"
    assert "not importable" in page.inner_text("table.facts")
    attributes = dict(line.split("\t") for line in
                      page.locator("table.attributes tr").all_inner_texts())
    assert attributes["name"] == "'City library'"
    assert attributes["where"] == "vanished_app.Point {'x': 3}"
    assert attributes["shelves"] == "PersistentList %d" % oids["shelves"]


def test_a_script_in_an_attribute_shows_as_text(page, browse, oids):
    page.goto("%s/oid/%d" % (browse.base, oids["library"]))
    motto = page.locator("table.attributes tr", has_text="motto").locator("td")
    assert motto.inner_text() == repr(SCRIPT)
    assert page.locator("script").count() == 0
    assert page.dialogs == []


def test_screenshot(page, browse, oids):
    """Keeps the README's picture of an object page up to date when asked
    (DURUS_SCREENSHOT=1); otherwise checks that one is taken."""
    page.set_viewport_size({"width": 1000, "height": 560})
    page.goto("%s/oid/%d" % (browse.base, oids["library"]))
    picture = page.screenshot()
    assert picture.startswith(b"\x89PNG")
    if os.environ.get("DURUS_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(picture)


def fetch(url: str, opener=None) -> tuple[int, str]:
    """Return (status, body) of a GET, following no redirect unless opener does."""
    try:
        with (opener or urllib.request.build_opener(_NoRedirect)).open(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def cookie_opener():
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def test_requests_without_the_token_get_403(browse, oids):
    for path in ("/", "/oid/%d" % oids["library"], "/census", "/goto?oid=0", "/nothing"):
        status, body = fetch(browse.base + path)
        assert status == 403 and "token" in body
        assert "City library" not in body
    assert fetch(browse.base + "/?token=not-the-token")[0] == 403
    request = urllib.request.Request(browse.base + "/",
                                     headers={"Cookie": "durus_browse_1=guess"})
    assert fetch(request)[0] == 403
    assert fetch(browse.url)[0] == 303
    opener = cookie_opener()
    assert fetch(browse.url, opener)[0] == 200
    assert fetch(browse.base + "/census", opener)[0] == 200


def listening_addresses(port: int) -> list:
    """Return the local addresses (hex, as /proc/net shows them) of the TCP
    sockets listening on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(address)
    return found


def test_listens_on_loopback_only(browse):
    port = int(browse.base.rpartition(":")[2])
    assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, and nothing else


def _write(connection: Connection, motto: str) -> None:
    connection.get_root()["motto"] = motto
    connection.commit()


def _shows_new_commits(target: str, writer: Connection, chromium) -> None:
    _write(writer, "first")
    browse = Browse(target)
    try:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(browse.url)
        assert "'first'" in page.inner_text("table.contents")
        _write(writer, "second")
        page.reload()
        assert "'second'" in page.inner_text("table.contents")
        context.close()
    finally:
        assert browse.stop() == 0


@pytest.mark.parametrize("kind", ["file", "server"])
def test_new_commits_show_on_reload(kind, tmp_path, servers, chromium):
    path = tmp_path / "live.durus"
    if kind == "file":
        writer = Connection(FileStorage(str(path)))
        target = str(path)
    else:
        server = servers.ours("--file", str(path))
        writer = Connection(ClientStorage(address=server.address))
        target = "durus://%s:%d" % server.address
    try:
        _shows_new_commits(target, writer, chromium)
    finally:
        writer.storage.close()


def test_relational_databases_show_new_commits(shared_database, chromium):
    writer = Connection(shared_database())
    try:
        _shows_new_commits(shared_database.args[0], writer, chromium)
    finally:
        writer.storage.close()


@pytest.mark.parametrize("target, message", [
    ("missing.durus", "no durus file"),
    ("not-a-database.txt", "not a Durus storage file"),
    ("durus://127.0.0.1:%d" % free_port(), "cannot connect"),
    ("durus://nowhere", "is not durus://HOST:PORT"),
    ("postgresql://nobody@127.0.0.1:%d/none" % free_port(), "cannot connect to PostgreSQL"),
])
def test_bad_targets_get_one_line(target, message, tmp_path):
    (tmp_path / "not-a-database.txt").write_text("hello\n")
    done = subprocess.run([sys.executable, "-m", "durus", "browse", target], cwd=tmp_path,
                          env=our_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_port_in_use_gets_one_line(tmp_path, browse):
    port = browse.base.rpartition(":")[2]
    Connection(FileStorage(str(tmp_path / "small.durus"))).storage.close()
    done = subprocess.run([sys.executable, "-m", "durus", "browse", "small.durus",
                           "--port", port], cwd=tmp_path, env=our_env(), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1
    assert "Address already in use" in done.stderr and "Traceback" not in done.stderr


def test_readme_example(tmp_path):
    commands = shell_commands("### durus browse")
    assert commands and all(command.startswith("durus browse ") for command in commands)
    for command in commands:
        args = shlex.split(command)[2:]
        connection = Connection(FileStorage(str(tmp_path / args[0])))
        connection.get_root()["greeting"] = "hello"
        connection.commit()
        connection.storage.close()
        browse = Browse(*args, cwd=tmp_path)
        try:
            status, body = fetch(browse.url, cookie_opener())
            assert status == 200 and "greeting" in body
        finally:
            assert browse.stop() == 0
