"""durus.utils: int packing, exact-length I/O over files and sockets, and the
file-backed arrays (ByteArray, Byte, BitArray, WordArray, IntArray, IntSet)."""

import socket
import threading

import pytest

import durus.utils
from durus.utils import (ArrayLayoutError, BitArray, Byte, ByteArray, IntArray, IntSet,
                         ShortRead, WordArray, all_bytes, as_bytes, int4_to_str,
                         int8_to_str, join_bytes, read, read_int4, read_int4_str,
                         read_int8, read_int8_str, str_to_int4, str_to_int8, write,
                         write_all, write_int4, write_int4_str, write_int8,
                         write_int8_str, xrange)
from durus.utils import bytearray as utils_bytearray, next as utils_next  # Durus re-exports


@pytest.fixture
def data_file(tmp_path):
    with open(tmp_path / "data", "w+b") as f:
        yield f


@pytest.fixture
def sockets():
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


class SendOnly:
    """A real socket seen through send() alone, at most `limit` bytes a call
    (as a busy socket may take part of what it is given)."""

    def __init__(self, sock, limit):
        self.sock, self.limit = sock, limit
        self.calls = 0

    def send(self, data):
        self.calls += 1
        return self.sock.send(data[:self.limit])


def test_int_conversions_are_big_endian_and_round_trip():
    assert int8_to_str(1) == b"\0" * 7 + b"\1"
    assert int4_to_str(0x01020304) == b"\1\2\3\4"
    for n in (0, 1, 2 ** 32 - 1, 2 ** 64 - 1):
        assert str_to_int8(int8_to_str(n)) == n
    for n in (0, 1, 2 ** 32 - 1):
        assert str_to_int4(int4_to_str(n)) == n


def test_as_bytes_and_join_bytes():
    assert as_bytes("caf\xe9") == b"caf\xe9"
    assert as_bytes(bytearray(b"ab")) == b"ab"
    assert join_bytes([b"a", b"b"]) == b"ab"
    assert list(xrange(3)) == [0, 1, 2]
    assert utils_next(iter([5])) == 5 and utils_bytearray is bytearray
    assert all_bytes[65] == b"A" and len(all_bytes) == 256


def test_read_and_write_helpers_round_trip_through_a_real_file(data_file):
    write_int4(data_file, 7)
    write_int8(data_file, 2 ** 60)
    write_int4_str(data_file, "latin-1 \xe9")  # a str is written as latin-1, as Durus does
    write_int8_str(data_file, b"\0bytes")
    write_all(data_file, "a", b"b")
    write(data_file, "z")
    data_file.seek(0)
    assert read_int4(data_file) == 7
    assert read_int8(data_file) == 2 ** 60
    assert read_int4_str(data_file) == b"latin-1 \xe9"
    assert read_int8_str(data_file) == b"\0bytes"
    assert read(data_file, 3) == b"abz"
    with pytest.raises(ShortRead):
        read(data_file, 1)


def test_short_read_is_an_io_error():
    assert issubclass(ShortRead, IOError)


def test_socket_reads_gather_chunks_and_a_closed_peer_is_a_short_read(sockets):
    left, right = sockets
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one recv()
    sender = threading.Thread(target=write, args=(left, payload))
    sender.start()
    assert read(right, len(payload)) == payload
    sender.join()
    write(left, b"abc")
    left.shutdown(socket.SHUT_WR)
    with pytest.raises(ShortRead):
        read(right, 4)


def test_write_through_an_object_with_send_only_sends_everything(sockets):
    left, right = sockets
    sender = SendOnly(left, limit=1000)
    write(sender, "x" * 5000)
    assert read(right, 5000) == b"x" * 5000
    assert sender.calls == 5


def test_trace_prints_what_is_read_and_written(data_file, capsys, monkeypatch):
    monkeypatch.setattr(durus.utils, "TRACE", True)
    write_int8_str(data_file, b"hi")
    data_file.seek(0)
    assert read_int8_str(data_file) == b"hi"
    out = capsys.readouterr().out
    assert "write(" in out and "b'hi'" in out and "-> b'hi'" in out


def test_byte_array_grows_with_the_init_byte_and_reads_back(data_file):
    data_file.write(b"header")  # the array starts where the file is
    array = ByteArray(size=3, file=data_file)
    assert (len(array), array.get_size(), list(array)) == (3, 3, [b"\0"] * 3)
    array.set_size(5, init_byte=b"\xff")
    array[0] = b"a"
    array[1:3] = "bc"
    assert array[:] == b"abc\xff\xff"
    assert array[4] == b"\xff" and array[1:1] == b""
    data_file.seek(0)
    assert data_file.read() == b"headerabc\xff\xff"


def test_byte_array_adopts_bytes_already_in_the_file(data_file):
    data_file.write(b"0123456789")
    data_file.seek(2)
    array = ByteArray(size=4, file=data_file)
    assert array[0:4] == b"2345"
    array.set_size(8)  # still within the file: nothing is written
    assert array[:] == b"23456789"
    array.set_size(9)
    data_file.seek(0)
    assert data_file.read() == b"0123456789\0"


def test_byte_array_progress_counts_down_the_bytes_left(data_file):
    steps = list(ByteArray(file=data_file).gen_set_size(20000))
    assert steps == sorted(steps, reverse=True) and steps[-1] == 0 and len(steps) == 3


