"""The `sancho.utest` interface that Durus 4.3's unit tests are written against.

Instantiating a UTest subclass runs each of its public methods (names not
starting with "_", inherited ones included) in sorted order, each between
`_pre()` and `_post()`. Each method is judged alone, and its outcome is
appended to the file named by $DURUS_SUITE_RESULTS as a tab-separated line:
RUN id, then PASS id seconds or FAIL id message. Ids are Class.method, or
Class#2.method for a class's second instance. Ids listed in
$DURUS_SUITE_SKIP (one per line) are not run: that is how a run resumes
after its process died. $DURUS_SUITE_METHOD_TIMEOUT (seconds, default 120)
bounds each method.
"""

import io
import os
import signal
import sys
import time
import traceback

_instances: dict = {}


class MethodTimeout(Exception):
    """A test method ran past its deadline."""


def raises(exception: type, function, *args, **kwargs) -> BaseException:
    """Return the exception that function(*args, **kwargs) raises; fail if none."""
    try:
        function(*args, **kwargs)
    except exception as error:
        return error
    raise AssertionError("%s not raised by %s" % (
        exception.__name__, getattr(function, "__qualname__", function)))


def _record(*fields) -> None:
    with open(os.environ["DURUS_SUITE_RESULTS"], "a") as results:
        results.write("\t".join(str(field).replace("\n", " ") for field in fields) + "\n")


def _skipped() -> set:
    path = os.environ.get("DURUS_SUITE_SKIP")
    if not path:
        return set()
    with open(path) as skip:
        return {line.strip() for line in skip if line.strip()}


def _on_alarm(signum, frame):
    raise MethodTimeout("no result after %s s" % os.environ.get("DURUS_SUITE_METHOD_TIMEOUT", 120))


class UTest:
    """Base class of a group of tests: creating an instance runs them."""

    def __init__(self):
        name = type(self).__name__
        _instances[name] = _instances.get(name, 0) + 1
        if _instances[name] > 1:
            name += "#%d" % _instances[name]
        skip = _skipped()
        for method in sorted(n for n in dir(self) if not n.startswith("_")):
            if callable(getattr(self, method)):
                test_id = "%s.%s" % (name, method)
                if test_id not in skip:
                    self._run(test_id, method)

    def _run(self, test_id: str, method: str) -> None:
        _record("RUN", test_id)
        started = time.monotonic()
        captured = io.StringIO()
        saved_stdout, sys.stdout = sys.stdout, captured
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(int(os.environ.get("DURUS_SUITE_METHOD_TIMEOUT", 120)))
        failure = None
        try:
            try:
                self._pre()
                getattr(self, method)()
            finally:
                self._post()
        except BaseException as error:  # SystemExit and timeouts fail a test too
            failure = "%s: %s | %s" % (type(error).__name__, error,
                                       traceback.format_exc(limit=-3).strip())
        finally:
            signal.alarm(0)
            sys.stdout = saved_stdout
        if failure is None:
            _record("PASS", test_id, "%.2f" % (time.monotonic() - started))
        else:
            _record("FAIL", test_id, failure + (" | stdout: " + captured.getvalue()
                                                if captured.getvalue() else ""))

    def _pre(self) -> None:
        """Run before each test method."""

    def _post(self) -> None:
        """Run after each test method: forget what the method set on self."""
        for attribute in [n for n in vars(self) if not n.startswith("_")]:
            delattr(self, attribute)
