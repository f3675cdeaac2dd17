"""What the tools take as TARGET: a storage file of any format, a
postgresql:// URI, or durus://HOST:PORT (a running server, as a client)."""
from typing import TYPE_CHECKING

from durus.storage import Storage

if TYPE_CHECKING:
    from durus.socket_address import SocketAddress

SERVER_SCHEME = "durus://"


def open_target(target: str, readonly: bool = True) -> Storage:
    """Open the storage target names; readonly unless told otherwise (a
    server is reached as a client, which never commits unless asked to)."""
    if target.startswith(SERVER_SCHEME):
        from durus.client_storage import ClientStorage
        return ClientStorage(address=server_address(target))
    from durus.__main__ import get_storage
    return get_storage(target, readonly=readonly)


def server_address(target: str) -> "SocketAddress":
    """Return the SocketAddress of a durus://HOST:PORT target (or
    durus:///PATH for a Unix-domain socket)."""
    from durus.socket_address import SocketAddress
    rest = target[len(SERVER_SCHEME):]
    if rest.startswith("/"):
        return SocketAddress.new(rest)
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError("%r is not durus://HOST:PORT or durus:///socket-path" % target)
    return SocketAddress.new((host.strip("[]"), int(port)))
