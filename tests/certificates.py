"""Certificates for TLS tests, made once per test session with the
`cryptography` package: a CA, a second CA nobody trusts, server
certificates (good, expired, for another name) and client certificates."""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass
class Identity:
    """A certificate and its key, as PEM files."""
    certfile: str
    keyfile: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, certificate, key) -> Identity:
    certfile, keyfile = directory / (stem + ".pem"), directory / (stem + ".key")
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return Identity(str(certfile), str(keyfile))


class Authority:
    """A certificate authority that writes the certificates it signs into directory."""

    def __init__(self, directory: Path, name: str):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = self._builder(_name(name), self.key.public_key(), now - _DAY, now + 30 * _DAY)
        self.certificate = (
            builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.identity = _write(directory, name.replace(" ", "-"), self.certificate, self.key)
        self.cafile = self.identity.certfile

    def _builder(self, subject, public_key, not_before, not_after) -> x509.CertificateBuilder:
        issuer = getattr(self, "certificate", None)
        return (x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer.subject if issuer else subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                               critical=False))

    def issue(self, stem: str, common_name: str, names=(), client: bool = False,
              expired: bool = False) -> Identity:
        """Sign a server certificate for names (host names and IP addresses),
        or a client certificate; expired ones ran out yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        valid = (now - 30 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (self._builder(_name(common_name), key.public_key(), *valid)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [_general_name(name) for name in names]), critical=False)
        return _write(self.directory, stem, builder.sign(self.key, hashes.SHA256()), key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass
class Certificates:
    ca: Authority
    other_ca: Authority
    server: Identity
    expired_server: Identity
    other_name_server: Identity
    client: Identity
    stranger_client: Identity


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> Certificates:
    directory = tmp_path_factory.mktemp("certificates")
    ca = Authority(directory, "Durus Test CA")
    other_ca = Authority(directory, "Other CA")
    return Certificates(
        ca=ca, other_ca=other_ca,
        server=ca.issue("server", "durus server", LOOPBACK_NAMES),
        expired_server=ca.issue("expired", "durus server", LOOPBACK_NAMES, expired=True),
        other_name_server=ca.issue("elsewhere", "elsewhere", ("db.example.com",)),
        client=ca.issue("client", "alice laptop", client=True),
        stranger_client=other_ca.issue("stranger", "stranger", client=True))