def test_byte_array_refuses_bad_indexes_values_and_layouts(data_file):
    array = ByteArray(size=4, file=data_file)
    for bad in (lambda: array[4], lambda: array[-1], lambda: array[0:5], lambda: array[::2]):
        with pytest.raises(IndexError):
            bad()
    with pytest.raises(IndexError):
        array[4] = b"x"
    with pytest.raises(ValueError):
        array[0] = b"xy"
    with pytest.raises(ValueError):
        array[0:2] = b"x"
    with pytest.raises(ArrayLayoutError):
        array.set_size(2)
    data_file.seek(0)
    with pytest.raises(AssertionError):  # Durus asserts: ours is an AssertionError too
        ByteArray(size=10, file=data_file)  # would have to grow in the middle of the file
    assert issubclass(ArrayLayoutError, ValueError)


def test_byte_bits_are_most_significant_first():
    b = Byte(b"\x80")
    assert [b[j] for j in range(8)] == [1, 0, 0, 0, 0, 0, 0, 0]
    b[-1] = 1
    b[0] = 0
    assert (int(b), str(b), b.byte(), b[7]) == (1, "\x01", b"\x01", 1)
    for bad in (256, -1, b"ab", "a", None):
        with pytest.raises(TypeError):
            Byte(bad)
    with pytest.raises(IndexError):
        b[8]
    with pytest.raises(IndexError):
        b[-9] = 1


def test_bit_array_packs_eight_bits_a_byte(data_file):
    bits = BitArray(10, file=data_file)
    bits[0] = 1
    bits[-1] = 1
    assert str(bits) == "1000000001" and len(bits) == 10 and list(bits)[9] == 1
    data_file.seek(0)
    assert data_file.read() == b"\x80\x40"
    with pytest.raises(IndexError):
        bits[10]
    with pytest.raises(IndexError):
        bits[-11] = 1


def test_word_array_layout_and_reopening(data_file):
    words = WordArray(file=data_file, bytes_per_word=2, number_of_words=3)
    words[0] = b"ab"
    words[-1] = b"ef"
    assert list(words) == [b"ab", b"\0\0", b"ef"]
    data_file.seek(0)
    assert data_file.read() == (int8_to_str(16 + 6) + int8_to_str(2) + int8_to_str(3)
                                + b"ab\0\0ef")
    data_file.seek(0)
    again = WordArray(file=data_file)  # the dimensions come from the file
    assert (len(again), again.get_bytes_per_word(), again[2]) == (3, 2, b"ef")
    with pytest.raises(ValueError):
        again[1] = b"abc"
    with pytest.raises(IndexError):
        again[3]


def test_word_array_refuses_a_short_or_inconsistent_header(data_file):
    data_file.write(b"too short")
    data_file.seek(0)
    with pytest.raises(ShortRead):
        WordArray(file=data_file)
    data_file.seek(0)
    data_file.write(int8_to_str(99) + int8_to_str(1) + int8_to_str(1) + b"x")
    data_file.seek(0)
    with pytest.raises(ArrayLayoutError):
        WordArray(file=data_file)


@pytest.mark.parametrize("maximum_int, width", [(None, 8), (0, 1), (254, 1), (255, 2), (300, 2)])
def test_int_array_words_are_as_wide_as_the_maximum_needs(maximum_int, width):
    ints = IntArray(number_of_ints=4, maximum_int=maximum_int)
    assert ints.word_array.get_bytes_per_word() == width
    assert ints.get_blank_value() == 256 ** width - 1
    if maximum_int is not None:
        ints[0] = maximum_int
        assert ints[0] == maximum_int


def test_int_array_blanks_items_and_limits(data_file):
    ints = IntArray(file=data_file, number_of_ints=5, maximum_int=1000)
    assert [ints.get(j) for j in range(5)] == [None] * 5
    assert ints.get(9, default="none") == "none"
    assert list(ints) == [ints.get_blank_value()] * 5
    ints[1] = 7
    ints[3] = 1000
    assert list(ints.items()) == [(1, 7), (3, 1000)] and len(ints) == 5
    for bad in (-1, 2 ** 16):
        with pytest.raises(ValueError):
            ints[2] = bad
    with pytest.raises(IndexError):
        ints[5]
    data_file.seek(0)
    again = IntArray(file=data_file)
    assert list(again.iteritems()) == [(1, 7), (3, 1000)]


def test_int_array_files_read_in_durus_4_3(data_file, run_peer, tmp_path):
    ints = IntArray(file=data_file, number_of_ints=4, maximum_int=70000)
    ints[0] = 5
    ints[2] = 70000
    data_file.flush()
    out = run_peer("import sys\n"
                   "from durus.utils import IntArray\n"
                   "print(sorted(IntArray(file=open(sys.argv[1], 'rb')).items()))",
                   str(tmp_path / "data"))
    assert out.strip() == "[(0, 5), (2, 70000)]"


def test_int_set_grows_to_hold_any_non_negative_int(data_file):
    numbers = IntSet(size=8, file=data_file)
    for n in (0, 7, 8, 1000):
        assert n not in numbers
        numbers.add(n)
        assert n in numbers
    numbers.discard(7)
    numbers.discard(10 ** 6)  # beyond the end: nothing to do
    assert [n for n in range(1001) if n in numbers] == [0, 8, 1000]
    assert -1 not in numbers
    with pytest.raises(ValueError):
        numbers.add(-1)
    assert IntSet().bit_array.get_size() == 1023


def test_an_int_that_does_not_fit_is_a_value_error_and_a_struct_error():
    """Durus's packing raised struct.error there; ours says what does not fit."""
    import struct
    array = IntArray(number_of_ints=2, maximum_int=255)  # two-byte words: 0xffff is blank
    for value in (-1, 65536, 2 ** 64):
        with pytest.raises(ValueError) as caught:
            array[0] = value
        assert isinstance(caught.value, struct.error)
