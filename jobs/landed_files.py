"""Find a delivery's landed files and check each one before Spark reads it.

    delivery = scan_delivery(settings.landing / "porto" / "2013-07-01", city, landing_root=settings.landing)
    delivery.files        # readable files: header, columns, physical line count
    delivery.quarantined  # regular files that cannot be ingested: reason, detail, line where known
    delivery.skipped      # entries never opened: symlinks, fifos, devices, anything outside the folder

A landing file is a regular file inside the landing folder (resolved and contained), opened without
following links. Every other entry is skipped with a reason and never opened, so no byte from outside
the landing folder is read or quoted in a message. A file that cannot be ingested (not UTF-8 text,
gzip data under a .csv name, a truncated gzip, a header without the required columns, a file name
Spark cannot be handed) is quarantined with a reason; the delivery's other files still publish.
An empty or header-only file is not a problem: it holds zero rows and the run's accounting says so.

Each readable file is scanned once here, in C-speed chunks: its physical line count (line breaks as
Spark reads them: \\n, \\r\\n or a lone \\r) is the independent count that the run's accounting checks
bronze against, so rows lost between the files and bronze fail the run.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import logging
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfertraj.core.city_config import CityConfig, positional_column

log = logging.getLogger(__name__)

PORTO_COLUMNS = (
    "TRIP_ID",
    "CALL_TYPE",
    "ORIGIN_CALL",
    "ORIGIN_STAND",
    "TAXI_ID",
    "TIMESTAMP",
    "DAY_TYPE",
    "MISSING_DATA",
    "POLYLINE",
)
PORTO_REQUIRED = ("TRIP_ID", "TAXI_ID", "TIMESTAMP", "POLYLINE")
READABLE_SUFFIXES = (".csv", ".txt", ".gz", ".tsv", ".parquet")
CHUNK = 1 << 20


def has_odd_quote_line(body: bytes) -> bool:
    """Whether some line of `body` (split at \\n and \\r) holds an odd number of double quotes: the start
    (or the end) of a field that spans lines. Vectorised (numpy over the chunk's bytes): a regex over
    every line took 2.6 s per 47 MB Porto file, whose every line is quoted."""
    b = np.frombuffer(body, np.uint8)
    quotes = np.flatnonzero(b == 34)
    if not len(quotes):
        return False
    breaks = np.flatnonzero((b == 10) | (b == 13))
    return bool((np.bincount(np.searchsorted(breaks, quotes)) % 2).any())


class LandingError(ValueError):
    """A delivery cannot be ingested at all; the message names the file(s) and what to do."""


@dataclass(frozen=True)
class LandedFile:
    path: Path
    header: str | None  # None: the file is empty
    columns: tuple[str, ...]
    rel: str = ""  # the path relative to the landing root: bronze's source_file
    lines: int = 0  # physical lines, header included, as Spark splits them
    odd_quote_lines: bool = False  # some line has an odd number of quotes: a field may span lines
    header_line: bool = True  # the first line is the header (not a row); False: headerless text, Parquet
    parquet: bool = False  # read as Parquet; `header` is then its column names as one delimited line
    sep: str = ","  # the field delimiter of its lines (of the text its rows are read as, for Parquet)
    parquet_rows: int = 0  # Parquet: its rows (each one bronze row, spanning 1 + its line breaks lines)

    @property
    def data_lines(self) -> int:
        """The lines bronze must hold for this file: every line but a header line."""
        if self.header is None:
            return 0
        return max(self.lines - 1, 0) if self.header_line else self.lines

    @property
    def bronze_rows(self) -> int:
        """The rows bronze must hold for this file: one per data line of text, one per Parquet row."""
        return self.parquet_rows if self.parquet else self.data_lines

    @property
    def spark_safe_name(self) -> bool:
        """Hadoop can open the path as named: UTF-8, and no ':' (Hadoop takes it for a URI scheme)."""
        try:
            str(self.path).encode("utf-8")
        except UnicodeEncodeError:
            return False
        return ":" not in str(self.path)


@dataclass(frozen=True)
class SetAside:
    """A landed entry that was not ingested, and why (FILE_REASONS in jobs/schemas.py)."""

    rel: str
    reason: str
    detail: str
    line: int | None = None  # 1-based line of the file where the problem was found, when known

    def describe(self) -> str:
        at = f" (line {self.line})" if self.line else ""
        return f"{self.rel}: {self.reason}{at}: {self.detail}"


@dataclass
class Delivery:
    files: list[LandedFile] = field(default_factory=list)
    quarantined: list[SetAside] = field(default_factory=list)
    skipped: list[SetAside] = field(default_factory=list)


class _Quarantine(Exception):
    def __init__(self, reason: str, detail: str, line: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.line = reason, detail, line


def required_columns(city: CityConfig) -> dict[str, str]:
    """Canonical name -> column name in the file."""
    if city.raw.format == "porto_csv":
        return {c: c for c in PORTO_REQUIRED}
    return city.raw.file_columns


def header_of(columns: list[str] | tuple[str, ...], sep: str) -> str:
    """Column names as one delimited header line (quoted where a name needs it), as csv.reader reads back."""
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="").writerow(columns)
    return out.getvalue()


def positional_header(n: int, sep: str) -> str:
    """The header a headerless file is read under: `_c0<sep>_c1...`, one name per field of its first line."""
    return header_of([positional_column(i) for i in range(n)], sep)


def printable_name(path: Path | str) -> str:
    """A file name as text, with bytes that are not UTF-8 shown as \\xNN (file names are bytes on Linux)."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


def _open_regular(path: Path):
    """Open without following a link and without blocking on a fifo; refuse anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _Quarantine("symlink", "a symbolic link: not followed (land a regular file)") from None
        raise _Quarantine("unreadable_file", f"cannot open ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Quarantine("not_regular_file", "not a regular file: never read")
    return os.fdopen(fd, "rb")


@dataclass
class _Scan:
    head: bytes = b""
    lines: int = 0
    odd_quotes: bool = False
    size: int = 0


def _scan(raw, *, compressed: bool) -> _Scan:
    """Count physical lines (\\n, \\r\\n, lone \\r) and look for odd-quote lines, chunk by chunk."""
    s = _Scan()
    breaks = 0
    prev_cr = False
    tail = b""  # the unfinished last line so far (for the quote check)
    last = b""
    while True:
        try:
            chunk = raw.read(CHUNK >> 4 if compressed else CHUNK)  # small reads: a truncation's line is near
        except (EOFError, OSError, zlib.error) as err:
            what = "truncated or corrupt gzip" if compressed else "read error"
            raise _Quarantine(
                "unreadable_file",
                f"{what} after {s.size:,} bytes ({err}): deliver the file again",
                line=breaks + 1,
            ) from None
        if not chunk:
            break
        if not s.head:
            s.head = chunk[: 64 * 1024]
        s.size += len(chunk)
        crlf = chunk.count(b"\r\n") + (1 if prev_cr and chunk[:1] == b"\n" else 0)
        breaks += chunk.count(b"\n") + chunk.count(b"\r") - crlf
        prev_cr = chunk[-1:] == b"\r"
        last = chunk[-1:]
        if not s.odd_quotes:
            buf = tail + chunk
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
            if cut < 0:
                tail = buf  # still inside one line
            else:
                body, tail = buf[: cut + 1], buf[cut + 1 :]
                s.odd_quotes = body.count(b'"') % 2 == 1 or (b'"' in body and has_odd_quote_line(body))
    if not s.odd_quotes and tail.count(b'"') % 2 == 1:
        s.odd_quotes = True
    s.lines = breaks + (1 if s.size and last not in (b"\n", b"\r") else 0)
    return s


def _check_text(head: bytes) -> None:
    if head[:2] == b"\x1f\x8b":
        raise _Quarantine("wrong_compression", "gzip data under a name without .gz: rename it to end in .gz")
    if head[:4] == b"PK\x03\x04":
        raise _Quarantine("wrong_compression", "a zip archive: unzip it and land the CSV files")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise _Quarantine("bad_file_encoding", "UTF-16 text (byte order mark): re-export it as UTF-8")
    if head.count(b"\x00") * 10 > len(head):
        raise _Quarantine("bad_file_encoding", "binary data or UTF-16 without a byte order mark: export UTF-8 text")


def _header(head: bytes) -> str | None:
    if not head:
        return None
    first = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0]
    return first.decode("utf-8", errors="replace").lstrip("\ufeff")


def inspect_file(path: Path, city: CityConfig, rel: str | None = None) -> LandedFile:
    """One regular landed file, scanned. Raises _Quarantine (reason, detail, line) when it cannot be ingested."""
    rel = rel if rel is not None else path.name
    if not path.name.endswith(READABLE_SUFFIXES):
        raise _Quarantine("unknown_file_type", f"unknown file type (expected one of {', '.join(READABLE_SUFFIXES)})")
    if path.name.endswith(".parquet"):
        return _inspect_parquet(path, city, rel)
    compressed = path.name.endswith(".gz")
    with _open_regular(path) as f:
        if compressed:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                try:
                    scan = _scan(g, compressed=True)
                except gzip.BadGzipFile as err:
                    raise _Quarantine("unreadable_file", f"not a gzip file ({err})") from None
        else:
            scan = _scan(f, compressed=False)
    _check_text(scan.head)
    header = _header(scan.head)
    if header is None:
        log.warning("%s is empty: 0 rows", rel)
        return LandedFile(path, None, (), rel, 0, False)
    if not scan.head.startswith(b"\xef\xbb\xbf") and "\ufffd" in header:
        raise _Quarantine("bad_file_encoding", "the header line is not UTF-8: re-export the file as UTF-8", line=1)
    sep = city.raw.delimiter_for(path.name)
    try:
        columns = tuple(c.strip() for c in next(csv.reader([header], delimiter=sep)))
    except csv.Error as err:
        raise _Quarantine("bad_header", f"the header line does not parse as CSV ({err})", line=1) from None
    if not city.raw.header:  # the first line is data: the columns are its positions
        header = positional_header(len(columns), sep)
        columns = tuple(positional_column(i) for i in range(len(columns)))
    _check_columns(columns, city, header)
    return LandedFile(path, header, columns, rel, scan.lines, scan.odd_quotes, header_line=city.raw.header, sep=sep)


def _inspect_parquet(path: Path, city: CityConfig, rel: str) -> LandedFile:
    """A Parquet file: its column names make the header; its rows (plus the line breaks inside its text
    values, which the rows' CSV text will hold) are the lines bronze must account for."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with _open_regular(path) as f:
        try:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            text = [n for n in schema.names if pa.types.is_string(schema.field(n).type)]
            rows = pf.metadata.num_rows
            breaks = sum(  # batch by batch: a large file is never held whole
                int(pc.sum(pc.count_substring(b.column(n), "\n")).as_py() or 0)
                for b in (pf.iter_batches(columns=text) if text else [])
                for n in text
            )
        except (pa.ArrowException, OSError) as err:
            raise _Quarantine("unreadable_file", f"not a readable Parquet file ({err}): deliver it again") from None
    sep = city.raw.delimiter_for(path.name)
    names = schema.names if city.raw.header else [positional_column(i) for i in range(len(schema.names))]
    header = header_of(names, sep)
    _check_columns(tuple(names), city, header)
    if rows == 0:
        log.warning("%s is empty: 0 rows", rel)
    return LandedFile(
        path,
        header,
        tuple(names),
        rel,
        rows + breaks,
        False,
        header_line=False,
        parquet=True,
        sep=sep,
        parquet_rows=rows,
    )


def _check_columns(columns: tuple[str, ...], city: CityConfig, header: str) -> None:
    """Quarantine a file that lacks a column the city's mapping needs."""
    missing = [
        f"{canon} (column '{col}')" if canon != col else col
        for canon, col in required_columns(city).items()
        if col not in columns
    ]
    if missing and not city.raw.header:
        missing = [f"{canon} (position {col.removeprefix('_c')})" for canon, col in required_columns(city).items()
                   if col not in columns]  # fmt: skip
        raise _Quarantine(
            "bad_header", f"the file has {len(columns)} column(s); the mapping needs {', '.join(missing)}", line=1
        )
    if missing:
        raise _Quarantine(
            "bad_header",
            f"the header lacks required column(s) {', '.join(missing)} for format "
            f"{city.raw.format}; header is: {header[:200]}",
            line=1,
        )


def _entries(folder: Path):
    """Every entry under `folder`, links not followed (a linked folder is an entry, not walked)."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name


def scan_delivery(landing_dir: Path, city: CityConfig, *, landing_root: Path | None = None) -> Delivery:
    """Every entry of one delivery folder: readable files, quarantined files, skipped entries.
    Hidden files and markers (names starting with '.' or '_') are not data and are left out."""
    root = Path(landing_root) if landing_root is not None else landing_dir.parent
    if not landing_dir.is_dir():
        raise LandingError(f"{landing_dir}: no such landing folder (land the delivery first)")
    real_root = root.resolve()
    real_dir = landing_dir.resolve()
    if landing_dir.is_symlink() or not real_dir.is_relative_to(real_root):
        raise LandingError(
            f"{landing_dir}: the landing folder is a link or lies outside {root}: land the files in a real folder"
        )
    out = Delivery()
    for path in _entries(landing_dir):
        rel = printable_name(path.relative_to(root))
        if path.name.startswith((".", "_")):
            continue
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            continue  # walked
        if stat.S_ISLNK(st.st_mode):
            out.skipped.append(SetAside(rel, "symlink", "a symbolic link: not followed (land a regular file)"))
            continue
        if not stat.S_ISREG(st.st_mode):
            out.skipped.append(SetAside(rel, "not_regular_file", "a fifo, socket or device: never read"))
            continue
        if not path.resolve().is_relative_to(real_dir):
            out.skipped.append(SetAside(rel, "outside_landing", "resolves outside the landing folder: never read"))
            continue
        try:
            out.files.append(inspect_file(path, city, rel))
        except _Quarantine as q:
            (out.skipped if q.reason in ("symlink", "not_regular_file") else out.quarantined).append(
                SetAside(rel, q.reason, q.detail, q.line)
            )
    for s in out.skipped + out.quarantined:
        log.warning("%s: %s", city.name, s.describe())
    return out


def landed_files(landing_dir: Path, city: CityConfig) -> list[LandedFile]:
    """The readable files of one delivery folder; raises LandingError naming every file that is not."""
    d = scan_delivery(landing_dir, city)
    problems = d.quarantined + d.skipped
    if problems:
        raise LandingError("; ".join(p.describe() for p in problems))
    return d.files
