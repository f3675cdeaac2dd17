"""PostgresStorage's own side (durus.relational's shared behaviour is in
test_relational.py, the storage contract in test_storage_contract.py), on a
real PostgreSQL cluster the tests start: clear errors that name the server
but never the password, passwords from PGPASSWORD and ~/.pgpass, and a
server restart under load that loses nothing."""

import time

import pytest

import bank
from certificates import Authority
from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.postgres_storage import PostgresStorage, public_dsn

from postgres_cluster import PASSWORD, USER


def test_errors_name_the_server_and_database_but_never_the_password(postgres, postgres_dsn):
    cases = {postgres.dsn("nowhere"): 'database "nowhere" does not exist',
             postgres.dsn("postgres", password="wrong-pw"): "password authentication failed",
             "postgresql://%s:%s@127.0.0.1:1/x?connect_timeout=2" % (USER, PASSWORD):
                 "port 1, database x"}
    for dsn, expected in cases.items():
        with pytest.raises(ConnectionError) as caught:
            PostgresStorage(dsn)
        message = str(caught.value)
        assert expected in message and "127.0.0.1" in message
        assert PASSWORD not in message and "wrong-pw" not in message
    storage = PostgresStorage(postgres_dsn)
    assert PASSWORD not in str(storage) and PASSWORD not in storage.get_filename()
    storage.close()
    for bad in ("host=x password=%s = =" % PASSWORD, postgres_dsn + "?connect_timeout=abc"):
        with pytest.raises(ValueError, match="PostgreSQL connection string") as caught:
            PostgresStorage(bad)
        assert PASSWORD not in str(caught.value)


def test_public_dsn_drops_the_password_from_strings_and_uris():
    assert public_dsn("postgresql://u:pw@h:5/d?sslmode=require") == (
        "user=u dbname=d host=h port=5 sslmode=require")
    assert public_dsn("host=h password='a b' dbname=d") == "dbname=d host=h"


def test_the_password_may_come_from_pgpassword_or_pgpass(postgres, postgres_dsn, tmp_path,
                                                        monkeypatch):
    without = postgres_dsn.replace(":%s@" % PASSWORD, "@")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    PostgresStorage(without).close()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("127.0.0.1:%d:*:%s:%s\n" % (postgres.port, USER, PASSWORD))
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    PostgresStorage(without).close()
    monkeypatch.delenv("PGPASSFILE")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass there
    with pytest.raises(ConnectionError, match="password"):
        PostgresStorage(without)


def test_after_a_restart_one_operation_fails_clearly_and_the_next_reconnects(
        postgres, postgres_dsn):
    connection = Connection(PostgresStorage(postgres_dsn))
    connection.get_root()["x"] = PersistentDict(n=1)
    connection.commit()
    postgres.restart()
    with pytest.raises(ConnectionError, match="lost the connection to PostgreSQL"):
        connection.abort()
    connection.abort()
    root = connection.get_root()
    assert root["x"]["n"] == 1
    root["x"]["n"] = 2
    connection.commit()
    connection.get_storage().close()


def _resilient_client(dsn: str, client: int, ack_path: str, seconds: float) -> None:
    """Transfer for `seconds`, retrying after conflicts and lost connections."""
    ack_fd = bank.open_acks(ack_path)
    connection = Connection(PostgresStorage(dsn))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            number = bank.apply_transfer(connection.get_root(), client)
            connection.commit()
        except (ConflictError, ConnectionError):
            _abort_until_connected(connection, deadline)
            continue
        bank._acknowledge(ack_fd, number + 1)


def _abort_until_connected(connection: Connection, deadline: float) -> None:
    while True:
        try:
            connection.abort()
            return
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_server_restart_under_load_loses_nothing(postgres, postgres_dsn, tmp_path):
    clients = 6
    connection = Connection(PostgresStorage(postgres_dsn))
    bank.create(connection, clients)
    connection.get_storage().close()
    acks = [str(tmp_path / ("ack%d" % client)) for client in range(clients)]
    workers = [bank.start(_resilient_client, postgres_dsn, client, acks[client], 8.0)
               for client in range(clients)]
    try:
        bank.wait_for(lambda: sum(map(bank.read_acks, acks)) > 30, workers)
        postgres.restart()
        before_restart = sum(map(bank.read_acks, acks))
        for worker in workers:
            worker.join(30)
            assert worker.exitcode == 0
    finally:
        for worker in workers:
            bank.stop(worker)
    storage = PostgresStorage(postgres_dsn, readonly=True)
    done = bank.check_snapshot(Connection(storage).get_root())
    storage.close()
    bank.check_promises(done, [bank.read_acks(ack) for ack in acks], [0] * clients)
    assert sum(done) > before_restart  # they went on after the restart


def test_tls_through_libpq_sslmode(postgres, postgres_dsn, tmp_path):
    """verify-full with the cluster's CA connects over TLS; a CA that did not
    sign the server's certificate is refused, clearly."""
    storage = PostgresStorage(postgres_dsn + "?sslmode=verify-full&sslrootcert=" + postgres.cafile)
    assert storage._db.pgconn.ssl_in_use
    storage.close()
    storage = PostgresStorage(postgres_dsn + "?sslmode=disable")
    assert not storage._db.pgconn.ssl_in_use
    storage.close()
    stranger = Authority(tmp_path, "Another CA")
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        PostgresStorage(postgres_dsn + "?sslmode=verify-full&sslrootcert=" + stranger.cafile)


class CountingStorage(PostgresStorage):
    """A PostgresStorage that counts the queries it sends to the server."""

    def __init__(self, *args, **kwargs):
        self.queries = 0
        super().__init__(*args, **kwargs)

    def _execute(self, db, sql: str, params=()):
        self.queries += 1
        return super()._execute(db, sql, params)


class SmallBatches(CountingStorage):
    read_ahead = 300


def test_a_walk_bigger_than_the_read_ahead_queue_reads_in_batches(postgres_dsn):
    from durus.persistent_list import PersistentList
    from lifecycle import Item
    writer = Connection(PostgresStorage(postgres_dsn))
    lists, per_list = 12, 500
    for c in range(lists):
        writer.get_root()[c] = PersistentList(Item(c * per_list + i) for i in range(per_list))
        writer.commit()
    writer.get_storage().close()
    # A queue of 1,000 oids and batches of 300: neither holds a whole walk.
    storage = SmallBatches(postgres_dsn, readonly=True, cache_bytes=128 * 1000)
    reader = Connection(storage)
    before = storage.queries
    values = [item.value for c in range(lists) for item in reader.get_root()[c]]
    assert values == list(range(lists * per_list))
    # One query per batch of 300 and per list, give or take: not one per object.
    assert storage.queries - before < lists * per_list // 300 + 3 * lists
    storage.close()
