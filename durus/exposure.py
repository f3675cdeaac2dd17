"""How a server checks its clients, who can reach it, and the warning it
owes its operator when that is more than this machine and it lets anyone in."""

import ipaddress
import socket
import ssl
from logging import WARNING

from durus.logger import log


def requires_client_certificates(ssl_context: ssl.SSLContext | None) -> bool:
    return ssl_context is not None and ssl_context.verify_mode == ssl.CERT_REQUIRED


def describe_security(ssl_context: ssl.SSLContext | None, users: dict | None) -> str:
    """Say how clients are checked, for a server's 'Ready on' line."""
    parts = []
    if ssl_context is not None:
        parts.append("TLS" + (" with client certificates"
                              if requires_client_certificates(ssl_context) else ""))
    if users is not None:
        parts.append("%d users" % len(users))
    return " (%s)" % ", ".join(parts) if parts else ""


def warn_if_exposed(listener: socket.socket, address: str,
                    ssl_context: ssl.SSLContext | None, users: dict | None) -> None:
    """Log the exposure warning for a server listening on listener, if it needs one."""
    if is_loopback(listener):
        return
    warning = exposure_warning(address, ssl_context is not None,
                               users is not None or requires_client_certificates(ssl_context))
    if warning:
        log(WARNING, warning)


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
