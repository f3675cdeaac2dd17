"""Integer packing and exact-length I/O helpers shared by storages and the wire
protocol, and Durus's file-backed arrays (ByteArray, BitArray, WordArray,
IntArray, IntSet).

In Durus names, 'int4' is an unsigned 32-bit big-endian integer and 'int8' an
unsigned 64-bit one.
"""

import struct
import sys
from collections.abc import Iterator, Mapping
from typing import Any
from builtins import bytearray, bytes, next
from io import BytesIO
from pickle import Pickler, Unpickler, dumps, loads

_INT8 = struct.Struct(">Q")
_INT4 = struct.Struct(">L")

byte_string = (bytes, bytearray)
empty_byte_string = b""
join_bytes = b"".join
xrange = range
# Re-exported: Durus code imports these (builtins too) from durus.utils.
BytesIO, Pickler, Unpickler, dumps, loads, bytearray, bytes, next

# True: read() and write() print what they move to sys.stdout (protocol debugging).
TRACE = False


def int8_to_str(n: int) -> bytes:
    return _INT8.pack(n)


def str_to_int8(s: bytes) -> int:
    return _INT8.unpack(s)[0]


def int4_to_str(n: int) -> bytes:
    return _INT4.pack(n)


def str_to_int4(s: bytes) -> int:
    return _INT4.unpack(s)[0]


def as_bytes(s: bytes | bytearray | str) -> bytes:
    """Return s as bytes; str is encoded as latin-1 (Durus's convention)."""
    if isinstance(s, byte_string):
        return bytes(s)
    return s.encode("latin1")


def iteritems(mapping: Mapping[Any, Any]) -> Iterator[tuple[Any, Any]]:
    return iter(mapping.items())


class ShortRead(IOError):
    """Fewer bytes were available than the format requires."""


def read(f: Any, n: int) -> bytes:
    """Read exactly n bytes from a file or socket, or raise ShortRead."""
    file_read = getattr(f, "read", None)
    if file_read is not None:
        data = file_read(n)
        if len(data) < n:
            raise ShortRead("wanted %d bytes, got %d" % (n, len(data)))
    else:
        data = _receive(f, n)
    if TRACE:
        sys.stdout.write("read(%r, %r) -> %r\n" % (f, n, data))
    return data


def _receive(sock, n: int) -> bytes:
    chunks = []
    remaining = n
    while remaining > 0:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ShortRead("connection closed with %d of %d bytes unread" % (remaining, n))
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write(f: Any, s: bytes | bytearray | str) -> None:
    """Write all of s (bytes, or str as latin-1) to a file or socket."""
    data = as_bytes(s)
    if TRACE:
        sys.stdout.write("write(%r, %r)\n" % (f, data))
    file_write = getattr(f, "write", None)
    if file_write is not None:
        file_write(data)
        return
    sendall = getattr(f, "sendall", None)
    if sendall is not None:
        sendall(data)
        return
    _send(f, data)


# A socket-like object that accepts nothing this many times running is dead.
_SEND_ATTEMPTS = 10


def _send(sock, data: bytes) -> None:
    """Send data through an object that only has send()."""
    view = memoryview(data)
    refusals = 0
    while view:
        sent = sock.send(view)
        if sent:
            refusals = 0
            view = view[sent:]
        else:
            refusals += 1
            if refusals > _SEND_ATTEMPTS:
                raise IOError("send() accepted nothing %d times running" % refusals)


def write_all(f: Any, *parts: bytes | bytearray | str) -> None:
    write(f, b"".join(as_bytes(p) for p in parts))


def read_int8(f: Any) -> int:
    return str_to_int8(read(f, 8))


def write_int8(f: Any, n: int) -> None:
    write(f, int8_to_str(n))


def read_int8_str(f: Any) -> bytes:
    return read(f, read_int8(f))


def write_int8_str(f: Any, s: bytes | bytearray | str) -> None:
    """Write s (bytes, or str as latin-1) preceded by its int8 length."""
    data = as_bytes(s)
    write(f, int8_to_str(len(data)) + data)


def read_int4(f: Any) -> int:
    return str_to_int4(read(f, 4))


def write_int4(f: Any, n: int) -> None:
    write(f, int4_to_str(n))


