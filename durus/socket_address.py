"""Where a storage server listens: TCP (IPv4 or IPv6), Unix-domain socket
paths, and Linux abstract sockets ('@name').

SocketAddress.new() turns what users pass as `address` into one of these.
durus.storage_server re-exports them under their Durus names.
"""

import errno
import grp
import os
import pwd
import socket
import stat
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2972

# Who may connect to a Unix-domain socket when no umask is given: the owner,
# and the group when one is given.
DEFAULT_SOCKET_MODE = 0o600
DEFAULT_GROUP_SOCKET_MODE = 0o660

# connect() errors that mean "no server is listening there (yet)".
_NOBODY_LISTENING = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)


class SocketAddress:
    """An address a server listens on and clients connect to."""

    family = socket.AF_INET

    @staticmethod
    def new(address: "SocketAddress | tuple[str, int] | str", **kwargs: Any) -> "SocketAddress":
        """Return a SocketAddress for address: a SocketAddress (returned as it
        is), a (host, port) tuple, '@name' for an abstract socket, or the path
        of a Unix-domain socket; kwargs (owner, group, umask) apply to paths."""
        if isinstance(address, SocketAddress):
            return address
        if isinstance(address, (tuple, list)):
            host, port = address
            return HostPortAddress(host=host, port=port)
        if isinstance(address, os.PathLike):
            address = os.fspath(address)
        if not isinstance(address, str) or not address:
            raise ValueError("a server address is a (host, port) tuple or a socket path, not %r"
                             % (address,))
        if address.startswith("@"):
            return UnixAbstractAddress(address)
        return UnixDomainSocketAddress(address, **kwargs)

    def get_address_family(self) -> int:
        return self.family

    def _sockaddr(self):
        """Return the address in the form socket.bind() and connect() take."""
        raise NotImplementedError

    def bind_socket(self, sock: socket.socket) -> None:
        sock.bind(self._sockaddr())

    def get_listening_socket(self) -> socket.socket:
        """Return a new socket bound to this address and listening."""
        sock = socket.socket(self.get_address_family(), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.bind_socket(sock)
            sock.listen(socket.SOMAXCONN)  # a burst of clients waits in the kernel
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self, timeout: float | None = None) -> socket.socket:
        """Return a socket connected to this address; raise OSError if that fails.
        timeout (seconds) applies to the connect and stays set on the socket."""
        sock = socket.socket(self.get_address_family(), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self._sockaddr())
        except BaseException:
            sock.close()
            raise
        self.set_connection_options(sock)
        return sock

    def get_connected_socket(self, timeout: float | None = None) -> socket.socket | None:
        """Return a connected socket, or None if no server listens at this address."""
        try:
            return self.connect(timeout)
        except OSError as exc:
            if exc.errno in _NOBODY_LISTENING:
                return None
            raise

    def set_connection_options(self, sock: socket.socket) -> None:
        """Tune a connected socket: small requests must not wait for Nagle's algorithm."""
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self, sock: socket.socket) -> None:
        """Close a listening socket made by get_listening_socket()."""
        sock.close()


class HostPortAddress(SocketAddress):
    """A TCP address; a host containing ':' is IPv6.

    Binding to port 0 picks a free port, which then replaces 0 in self.port.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.host = host
        self.port = port
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def _sockaddr(self):
        return (self.host, self.port)

    def bind_socket(self, sock: socket.socket) -> None:
        super().bind_socket(sock)
        self.port = sock.getsockname()[1]

    def __str__(self):
        return _format_host_port(self.host, self.port)


class UnixAbstractAddress(SocketAddress):
    """A Linux abstract socket, written '@name': it has no file to clean up."""

    family = socket.AF_UNIX  # grp and pwd, imported above, are Unix-only too

    def __init__(self, filename: str) -> None:
        self.filename = "\0" + filename[1:] if filename.startswith("@") else filename

    def _sockaddr(self):
        return self.filename

    def __str__(self):
        return self.filename.replace("\0", "@", 1)


class UnixDomainSocketAddress(UnixAbstractAddress):
    """A Unix-domain socket at a file path.

    owner and group (names or numeric ids) and umask set who may connect;
    without a umask the socket is made rw for its owner only (and its group,
    if group is given). A stale socket file left by a server that died is
    replaced, but nothing else at the path is ever removed.
    """

    def __init__(self, filename: str, owner: str | int | None = None, group: str | int | None = None, umask: int | None = None) -> None:
        self.filename = filename
        self.owner = owner
        self.group = group
        self.umask = umask
        self._bound_inode: int | None = None

    def __str__(self):
        try:
            info = os.stat(self.filename)
        except OSError:
            return self.filename
        return "%s (%s %s %s)" % (self.filename, stat.filemode(info.st_mode)[1:],
                                  _account_name(info.st_uid, pwd.getpwuid),
                                  _account_name(info.st_gid, grp.getgrgid))

    def bind_socket(self, sock: socket.socket) -> None:
        old_umask = None if self.umask is None else os.umask(self.umask)
        try:
            try:
                sock.bind(self.filename)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not self._remove_stale_socket():
                    raise
                sock.bind(self.filename)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if self.umask is None:
            # Nobody can connect before listen(), so there is no window in
            # which the socket file is more open than this.
            os.chmod(self.filename, DEFAULT_SOCKET_MODE if self.group is None
                     else DEFAULT_GROUP_SOCKET_MODE)
        if self.owner is not None or self.group is not None:
            os.chown(self.filename, _account_id(self.owner, pwd.getpwnam, "user"),
                     _account_id(self.group, grp.getgrnam, "group"))
        self._bound_inode = os.stat(self.filename).st_ino

    def _remove_stale_socket(self) -> bool:
        """Remove the socket file at our path if no server answers on it;
        return whether it was removed."""
        try:
            if not stat.S_ISSOCK(os.stat(self.filename).st_mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a socket", self.filename)
        except FileNotFoundError:
            return False
        connected = self.get_connected_socket(timeout=1.0)
        if connected is not None:
            connected.close()
            return False
        os.unlink(self.filename)
        return True

    def close(self, sock: socket.socket) -> None:
        sock.close()
        # Leave the path alone if another server has bound it since.
        try:
            if os.stat(self.filename).st_ino == self._bound_inode:
                os.unlink(self.filename)
        except FileNotFoundError:
            pass


class InheritedSocket(SocketAddress):
    """The address of a listening socket the server was handed (by systemd)."""

    def __init__(self, sock: socket.socket) -> None:
        self.name = sock.getsockname()
        self.family = sock.family

    def _sockaddr(self):
        return self.name

    def __str__(self):
        name = self.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if isinstance(name, str):
            return name.replace("\0", "@", 1)
        return _format_host_port(*name[:2])


def _format_host_port(host: str, port: int) -> str:
    return ("[%s]:%s" if ":" in host else "%s:%s") % (host, port)


def _account_name(number: int, lookup) -> str:
    """Return the name of a uid or gid (lookup is pwd.getpwuid or grp.getgrgid)."""
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def _account_id(value, lookup, kind: str) -> int:
    """Return the uid or gid for value (a name, a numeric string or an int;
    lookup is pwd.getpwnam or grp.getgrnam), or -1 (unchanged) for None."""
    if value is None:
        return -1
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return lookup(value)[2]
    except KeyError:
        raise ValueError("no such %s: %r" % (kind, value)) from None
