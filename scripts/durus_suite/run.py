"""Run Durus 4.3's own unit tests (test/utest_*.py of its sdist) against this package.

    python3 scripts/durus_suite/run.py [--python PYTHON] [--only utest_x ...]

The sdist is fetched once with pip into .cache/durus-4.3 (beside this
repository's root). Each utest file runs alone, in a new temporary
directory, with this repository and the `sancho` shim beside this script
first on PYTHONPATH, in its own process group, which is killed when the file
ends (so no server it started outlives it). The expected tests are read from
each file's source (the classes it instantiates when run as a script), so a
file that dies at import still counts all its tests, as failed.

Tests listed in exceptions.txt (beside this script) are reported apart. The
last line is always "durus-suite: N passed, M failed" (excepted tests not
counted in M); the exit status is 0 only when every failure is excepted and
at least --minimum tests passed.
"""

import argparse
import ast
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache"
VERSION = "4.3"
SOURCE = CACHE / ("durus-" + VERSION)
# A file that dies is run again past the test it died in, at most this often.
RESUMES = 3


def fetch_sdist(python: str) -> Path:
    """Return the folder of the durus==4.3 sdist's tests, downloading it first if needed."""
    tests = SOURCE / "test"
    if (SOURCE / "PKG-INFO").is_file() and "Version: %s\n" % VERSION in (SOURCE / "PKG-INFO").read_text():
        return tests
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as download:
        subprocess.run([python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--no-binary", "durus", "durus==" + VERSION, "-d", download],
                       check=True, stdout=sys.stderr)
        [tarball] = Path(download).glob("*.tar.gz")
        with tarfile.open(tarball) as archive:
            archive.extractall(download, filter="data")
        [top] = [p for p in Path(download).iterdir() if p.is_dir()]
        shutil.rmtree(SOURCE, ignore_errors=True)
        top.rename(SOURCE)
    return tests


def expected_tests(path: Path) -> list:
    """Test ids the file runs as a script: its public methods, per class instance made under __main__."""
    tree = ast.parse(path.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def methods(name: str) -> set:
        node = classes.get(name)
        if node is None:
            return set()
        found = {f.name for f in node.body
                 if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
        for base in node.bases:
            if isinstance(base, ast.Name):
                found |= methods(base.id)
        return found

    ids, made = [], {}
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) \
                        and call.func.id in classes:
                    name = call.func.id
                    made[name] = made.get(name, 0) + 1
                    label = name if made[name] == 1 else "%s#%d" % (name, made[name])
                    ids.extend("%s.%s" % (label, m) for m in sorted(methods(name)))
    return ids


def read_exceptions() -> dict:
    """{(file, test id): reason} from exceptions.txt."""
    excepted = {}
    for line in (HERE / "exceptions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            file, test_id, reason = line.split(None, 2)
            excepted[file, test_id] = reason
    return excepted


def run_file(python: str, path: Path, timeout: float, method_timeout: float) -> dict:
    """Run one utest file; return {test id: (passed, detail)} for the tests that got a result."""
    outcome: dict = {}
    with tempfile.TemporaryDirectory(prefix="durus-suite.") as work:
        results, skip = Path(work, "results"), Path(work, "skip")
        results.touch()
        env = dict(os.environ, DURUS_SUITE_RESULTS=str(results), DURUS_SUITE_SKIP=str(skip),
                   DURUS_SUITE_METHOD_TIMEOUT=str(int(method_timeout)), TMPDIR=work,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), str(ROOT),
                                                            os.environ.get("PYTHONPATH")])))
        shutil.copy(path, work)
        for attempt in range(1 + RESUMES):
            skip.write_text("".join(test_id + "\n" for test_id in outcome))
            status, output = _run_process([python, path.name], work, env, timeout)
            running = None
            for line in results.read_text().splitlines():
                kind, test_id, *detail = line.split("\t") + [""]
                if kind == "RUN":
                    running = test_id
                else:
                    outcome[test_id] = (kind == "PASS", detail[0])
                    running = None
            if running is not None:  # the process died inside a test
                outcome[running] = (False, "the test process ended (%s) inside it" % status)
                continue
            if status != 0 and not outcome:
                outcome[None] = (False, "%s: %s" % (status, output.strip().splitlines()[-1:]))
            break
    return outcome


def _run_process(argv: list, cwd: str, env: dict, timeout: float) -> tuple:
    """Run argv in its own process group, killed when done; return (status text, output)."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        status = "exit status %d" % process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = "killed after %d s" % timeout
    try:
        os.killpg(process.pid, signal.SIGKILL)  # servers the tests started
    except ProcessLookupError:
        pass
    return (status if process.returncode != 0 or "killed" in status else "exit status 0"), output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the tests")
    parser.add_argument("--only", nargs="*", help="utest file names to run (default: all)")
    parser.add_argument("--minimum", type=int, default=221, help="tests that must pass")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per file")
    parser.add_argument("--method-timeout", type=float, default=120, help="seconds per test")
    options = parser.parse_args()
    tests = fetch_sdist(options.python)
    excepted = read_exceptions()
    passed, failures, excepted_results = 0, [], []
    started = time.monotonic()
    for path in sorted(tests.glob("utest_*.py")):
        if options.only and path.stem not in options.only and path.name not in options.only:
            continue
        file_started = time.monotonic()
        outcome = run_file(options.python, path, options.timeout, options.method_timeout)
        file_passed = file_failed = 0
        for test_id in expected_tests(path):
            ok, detail = outcome.get(test_id) or (False, "not run: %s" % (
                outcome.get(None, (False, "no result"))[1]))
            if (path.name, test_id) in excepted:
                excepted_results.append((path.name, test_id, ok, excepted[path.name, test_id]))
            elif ok:
                file_passed += 1
            else:
                file_failed += 1
                failures.append((path.name, test_id, detail))
        passed += file_passed
        print("%-26s %3d passed %3d failed %6.1fs" % (
            path.name, file_passed, file_failed, time.monotonic() - file_started), flush=True)
    for file, test_id, detail in failures:
        print("FAILED %s %s: %s" % (file, test_id, detail[:600]))
    for file, test_id, ok, reason in excepted_results:
        print("excepted %s %s (%s): %s" % (file, test_id, "passes now" if ok else "fails", reason))
    print("(%.0f s)" % (time.monotonic() - started))
    print("durus-suite: %d passed, %d failed" % (passed, len(failures)))
    return 0 if not failures and (options.only or passed >= options.minimum) else 1


if __name__ == "__main__":
    sys.exit(main())
