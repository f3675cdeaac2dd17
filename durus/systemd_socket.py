"""Take over a listening socket passed by systemd socket activation.

systemd hands activated sockets over as file descriptors 3, 4, ... and says
so in LISTEN_PID and LISTEN_FDS (see sd_listen_fds(3)).
"""

import os
import socket

SD_LISTEN_FDS_START = 3


def sd_listen_fds() -> int:
    """Return how many sockets systemd passed to this process (0 if none)."""
    try:
        if int(os.environ["LISTEN_PID"]) != os.getpid():
            return 0
    except (KeyError, ValueError):
        return 0
    try:
        count = int(os.environ["LISTEN_FDS"])
    except (KeyError, ValueError):
        raise OSError("LISTEN_FDS is missing or not a number") from None
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
    return count


def get_systemd_socket() -> socket.socket | None:
    """Return the one socket systemd passed, or None; more than one is an error."""
    count = sd_listen_fds()
    if count == 0:
        return None
    if count > 1:
        raise OSError("systemd passed %d sockets; a Durus server uses only one" % count)
    # socket.socket(fileno=...) finds the family and type of the descriptor itself.
    return socket.socket(fileno=SD_LISTEN_FDS_START)
