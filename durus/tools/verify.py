"""Check every record of a database: structure, checksums, decoding, references, reachability.

durus verify TARGET [--show N]: TARGET is a storage file of any format or a
postgresql:// URI, opened read-only (a file a server is writing is checked
up to its last complete transaction). Exit status 0 when healthy, 1 with a
report naming each problem by oid and byte offset (where the format has
offsets). Objects the root does not reach are a warning, not a problem:
every commit that drops a reference leaves some until the next pack.
"""

import argparse
import re
import sys
import time
from dataclasses import dataclass, field

from durus.error import CorruptFileError
from durus.record_format import check_record, split_oids, unpack_record
from durus.storage import ROOT_OID, Storage
from durus.tools.progress import progress
from durus.tools.raw_state import RawReader
from durus.tools.records import SERVER, gen_records, record_total, storage_format
from durus.tools.target import open_target
from durus.utils import str_to_int8


@dataclass
class Problem:
    """Something wrong with a record (oid None: with the file as a whole)."""
    oid: bytes | None
    offset: int | None
    text: str

    def __str__(self) -> str:
        where = [] if self.oid is None else ["oid %d" % str_to_int8(self.oid)]
        if self.offset is not None:
            where.append("at byte %d" % self.offset)
        return "error: %s%s" % (" ".join(where) + ": " if where else "", self.text)


@dataclass
class Report:
    """What verify found: problems, and the oids the root does not reach, ascending."""
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    unreachable: list[bytes] = field(default_factory=list)


def state_references(reader: RawReader, data: bytes) -> set[bytes]:
    """Decode the class and state of a record's data, importing no
    application class; return the oids its state references. Raises
    whatever a damaged pickle makes it raise."""
    reader.references = set()
    reader.get_state(data)
    return reader.references


def main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="durus verify", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="A storage file or postgresql:// URI.")
    parser.add_argument("--show", type=int, default=20, metavar="N",
                        help="List the first N unreachable oids. (default=20)")
    options = parser.parse_args(argv)
    start = time.monotonic()
    try:
        storage = open_target(options.target)
    except CorruptFileError as error:
        # The storage's own open-time checks (structure, checksums) refused it.
        report = Report(problems=[Problem(None, _byte_offset(str(error)), str(error))])
    else:
        try:
            if storage_format(storage) == SERVER:
                raise ValueError("verify reads the database itself: give the file the server "
                                 "serves (it opens read-only while the server writes)")
            report = verify(storage)
        finally:
            storage.close()
    print_report(report, options.target, options.show, time.monotonic() - start)
    sys.exit(1 if report.problems else 0)


def _byte_offset(message: str) -> int | None:
    found = re.search(r"\bat byte (\d+)", message)
    return int(found.group(1)) if found else None


def verify(storage: Storage) -> Report:
    """Check every record of storage (a file or relational storage), with a progress bar."""
    report = Report()
    reader = RawReader()
    refs_of: dict[bytes, list[bytes]] = {}
    offsets: dict[bytes, int | None] = {}
    with progress("verify", record_total(storage)) as advance:
        for oid, offset, record in gen_records(storage):
            advance(1)
            offsets[oid] = offset
            refs_of[oid] = []
            problem = _check(reader, oid, record, refs_of)
            if problem:
                report.problems.append(Problem(oid, offset, problem))
    report.records = len(refs_of)
    for oid, refs in refs_of.items():
        for ref in refs:
            if ref not in refs_of:
                report.problems.append(Problem(oid, offsets[oid], "references oid %d, which "
                                               "has no record" % str_to_int8(ref)))
    if refs_of and ROOT_OID not in refs_of:
        report.problems.append(Problem(ROOT_OID, None, "the root object has no record"))
    reached = _reachable(refs_of)
    report.unreachable = sorted(oid for oid in refs_of if oid not in reached)
    return report


def _check(reader: RawReader, oid: bytes, record, refs_of: dict) -> str | None:
    """Why record (of oid) is bad, or None; note its references in refs_of."""
    if isinstance(record, CorruptFileError):
        return "unreadable: %s" % record
    try:
        check_record(oid, record)
        _, data, refs = unpack_record(record)
        refs_of[oid] = split_oids(refs)
    except ValueError as error:
        return "malformed record: %s" % error
    try:
        found = state_references(reader, data)
    except Exception as error:  # any exception: the pickle is damaged
        return "its state does not decode (%s: %s)" % (type(error).__name__, error)
    found.discard(oid)
    listed = set(refs_of[oid]) - {oid}
    if found != listed:
        return ("its list of references does not match its state: listed only %s, in the "
                "state only %s" % (_numbers(listed - found), _numbers(found - listed)))
    return None


def _numbers(oids) -> str:
    return "[%s]" % ", ".join(str(str_to_int8(oid)) for oid in sorted(oids))


def _reachable(refs_of: dict) -> set:
    """The oids the root reaches, through the references that have records."""
    if ROOT_OID not in refs_of:
        return set()
    seen = {ROOT_OID}
    todo = [ROOT_OID]
    while todo:
        for ref in refs_of[todo.pop()]:
            if ref not in seen and ref in refs_of:
                seen.add(ref)
                todo.append(ref)
    return seen


def print_report(report: Report, target: str, show: int, seconds: float) -> None:
    for problem in report.problems:
        print(problem)
    if report.unreachable:
        shown = ", ".join(str(str_to_int8(oid)) for oid in report.unreachable[:show])
        more = len(report.unreachable) - show
        print("warning: %d objects are not reachable from the root (a pack removes them): "
              "oids %s%s" % (len(report.unreachable), shown,
                             ", and %d more" % more if more > 0 else ""))
    print("%s: %d records checked in %.1f s: %s, %d unreachable" % (
        target, report.records, seconds,
        "%d problems" % len(report.problems) if report.problems else "healthy",
        len(report.unreachable)))
