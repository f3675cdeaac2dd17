#!/usr/bin/env bash
# Run the tests that exercise the C accelerators under AddressSanitizer.
#
#   scripts/asan-test.sh [pytest arguments]     (default: the accelerator-heavy test files)
#
# The extensions are built with -fsanitize=address into a copy of the
# checkout (the package's own .so files stay as they are), and pytest runs
# there with the sanitizer's runtime preloaded into python and every process
# the tests start. PYTHONMALLOC=malloc hands Python's objects to the
# sanitizer's allocator, so that a use after free of an object is caught;
# leak checks are off (the interpreter keeps much alive until exit by design),
# and so is the memory-growth test (the sanitizer's quarantine keeps freed
# memory). Any report makes the run fail. It takes about 2 minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/durus-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$root" ls-files -z --cached --others --exclude-standard \
    | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"
CFLAGS="-fsanitize=address -fno-omit-frame-pointer -O1 -g" LDFLAGS="-fsanitize=address" \
    python3 setup.py -q build_ext --inplace >/dev/null
if [ $# -eq 0 ]; then
    set -- tests/test_accelerator.py tests/test_persistent.py tests/test_connection.py \
        tests/test_persistent_dict.py tests/test_persistent_list.py tests/test_persistent_set.py \
        tests/test_btree.py tests/test_position_index.py tests/test_file_storage.py \
        tests/test_shelf.py tests/test_failed_commit.py tests/test_interrupted_commit.py \
        tests/test_closed.py \
        --deselect tests/test_accelerator.py::test_load_and_ghost_loop_does_not_leak
fi
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export PYTHONMALLOC=malloc
python3 -c "import durus._persistent, durus._shelf, durus._btree, durus.persistent as p; \
assert p.PersistentBase.__module__ == 'durus._persistent'; print('ASan build of the accelerators')"
python3 -m pytest -q -p no:cacheprovider "$@"
