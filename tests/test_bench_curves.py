"""bench/curves.py, run for real at a tiny scale: its JSON has each system's
series and its PNG is drawn."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ["this (C)", "durus 4.3", "this SQLite", "this PostgreSQL"]
SIZE_MEASURES = {"open_ms", "open_packed_ms", "cold_read", "peak_mb", "bytes_per_object",
                 "commits", "pack_s"}


def test_curves_quick_run(tmp_path, peer_python):
    env = {k: v for k, v in os.environ.items() if k != "DURUS_PURE_PYTHON"}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([sys.executable, str(ROOT / "bench" / "curves.py"), "--quick",
                    "--sizes", "200,400", "--clients", "1,2", "--commits", "40",
                    "--only", ",".join(SYSTEMS), "--peer", peer_python,
                    "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "curves.json"),
                    "--png", str(tmp_path / "curves.png")],
                   check=True, env=env, cwd=tmp_path, capture_output=True, timeout=600)
    results = json.loads((tmp_path / "curves.json").read_text())
    assert results["sizes"] == [200, 400] and results["clients"] == [1, 2]
    assert list(results["systems"]) == SYSTEMS
    for name, measures in results["systems"].items():
        assert set(measures) == SIZE_MEASURES | {"tps"}, name
        for measure, values in measures.items():
            assert set(values) == ({"1", "2"} if measure == "tps" else {"200", "400"})
            assert all(value >= 0 for value in values.values())
        assert all(value > 0 for value in measures["cold_read"].values())
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
