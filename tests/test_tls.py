"""TLS between ClientStorage and our server over loopback: verified server
certificates, client certificates (mutual TLS), refusals with a clear error
on both sides, and large transfers through the server's non-blocking loop."""

import os
import ssl

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.persistent_dict import PersistentDict
from durus.tls import client_context

from server_processes import connect


def tls_server(servers, identity, *args):
    return servers.ours("--certfile", identity.certfile, "--keyfile", identity.keyfile, *args)


def test_tls_round_trip_with_large_commits_and_bulk_loads(servers, certificates):
    server = tls_server(servers, certificates.server, "--logginglevel", "10")
    assert "(TLS)" in server.log_text()
    writer = connect(server, cafile=certificates.ca.cafile)
    root = writer.get_root()
    # Megabytes each way, so that sends and receives stop part way
    # (SSLWantWrite/SSLWantRead) and TLS records arrive in pieces.
    big = os.urandom(3 << 20)
    root["big"] = PersistentDict(data=big)
    root["items"] = [PersistentDict(n=i, pad="x" * 500) for i in range(3000)]
    writer.commit()
    reader = ClientStorage(address=server.address, cafile=certificates.ca.cafile)
    assert Connection(reader).get_root()["big"]["data"] == big
    oids = [item._p_oid for item in root["items"]]
    records = list(reader.bulk_load(oids))
    assert [record[:8] for record in records] == oids
    assert records == [reader.load(oid) for oid in oids]
    server.wait_for_log(r"TLS TLSv1\.3")
    older = client_context(certificates.ca.cafile)
    older.maximum_version = ssl.TLSVersion.TLSv1_2
    reader = ClientStorage(address=server.address, ssl_context=older)
    assert reader.s.version() == "TLSv1.2"
    assert list(reader.bulk_load(oids)) == records


def test_client_without_tls_is_refused_with_reasons_on_both_sides(servers, certificates):
    server = tls_server(servers, certificates.server, "--logginglevel", "10")
    with pytest.raises(ConnectionError, match="closed the connection"):
        ClientStorage(address=server.address, timeout=10)
    server.wait_for_log(r"TLS handshake failed: .*the client does not seem to use TLS")


@pytest.mark.parametrize("identity, trusted, expected", [
    ("server", "other_ca", "certificate verify failed: unable to get local issuer certificate"),
    ("expired_server", "ca", "certificate verify failed: certificate has expired"),
    ("other_name_server", "ca", "certificate verify failed: IP address mismatch"),
])
def test_client_refuses_a_server_it_cannot_verify(servers, certificates, identity, trusted,
                                                  expected):
    server = tls_server(servers, getattr(certificates, identity))
    cafile = getattr(certificates, trusted).cafile
    with pytest.raises(ConnectionError, match="TLS handshake failed: " + expected):
        ClientStorage(address=server.address, cafile=cafile)
    server.wait_for_log(r"TLS handshake failed: .*(UNKNOWN_CA|CERTIFICATE_EXPIRED|BAD_CERTIFICATE)")
    # The refused handshake cost the server nothing: it serves the next client.
    if identity == "server":
        ClientStorage(address=server.address, cafile=certificates.ca.cafile).close()


def test_the_server_name_is_checked_against_the_address(servers, certificates):
    server = tls_server(servers, certificates.server)
    storage = ClientStorage(address=("localhost", server.address[1]),
                            cafile=certificates.ca.cafile)
    assert storage.s.getpeercert()["subject"] == ((("commonName", "durus server"),),)
    storage.close()
    with pytest.raises(ConnectionError, match="Hostname mismatch"):
        ClientStorage(address=server.address, cafile=certificates.ca.cafile,
                      server_hostname="db.example.com")


def test_mutual_tls_requires_a_client_certificate_from_the_trusted_ca(servers, certificates):
    server = tls_server(servers, certificates.server, "--client-cafile", certificates.ca.cafile)
    assert "(TLS with client certificates)" in server.log_text()
    good = certificates.client
    connection = connect(server, cafile=certificates.ca.cafile, certfile=good.certfile,
                         keyfile=good.keyfile)
    connection.get_root()["mutual"] = True
    connection.commit()
    # With TLS 1.3 the client finishes its handshake before the server has
    # checked its certificate: it learns of the refusal at its first read,
    # from the server's alert or, if that was lost as the server closed, from
    # the closed connection.
    refused = "(?i)%s|does it require a client certificate \\(certfile\\) from a CA it trusts"
    with pytest.raises(ConnectionError, match=refused % "certificate required"):
        ClientStorage(address=server.address, cafile=certificates.ca.cafile)
    server.wait_for_log("TLS handshake failed: .*peer did not return a certificate")
    stranger = certificates.stranger_client
    with pytest.raises(ConnectionError, match=refused % "unknown ca"):
        ClientStorage(address=server.address, cafile=certificates.ca.cafile,
                      certfile=stranger.certfile, keyfile=stranger.keyfile)
    server.wait_for_log("TLS handshake failed: certificate verify failed: "
                        "unable to get local issuer certificate")
    connection.abort()
    assert connection.get_root()["mutual"] is True
