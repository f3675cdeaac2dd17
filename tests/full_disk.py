"""A file system that really fills up: the disk fixture (through
pytest_plugins in conftest) mounts a small tmpfs, which needs root."""

import errno
import os
import subprocess

import pytest


class Disk:
    """A small file system of our own, mounted on directory."""

    def __init__(self, directory):
        self.directory = directory
        self.filler = directory / "filler"

    def fill(self) -> None:
        """Take every free byte."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            chunk = 1 << 16
            while chunk:
                try:
                    os.write(fd, bytes(chunk))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    chunk //= 2
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def disk(tmp_path):
    """A Disk of 3 MB (a tmpfs) in tmp_path; skips the test unless root can mount it."""
    directory = tmp_path / "disk"
    directory.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(directory)],
            capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root; injected errors are tested instead")
    try:
        yield Disk(directory)
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)
