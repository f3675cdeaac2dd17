"""Increment shared counters through a storage server, retrying on conflicts.

Run as a script by the tests, under this project's durus or Durus 4.3's:
    counter_worker.py HOST PORT INCREMENTS SEED
It prints a JSON object: how many times it incremented each counter, and how
many conflicts it retried.
"""

import json
import random
import sys

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError

COUNTERS = ["c%d" % i for i in range(4)]


def run(host: str, port: int, increments: int, seed: int) -> dict:
    connection = Connection(ClientStorage(host=host, port=port))
    rng = random.Random(seed)
    done = dict.fromkeys(COUNTERS, 0)
    conflicts = 0
    for _ in range(increments):
        names = rng.sample(COUNTERS, 2)
        while True:
            try:
                root = connection.get_root()
                for name in names:
                    root[name]["n"] += 1
                connection.commit()
                break
            except ConflictError:
                conflicts += 1
                connection.abort()
        for name in names:
            done[name] += 1
    connection.get_storage().close()
    return {"done": done, "conflicts": conflicts}


if __name__ == "__main__":
    host, port, increments, seed = sys.argv[1:]
    print(json.dumps(run(host, int(port), int(increments), int(seed))))
