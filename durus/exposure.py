"""Who can reach a listening server, and the warning a server owes its
operator when that is more than this machine and it lets anyone in."""

import ipaddress
import socket


def is_loopback(sock: socket.socket) -> bool:
    """Tell whether a listening sock is reachable from this machine only:
    a loopback TCP address, or a Unix-domain socket."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True
    host = sock.getsockname()[0]
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def exposure_warning(address: str, encrypted: bool, authenticated: bool) -> str | None:
    """Return the warning for a server listening at a non-loopback address
    with (or without) TLS and client authentication, or None if it is safe."""
    if encrypted and authenticated:
        return None
    if authenticated:
        risk = ("its traffic is not encrypted (no TLS): anyone on the network path can read "
                "the data and take over sessions")
    elif encrypted:
        risk = ("it does not authenticate clients: anyone who can connect can read and "
                "change the whole database")
    else:
        risk = ("it neither encrypts (TLS) nor authenticates: anyone who can connect can "
                "read and change the whole database, and its clients run whatever the "
                "server sends them")
    return ("*** SECURITY WARNING: the Durus server listens on %s, beyond this machine, and %s. "
            "Use TLS (--certfile/--keyfile) and users (--users-file), or listen on "
            "127.0.0.1 or a Unix socket. ***" % (address, risk))