def read_int4_str(f: Any) -> bytes:
    return read(f, read_int4(f))


def write_int4_str(f: Any, s: bytes | bytearray | str) -> None:
    """Write s (bytes, or str as latin-1) preceded by its int4 length."""
    data = as_bytes(s)
    write(f, int4_to_str(len(data)) + data)


class IntRangeError(ValueError, struct.error):
    """An int that does not fit the words of an IntArray (Durus's packing
    raised struct.error: hence also one)."""


class ArrayLayoutError(ValueError, AssertionError):
    """A file-backed array cannot be laid out as asked (Durus asserts these:
    hence also an AssertionError)."""


# Bytes written at once when an array grows.
_FILL_CHUNK = 8192


class ByteArray:
    """An array of single bytes kept in a file-like object (default: a
    BytesIO), from the file's position at creation onwards.

    Bytes already in the file past that position become the array's as it
    grows; beyond the file's end it grows by writing init_byte.
    file: object with seek(n, whence), tell(), read(n), write(b).
    """

    def __init__(self, size: int = 0, file: Any = None) -> None:
        self.file = BytesIO() if file is None else file
        self.start = self.file.tell()
        self.size = 0
        self.set_size(size)

    def get_size(self) -> int:
        return self.size

    def set_size(self, size: int, init_byte: bytes = b"\0") -> None:
        """Grow the array to size bytes."""
        for _ in self.gen_set_size(size, init_byte):
            pass

    def gen_set_size(self, size: int, init_byte: bytes = b"\0") -> Iterator[int]:
        """Grow the array to size bytes, yielding the number of bytes still
        to write after each chunk (so a caller can report progress)."""
        if size < self.size:
            raise ArrayLayoutError("a ByteArray cannot shrink (%d to %d bytes)" % (self.size, size))
        init_byte = as_bytes(init_byte)
        if len(init_byte) != 1:
            raise ValueError("init_byte must be one byte, not %r" % init_byte)
        self.file.seek(0, 2)
        end = self.file.tell()
        if end < self.start + size:
            if end != self.start + self.size:
                raise ArrayLayoutError(
                    "the array ends at %d but the file at %d: it can grow only at the end"
                    % (self.start + self.size, end))
            remaining = self.start + size - end
            while remaining > 0:
                chunk = min(remaining, _FILL_CHUNK)
                write(self.file, init_byte * chunk)
                remaining -= chunk
                yield remaining
        self.size = size
        self.file.seek(self.start + size)

    def _bounds(self, j, k) -> tuple:
        """Return the file positions of the slice j:k (None meaning an end),
        or raise IndexError if it does not lie within the array."""
        j = 0 if j is None else j
        k = self.size if k is None else k
        if not 0 <= j <= k <= self.size:
            raise IndexError((j, k))
        return self.start + j, k - j

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.__getslice__(*self._slice_ends(j))
        if not 0 <= j < self.size:
            raise IndexError(j)
        self.file.seek(self.start + j)
        return read(self.file, 1)

    def __setitem__(self, j, value) -> None:
        if isinstance(j, slice):
            self.__setslice__(*self._slice_ends(j), value)
            return
        if not 0 <= j < self.size:
            raise IndexError(j)
        if len(value) != 1:
            raise ValueError("one byte expected, got %r" % (value,))
        self.file.seek(self.start + j)
        write(self.file, value)

    @staticmethod
    def _slice_ends(s: slice) -> tuple[int | None, int | None]:
        if s.step not in (None, 1):
            raise IndexError("a ByteArray slice has no step: %r" % s)
        return s.start, s.stop

    def __getslice__(self, j, k) -> bytes:
        position, length = self._bounds(j, k)
        self.file.seek(position)
        return read(self.file, length)

    def __setslice__(self, j, k, value) -> None:
        position, length = self._bounds(j, k)
        if len(value) != length:
            raise ValueError("%d bytes expected, got %d" % (length, len(value)))
        self.file.seek(position)
        write(self.file, value)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        self.file.seek(self.start)
        data = read(self.file, self.size)
        return (data[j:j + 1] for j in range(len(data)))


all_bytes = [bytes((n,)) for n in range(256)]


def _bit_index(j: int) -> int:
    """Return the bit number 0-7 (0 = most significant) that index j (-8..7) names."""
    if -8 <= j <= 7:
        return j & 7
    raise IndexError(j)


