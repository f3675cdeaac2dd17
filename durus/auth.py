"""Authentication of storage-server clients: users, their secrets, and the
handshake that proves a client and the server share a secret without
sending it.

The handshake extends protocol 1 without changing it for anyone else. A
protocol-1 session may start with `V` + int4 1; a client that wants to
authenticate sends `V` + int4 2 instead, and then (integers big-endian):

    client                                          server
    V, int4 2                              ->
                                           <-  int4 2, server nonce (32 bytes)
    int1 n, user name (n bytes, UTF-8),
    client nonce (32), client proof (32)   ->
                                           <-  O, role (W | R), server proof (32)
                                           <-  or I, and it disconnects
    ... protocol 1 commands from here on ...

    client proof = HMAC-SHA256(secret, "durus-auth client\\0" + server nonce
                               + client nonce + user name)
    server proof = HMAC-SHA256(secret, "durus-auth server\\0" + server nonce
                               + client nonce + user name + role)

Both sides prove they know the secret, over nonces that neither chose
alone, so a recorded handshake cannot be replayed and a server that does not
know the secret cannot pass for the real one. Role W may do everything; R
(read-only) may load and sync, and the server drops it if it sends N, M, C,
P or Q.

A server that requires authentication answers `V` + int4 1 with int4 2 and
disconnects: Durus 4.3's ClientStorage reports "Protocol version mismatch."
and ours says the server requires authentication. Any other first request
is refused as well. A server that does not authenticate answers `V` + int4
2 with int4 1 and disconnects (as Durus 4.3's server does too), so a client
that was given a secret never falls back to an unauthenticated session.

Without TLS the handshake still keeps the secret secret, but the traffic
after it can be read and changed on the way: on a network, use both.
"""

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from hashlib import sha256
from logging import WARNING
from typing import Callable, Generator

from durus.error import ProtocolError
from durus.logger import log
from durus.utils import int4_to_str, str_to_int4

AUTH_PROTOCOL = int4_to_str(2)
NONCE_SIZE = 32
PROOF_SIZE = sha256().digest_size
DEFAULT_USER = "durus"
ROLES = {"read-write": b"W", "read-only": b"R"}
# Random tokens are the intended secrets: anything this short is a password.
MINIMUM_SECRET_LENGTH = 16

_ACCEPTED = b"O"
_REFUSED = b"I"
_CLIENT = b"durus-auth client\0"
_SERVER = b"durus-auth server\0"


class AuthenticationError(ProtocolError):
    """The client and the server did not authenticate each other."""


class AuthenticationFailed(Exception):
    """Raised by server_handshake(): the client is refused, for the reason given."""


@dataclass(frozen=True)
class User:
    """A user the server accepts: name (str), secret (bytes), read_only (bool)."""
    name: str
    secret: bytes
    read_only: bool = False

    def __repr__(self):  # never show the secret, e.g. in a traceback
        return "User(%r, read_only=%r)" % (self.name, self.read_only)


def parse_users(text: str, source: str) -> dict:
    """Return {name: User} from users-file text: one user a line, as
    `name role secret` (role read-write or read-only), '#' starting a
    comment line. source names the text in error messages, which never
    quote a line (it holds a secret)."""
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = "%s, line %d" % (source, number)
        if len(fields) != 3:
            raise ValueError("%s: expected 'name role secret'" % where)
        name, role, secret = fields
        if role not in ROLES:
            raise ValueError("%s: the role must be one of %s" % (where, ", ".join(ROLES)))
        if name in users:
            raise ValueError("%s: user %r appears twice" % (where, name))
        users[name] = User(_check_name(name), _check_secret(secret, where), role == "read-only")
    if not users:
        raise ValueError("%s names no users" % source)
    return users


def read_users(path: str) -> dict:
    """Return {name: User} from the users file at path (see parse_users)."""
    _warn_if_readable_by_others(path)
    with open(path, encoding="utf-8") as f:
        return parse_users(f.read(), path)


def read_secret(path: str | None = None, environment_variable: str = "DURUS_SECRET"
                ) -> bytes | None:
    """Return the secret in the file at path, or else in the environment
    variable (None if neither is given); surrounding whitespace is dropped."""
    if path is not None:
        _warn_if_readable_by_others(path)
        with open(path, "rb") as f:
            return _check_secret(f.read().strip(), path)
    value = os.environ.get(environment_variable)
    if value is None:
        return None
    return _check_secret(value.strip().encode(), "$" + environment_variable)


