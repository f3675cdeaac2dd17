"""Memory over a long load/ghost loop: RSS must stay flat.

Usage: python bench/leak_check.py [ITERATIONS]   (default 1,000,000 loads)
Prints the resident set size every tenth of the way, and the growth after
the first tenth (warm-up), for the C accelerator or, with
DURUS_PURE_PYTHON=1, pure Python.
"""

import sys

from durus.connection import Connection
from durus.persistent import Persistent, PersistentBase
from durus.storage import MemoryStorage


class Node(Persistent):
    def __init__(self, n):
        self.n = n
        self.payload = [n] * 4


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    connection = Connection(MemoryStorage())
    nodes = connection.get_root()["nodes"] = [Node(i) for i in range(1000)]
    connection.commit()
    step = iterations // 10
    samples = []
    done = 0
    while done < iterations:
        for node in nodes:
            node._p_set_status_ghost()
            node.n  # loads it again
        done += len(nodes)
        connection.abort()
        if done % step < len(nodes):
            samples.append(rss_kib())
            print("%9d loads  RSS %6d KiB" % (done, samples[-1]))
    print("%s: RSS grew %d KiB after the first tenth"
          % (PersistentBase.__module__, samples[-1] - samples[0]))


if __name__ == "__main__":
    main()
