"""The PNG of bench/curves.py's results: one panel per measure, the size (or
the number of clients) on a log-scaled x axis, one line per system.

Usage: python bench/curves_plot.py RESULTS.json PLOT.png (redraws a run's plot)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen: draw to a file
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

# (measure, panel title, log-scaled y); every measure but tps is per size.
PANELS = [
    ("open_ms", "open, unpacked (ms)", True),
    ("open_packed_ms", "open, packed (ms)", True),
    ("peak_mb", "peak RSS, all objects read (MB)", True),
    ("bytes_per_object", "memory per cached object (bytes)", False),
    ("cold_read", "cold read (objects/s)", True),
    ("commits", "small commits (transactions/s)", True),
    ("pack_s", "pack (s)", True),
    ("tps", "K clients committing at once (transactions/s)", True),
]


def series(values: dict) -> tuple:
    """([x], [y]) of one system's {x: value} measure, x ascending, gaps left out."""
    points = sorted((int(x), y) for x, y in values.items() if y is not None)
    return tuple(zip(*points)) or ((), ())


def short(x: int) -> str:
    """10000 as 10k, 1000000 as 1M."""
    for size, suffix in ((1_000_000, "M"), (1000, "k")):
        if x >= size and x % size == 0:
            return "%d%s" % (x // size, suffix)
    return str(x)


def plot(results: dict, path: str) -> None:
    """Draw results ({"systems": {name: {measure: {x: value}}}}) to a PNG at path."""
    figure, axes = plt.subplots(2, 4, figsize=(20, 9))
    lines = {}
    for ax, (measure, title, log_y) in zip(axes.flat, PANELS):
        for index, (name, measures) in enumerate(results["systems"].items()):
            xs, ys = series(measures.get(measure, {}))
            if xs:
                lines[name] = ax.plot(xs, ys, marker="o", color="C%d" % index, label=name)[0]
        ax.set_xscale("log", base=2 if measure == "tps" else 10)
        ticks = results["clients" if measure == "tps" else "sizes"]
        ax.set_xticks(ticks, [short(x) for x in ticks])
        ax.minorticks_off()
        if log_y:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("client processes" if measure == "tps" else "objects in the database")
        ax.grid(True, which="both", alpha=0.3)
    names = [name for name in results["systems"] if name in lines]
    figure.legend([lines[name] for name in names], names, loc="lower center", ncol=len(names))
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