def _check_name(name: str) -> str:
    if not 0 < len(name.encode("utf-8")) < 256:
        raise ValueError("a user name is 1 to 255 bytes long, not %r" % name)
    return name


def _check_secret(secret, where: str) -> bytes:
    secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(secret) < MINIMUM_SECRET_LENGTH:
        raise ValueError("%s: a secret must be at least %d characters; make one with "
                         "`openssl rand -base64 32`" % (where, MINIMUM_SECRET_LENGTH))
    return secret


def _warn_if_readable_by_others(path: str) -> None:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log(WARNING, "%s holds secrets but is %s: `chmod 600 %s`",
            path, stat.filemode(mode), path)


def _proof(secret: bytes, side: bytes, server_nonce: bytes, client_nonce: bytes,
           rest: bytes) -> bytes:
    return hmac.new(secret, side + server_nonce + client_nonce + rest, sha256).digest()


# A secret no user has, so that an unknown name costs as much time as a wrong secret.
_NOBODY = secrets.token_bytes(32)


def server_handshake(users: dict, send: Callable[[bytes], None], command: bytes) -> Generator[int, bytes, User]:
    """The server's side of the handshake, from the client's first command
    byte on, as a generator that yields how many bytes it needs next and is
    sent them; send(bytes) queues a reply. Returns the User; raises
    AuthenticationFailed (after queueing the reply the client needs to
    report it) if the client is refused."""
    if command != b"V":
        raise AuthenticationFailed(
            "sent %r before authenticating; this server requires authentication" % command)
    version = yield 4
    if version != AUTH_PROTOCOL:
        send(AUTH_PROTOCOL)
        raise AuthenticationFailed(
            "protocol %d client refused: this server requires authentication (protocol %d)"
            % (str_to_int4(version), str_to_int4(AUTH_PROTOCOL)))
    server_nonce = secrets.token_bytes(NONCE_SIZE)
    send(AUTH_PROTOCOL + server_nonce)
    size = (yield 1)[0]
    hello = yield size + NONCE_SIZE + PROOF_SIZE
    name, client_nonce, proof = (hello[:size], hello[size:size + NONCE_SIZE],
                                 hello[size + NONCE_SIZE:])
    try:
        user = users.get(name.decode("utf-8"))
    except UnicodeDecodeError:
        user = None
    expected = _proof(user.secret if user else _NOBODY, _CLIENT, server_nonce, client_nonce,
                      name)
    if not hmac.compare_digest(proof, expected) or user is None:
        send(_REFUSED)
        raise AuthenticationFailed("authentication failed for user %r: %s" % (
            name.decode("utf-8", "replace"), "no such user" if user is None else "wrong secret"))
    role = ROLES["read-only" if user.read_only else "read-write"]
    send(_ACCEPTED + role + _proof(user.secret, _SERVER, server_nonce, client_nonce,
                                   name + role))
    return user


def client_handshake(send: Callable[[bytes], None], receive: Callable[[int], bytes], user: str, secret: bytes, server: str) -> bool:
    """Authenticate as user with secret to server (a description for
    messages), through send(bytes) and receive(n) -> bytes on a fresh
    connection. Return whether the user is read-only; raise
    AuthenticationError if either side is not who it claims."""
    name = _check_name(user).encode("utf-8")
    send(b"V" + AUTH_PROTOCOL)
    version = receive(4)
    if version != AUTH_PROTOCOL:
        raise AuthenticationError(
            "the server at %s does not authenticate clients (it answered protocol %d): "
            "connecting without authentication was not asked for" % (server, str_to_int4(version)))
    server_nonce = receive(NONCE_SIZE)
    client_nonce = secrets.token_bytes(NONCE_SIZE)
    send(bytes([len(name)]) + name + client_nonce
         + _proof(secret, _CLIENT, server_nonce, client_nonce, name))
    if receive(1) != _ACCEPTED:
        raise AuthenticationError("the server at %s refused user %r: wrong user name or secret"
                                  % (server, user))
    role = receive(1)
    proof = receive(PROOF_SIZE)
    if not hmac.compare_digest(proof, _proof(secret, _SERVER, server_nonce, client_nonce,
                                             name + role)):
        raise AuthenticationError("the server at %s did not prove that it knows the secret of "
                                  "user %r: it is not the server it claims to be" % (server, user))
    return role == ROLES["read-only"]