class Byte:
    """Eight bits, most significant first, that can be read and set by index
    (negative indexes count from the end).

    value: int 0-255.
    """

    def __init__(self, v: int | bytes | bytearray) -> None:
        if isinstance(v, byte_string) and len(v) == 1:
            v = v[0]
        if not isinstance(v, int) or not 0 <= v <= 255:
            raise TypeError("a byte or an int 0-255 expected, got %r" % (v,))
        self.value = v

    def __getitem__(self, j: int) -> int:
        return (self.value >> (7 - _bit_index(j))) & 1

    def __setitem__(self, j: int, bit) -> None:
        mask = 0x80 >> _bit_index(j)
        self.value = self.value | mask if bit else self.value & ~mask

    def __str__(self) -> str:
        return chr(self.value)

    def __int__(self) -> int:
        return self.value

    def byte(self) -> bytes:
        return all_bytes[self.value]


def _position(j: int, length: int) -> int:
    """Return index j (negative counts from the end) as 0..length-1, or raise IndexError."""
    p = j + length if j < 0 else j
    if not 0 <= p < length:
        raise IndexError(j)
    return p


class BitArray:
    """An array of bits (ints 0 and 1) kept in a ByteArray, eight a byte,
    most significant first."""

    def __init__(self, size: int, file: Any = None) -> None:
        self.byte_array = ByteArray(file=file)
        self.size = 0
        self.set_size(size)

    def get_size(self) -> int:
        return self.size

    def set_size(self, size: int) -> None:
        self.byte_array.set_size((size + 7) // 8)
        self.size = size

    def __getitem__(self, j: int) -> int:
        byte_number, bit = divmod(_position(j, self.size), 8)
        return (self.byte_array[byte_number][0] >> (7 - bit)) & 1

    def __setitem__(self, j: int, value) -> None:
        byte_number, bit = divmod(_position(j, self.size), 8)
        mask = 0x80 >> bit
        old = self.byte_array[byte_number][0]
        new = old | mask if value else old & ~mask
        if new != old:
            self.byte_array[byte_number] = all_bytes[new]

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        n = 0
        for byte in self.byte_array:
            for bit in range(7, -1, -1):
                if n == self.size:
                    return
                yield (byte[0] >> bit) & 1
                n += 1

    def __str__(self) -> str:
        return "".join(str(bit) for bit in self)


def _given(dimension: int | None, name: str) -> int:
    """Return the dimension of a new array; raise TypeError if it is None."""
    if dimension is None:
        raise TypeError("a new array needs its %s" % name)
    return dimension


def _start_array(file, generate):
    """Return file (a new BytesIO if None), positioned where it was, after
    running generate(file) to write a new array there if the file ends there."""
    file = BytesIO() if file is None else file
    start = file.tell()
    file.seek(0, 2)
    if file.tell() == start:
        for _ in generate(file):
            pass
    file.seek(start)
    return file


class WordArray:
    """A fixed number of fixed-length words (bytes) kept in a file-like
    object from its position at creation: int8 (16 + bytes_per_word *
    number_of_words), int8 bytes_per_word, int8 number_of_words, then the words.

    With the file empty from that position, the array is written there
    (words of zero bytes); otherwise it is read, and the dimensions given
    are ignored.
    """

    def __init__(self, file: Any = None, bytes_per_word: int | None = None,
                 number_of_words: int | None = None) -> None:
        self.file = _start_array(file, lambda f: self.generate(
            f, _given(bytes_per_word, "bytes_per_word"),
            _given(number_of_words, "number_of_words"), b"\0"))
        start = self.file.tell()
        header = read(self.file, 24)
        total, bytes_per_word, number_of_words = struct.unpack(">QQQ", header)
        if total != 16 + bytes_per_word * number_of_words:
            raise ArrayLayoutError(
                "word array header at %d says %d bytes, not 16 + %d * %d"
                % (start, total, bytes_per_word, number_of_words))
        self.bytes_per_word = bytes_per_word
        self.number_of_words = number_of_words
        self.byte_array = ByteArray(bytes_per_word * number_of_words, file=self.file)

    @staticmethod
    def generate(file: Any, bytes_per_word: int, number_of_words: int,
                 init_byte: bytes) -> Iterator[int]:
        """Write a new word array at the end of file, every byte init_byte,
        yielding progress as ByteArray.gen_set_size does; the file is left
        at the array's start."""
        start = file.tell()
        file.seek(0, 2)
        if file.tell() != start:
            raise ArrayLayoutError("a new word array must be written at the end of the file")
        size = bytes_per_word * number_of_words
        write(file, struct.pack(">QQQ", 16 + size, bytes_per_word, number_of_words))
        yield from ByteArray(file=file).gen_set_size(size, init_byte)
        file.seek(start)

    def get_bytes_per_word(self) -> int:
        return self.bytes_per_word

    def __len__(self) -> int:
        return self.number_of_words

    def __getitem__(self, j: int) -> bytes:
        start = _position(j, self.number_of_words) * self.bytes_per_word
        return self.byte_array[start:start + self.bytes_per_word]

    def __setitem__(self, j: int, word) -> None:
        start = _position(j, self.number_of_words) * self.bytes_per_word
        self.byte_array[start:start + self.bytes_per_word] = word

    def __iter__(self):
        for j in range(self.number_of_words):
            yield self[j]


class IntArray:
    """An array of non-negative ints kept in a WordArray, each word as few
    bytes as maximum_int needs (8 if it is not given). A word of 0xff bytes
    is blank: get() answers the default for it.
    """

    def __init__(self, file: Any = None, number_of_ints: int | None = None,
                 maximum_int: int | None = None) -> None:
        self.file = _start_array(file, lambda f: self.generate(
            f, _given(number_of_ints, "number_of_ints"), maximum_int))
        self.word_array = WordArray(self.file)
        width = self.word_array.get_bytes_per_word()
        self.blank = b"\xff" * width
        self._limit = 1 << (8 * width)  # every value is below

    @staticmethod
    def generate(file: Any, number_of_ints: int, maximum_int: int | None) -> Iterator[int]:
        """Write a new, all blank, int array at the end of file, yielding
        progress as ByteArray.gen_set_size does."""
        if maximum_int is None:
            width = 8
        else:
            # Room for maximum_int + 1 too, so that no value is the blank word.
            width = ((maximum_int + 1).bit_length() + 7) // 8
        yield from WordArray.generate(file, width, number_of_ints, b"\xff")

    def get_blank_value(self) -> int:
        return self._limit - 1

    def get(self, j: int, default: Any = None) -> Any:
        """Return the int at j, or default if j is out of range or blank."""
        try:
            word = self.word_array[j]
        except IndexError:
            return default
        if word == self.blank:
            return default
        return int.from_bytes(word, "big")

    def __getitem__(self, j: int) -> int:
        return int.from_bytes(self.word_array[j], "big")

    def __setitem__(self, j: int, value: int) -> None:
        if not 0 <= value < self._limit:
            raise IntRangeError("%r does not fit in a word of %d bytes"
                                % (value, len(self.blank)))
        self.word_array[j] = value.to_bytes(len(self.blank), "big")

    def __iter__(self):
        for word in self.word_array:
            yield int.from_bytes(word, "big")

    def items(self) -> Iterator[tuple[int, int]]:
        """Yield (index, int) for every word that is not blank."""
        for j, word in enumerate(self.word_array):
            if word != self.blank:
                yield j, int.from_bytes(word, "big")

    iteritems = items

    def __len__(self) -> int:
        return len(self.word_array)


class IntSet:
    """A set of non-negative ints as a BitArray (in file, default a BytesIO)
    whose size follows the largest member."""

    def __init__(self, size: int = 2 ** 10 - 1, file: Any = None) -> None:
        self.bit_array = BitArray(size=size, file=file)

    def add(self, n: int) -> None:
        if n < 0:
            raise ValueError("an IntSet holds no negative numbers: %r" % n)
        if n >= self.bit_array.get_size():
            self.bit_array.set_size(max(n + 1, int(n * 1.2)))
        self.bit_array[n] = 1

    def __contains__(self, n: int) -> bool:
        return 0 <= n < self.bit_array.get_size() and self.bit_array[n] == 1

    def discard(self, n: int) -> None:
        if 0 <= n < self.bit_array.get_size():
            self.bit_array[n] = 0
