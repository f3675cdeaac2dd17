"""TLS for storage-server connections, with the standard library's ssl.

The server wraps each accepted socket and runs the handshake a step at a
time inside its event loop (continue_handshake); the client wraps its
blocking socket (start_tls) and verifies the server's certificate and name
against a CA file, or the system's CAs.

Non-blocking TLS has two traps that these helpers cover: a read or write
may need the other direction first (SSLWantReadError/SSLWantWriteError,
which are not BlockingIOError), and the ssl object may hold decrypted bytes
that select() cannot see (read_pending drains them).
"""

import re
import selectors
import socket
import ssl

# What a non-blocking send() or recv() raises when it must be tried again later.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

_MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# OpenSSL's reasons for failing on bytes that are no TLS record.
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
            "PACKET_LENGTH_TOO_LONG"}


def server_context(certfile: str, keyfile: str | None = None,
                   client_cafile: str | None = None) -> ssl.SSLContext:
    """Return a server context presenting certfile (PEM, with its key in
    keyfile or in certfile itself). With client_cafile, clients must present
    a certificate signed by a CA in that file (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MINIMUM_VERSION
    context.load_cert_chain(certfile, keyfile)
    if client_cafile is not None:
        context.load_verify_locations(cafile=client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    # The protocol frames its own messages, so a connection cut without a
    # TLS close_notify is an ordinary disconnect, noticed as one.
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    # A TLS 1.2 renegotiation would make a send wait for a read: refuse it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def client_context(cafile: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None) -> ssl.SSLContext:
    """Return a client context that verifies the server's certificate and
    name against cafile (PEM; None: the system's CAs), presenting certfile
    (and keyfile) when the server asks for a client certificate."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = _MINIMUM_VERSION
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


def start_tls(sock: socket.socket, context: ssl.SSLContext,
              server_hostname: str | None) -> ssl.SSLSocket:
    """Return sock wrapped by context after a (blocking) handshake; raise
    ConnectionError saying why the handshake failed. sock is closed then."""
    try:
        return context.wrap_socket(sock, server_hostname=server_hostname)
    except OSError as exc:
        sock.close()
        raise ConnectionError("TLS handshake failed: %s"
                              % describe_error(exc, "the server")) from exc
    except BaseException:
        sock.close()
        raise


def accept_tls(sock: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Return an accepted non-blocking sock wrapped for a server-side handshake
    that continue_handshake() drives."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def continue_handshake(sock: ssl.SSLSocket) -> int:
    """Take the server-side handshake as far as it goes now. Return the
    selectors events to wait for before calling again, or 0 once it is done;
    raise OSError if it failed."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    return 0


def read_pending(sock: socket.socket) -> bytes:
    """Return the decrypted bytes an SSL socket holds beyond what recv()
    returned (b'' for a plain socket), so that none hide from select()."""
    pending = getattr(sock, "pending", None)
    chunks = []
    while pending is not None and pending():
        try:
            chunks.append(sock.recv(pending()))
        except WOULD_BLOCK:
            break
    return b"".join(chunks)


def is_disconnect(exc: BaseException) -> bool:
    """Tell whether a handshake failed only because the peer went away
    (e.g. a probe that connects and closes), rather than a TLS problem."""
    return isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                            BrokenPipeError))


def describe_error(exc: BaseException, peer: str) -> str:
    """Say why a TLS operation with peer ('the server', 'the client') failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate verify failed: %s" % (exc.verify_message or exc.reason)
    if is_disconnect(exc):
        return "%s closed the connection (does it use TLS?)" % peer
    # e.g. "[SSL: UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:1006)", less the C location
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", getattr(exc, "strerror", None) or str(exc))
    if getattr(exc, "reason", None) in _NOT_TLS:
        return "%s (%s does not seem to use TLS)" % (text, peer)
    return text


def describe_session(sock: ssl.SSLSocket) -> str:
    """Say which TLS version and cipher sock uses, and whose certificate it got."""
    cipher = sock.cipher()
    text = "%s %s" % (sock.version(), cipher[0] if cipher else "")
    peer = sock.getpeercert()
    if peer:
        subject = dict(item for rdn in peer.get("subject", ()) for item in rdn
                       if isinstance(item, tuple))
        text += ", certificate of %s" % subject.get("commonName", "?")
    return text
