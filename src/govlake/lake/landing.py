"""The landing zone: find department extracts, read them safely, normalise them to Parquet.

An extract lives at `<landing>/<theme>/<resource>/<provider>/<file>` as CSV (UTF-8 or GBK),
Parquet or JSON Lines. Reading happens here, streaming, before the engine sees the data,
because the engine cannot be trusted with it: Sail ignores the CSV `encoding` option and
fails a whole file on one ragged row. So each file is hashed, its encoding detected, and its
records streamed into a staging Parquet file of string columns; records that cannot be
parsed are kept aside (they become quarantine rows), and a file that cannot be read at all
raises `ExtractRejected` with the reason (it is then moved to `rejected/`, never deleted).
The staging file lives under the warehouse (`staging_location`), where the engine can read
it wherever it runs.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from govlake.core.catalog import Resource
from govlake.core.errors import GovlakeError
from govlake.core.location import Location
from govlake.core.text import quote_list

FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_CHUNK = 1 << 20
_BATCH_ROWS = 100_000


class ExtractRejected(GovlakeError):
    """A landed file that cannot be read at all; `reason` says why, for the `.reason.json`."""

    def __init__(self, file: Location, reason: str, rule: str):
        self.file = file
        self.reason = reason
        self.rule = rule
        super().__init__(f"{file.uri}: {rule}: {reason}")


@dataclass(frozen=True)
class LandedFile:
    """A file waiting in the landing zone for one resource and provider."""

    location: Location
    resource: str
    provider: str

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def suffix(self) -> str:
        return "." + self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""

    @property
    def as_of(self) -> datetime | None:
        """The time the extract's data is as of, from the last `_YYYYMMDD[THHMM[SS]]` stamp in
        the file name (naive UTC; a date alone means its start), or None without one."""
        return as_of_from_name(self.stem)


_STAMP = re.compile(r"(?<![0-9])(\d{8})(?:[T_]?(\d{4}|\d{6}))?(?![0-9])")


def as_of_from_name(stem: str) -> datetime | None:
    for match in reversed(list(_STAMP.finditer(stem))):
        day, clock = match.groups()
        try:
            return datetime.strptime(day + (clock or "").ljust(6, "0"), "%Y%m%d%H%M%S")
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class MalformedRecord:
    """A record the parser could not split into the header's columns (`line`: its physical
    line in the file, when the parser knows it)."""

    line: int | None
    text: str
    reason: str


@dataclass
class NormalisedExtract:
    """What `normalise` made of a landed file."""

    file: LandedFile
    sha256: str
    bytes: int
    file_format: str
    encoding: str
    staging: Location
    rows: int = 0
    malformed: list[MalformedRecord] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def extract_id(self) -> str:
        return extract_id(self.file, self.sha256)


def extract_id(file: LandedFile, sha256: str) -> str:
    """Stable identity of an extract: who sent which file with which content."""
    return f"{file.provider}/{file.stem}/{sha256[:12]}"


def discover(landing: Location, resource: Resource) -> list[LandedFile]:
    """Files waiting for `resource`, ordered by provider and name (so extracts apply in date
    order). A folder named after a department that is not a source yields its files too, so
    that they are rejected with a reason rather than ignored."""
    root = landing.child(resource.theme, resource.name)
    found = []
    for location in root.files():
        relative = location.uri[len(root.uri) + 1 :].split("/")
        if len(relative) != 2 or relative[1].startswith("."):
            continue
        found.append(LandedFile(location, resource.qualified_name, relative[0]))
    return sorted(found, key=lambda f: (f.provider, f.name))


def staging_location(warehouse: Location, file: LandedFile, sha256: str) -> Location:
    """Where a landed file's records are staged for the engine:
    `<warehouse>/_staging/<theme.resource>/<provider>__<stem>__<sha256[:12]>.parquet`.

    The engine reads the staging file, and it may run elsewhere than this process (a Sail
    cluster's workers, a Spark Connect server): the warehouse is storage it reaches, since
    it writes the tables there, while the landing zone is read by govlake alone and may be
    a folder only this machine sees."""
    name = "__".join((file.provider, file.stem, sha256[:12]))
    return warehouse.child("_staging", file.resource, f"{name}.parquet")


def file_digest(location: Location) -> tuple[str, int, bool]:
    """sha256, size, and whether the whole file decodes as UTF-8, in one streaming pass."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    utf8 = True
    with location.open_read() as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    return digest.hexdigest(), size, utf8


def normalise(
    file: LandedFile,
    resource: Resource,
    staging: Location,
    *,
    digest: tuple[str, int, bool] | None = None,
) -> NormalisedExtract:
    """Read `file` into `staging` (Parquet, the provider's catalogue columns as strings, plus
    `_row`, the record's 1-based position among the file's well-formed records). Raises
    `ExtractRejected`."""
    file_format = FORMATS.get(file.suffix)
    if file.provider not in resource.sources:
        raise ExtractRejected(
            file.location,
            f"{file.provider} is not a source of {resource.qualified_name} "
            f"(catalogued sources: {', '.join(resource.sources)})",
            "unknown_provider",
        )
    if file_format is None:
        raise ExtractRejected(
            file.location,
            f"unsupported file type {file.suffix or '(none)'}; expected one of "
            f"{', '.join(sorted(FORMATS))}",
            "format",
        )
    sha256, size, utf8 = digest or file_digest(file.location)
    if size == 0:
        raise ExtractRejected(file.location, "the file is empty (no header, no records)", "empty")
    encoding = "utf-8" if utf8 or file_format == "parquet" else "gb18030"
    result = NormalisedExtract(file, sha256, size, file_format, encoding, staging)
    columns = resource.supplied_items(file.provider)
    operation = resource.delivery(file.provider).operation
    if operation is not None:
        columns = [*columns, operation.column]
    try:
        if file_format == "csv":
            batches = _csv_batches(file, columns, encoding, result)
        elif file_format == "jsonl":
            batches = _jsonl_batches(file, columns, encoding, result)
        else:
            batches = _parquet_batches(file, columns, result)
        _write_staging(batches, columns, result)
    except ExtractRejected:
        staging.delete()
        raise
    except (pa.ArrowException, UnicodeDecodeError, OSError, ValueError) as exc:
        staging.delete()
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, UnicodeDecodeError) or "decode" in detail.lower():
            raise ExtractRejected(
                file.location, f"the file is neither UTF-8 nor GBK text: {detail}", "encoding"
            ) from exc
        raise ExtractRejected(
            file.location, f"cannot parse as {file_format}: {detail}", "parse"
        ) from exc
    return result


def _check_header(
    file: LandedFile, header: list[str], columns: list[str], result: NormalisedExtract
) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        # The header is the department's text: quoted cut and counted, so that a huge header
        # line does not go whole into ops.extracts and the kept file's reason.
        raise ExtractRejected(
            file.location,
            f"header lacks items {', '.join(missing)} that {file.provider} supplies per the "
            f"catalogue (found {len(header)} item(s): {quote_list(header) or 'nothing'})",
            "header",
        )
    result.ignored_columns = [c for c in header if c not in columns]


def _csv_batches(
    file: LandedFile, columns: list[str], encoding: str, result: NormalisedExtract
) -> Iterator[pa.RecordBatch]:
    with file.location.open_read() as handle:
        first = handle.read(_CHUNK)
    header_line = first.split(b"\n", 1)[0].rstrip(b"\r")
    header_text = header_line.decode(encoding, errors="strict").lstrip("\ufeff")
    header = [h.strip().strip('"') for h in header_text.split(",")]
    _check_header(file, header, columns, result)
    malformed: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(row)
        return "skip"

    stream = file.location.open_read()
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(
            encoding=encoding,
            use_threads=False,
            block_size=8 << 20,
            skip_rows=1,
            column_names=header,
        ),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    with stream:
        for batch in reader:
            for row in malformed:
                result.malformed.append(
                    MalformedRecord(
                        line=row.number,
                        text=row.text,
                        reason=f"{row.actual_columns} fields where the header has "
                        f"{row.expected_columns}",
                    )
                )
            malformed.clear()
            yield batch
    for row in malformed:
        result.malformed.append(
            MalformedRecord(
                None,
                row.text,
                f"{row.actual_columns} fields where the header has {row.expected_columns}",
            )
        )


def _jsonl_batches(
    file: LandedFile, columns: list[str], encoding: str, result: NormalisedExtract
) -> Iterator[pa.RecordBatch]:
    decoder = codecs.getincrementaldecoder(encoding)()
    buffer: dict[str, list[Any]] = {c: [] for c in columns}
    count = 0
    number = 0
    seen_keys: set[str] = set()
    pending = ""
    with file.location.open_read() as handle:
        while True:
            chunk = handle.read(_CHUNK)
            text = pending + decoder.decode(chunk, final=not chunk)
            lines = text.split("\n")
            pending = lines.pop() if chunk else ""
            if not chunk and lines and lines[-1] == "":
                lines.pop()
            for line in lines:
                number += 1
                stripped = line.strip()
                if not stripped:
                    continue
                try:
                    record = json.loads(stripped)
                    if not isinstance(record, dict):
                        raise ValueError("a record must be a JSON object")
                except ValueError as exc:
                    result.malformed.append(MalformedRecord(number, line, str(exc)))
                    continue
                if not seen_keys:
                    _check_header(file, list(record), columns, result)
                seen_keys.update(record)
                for column in columns:
                    value = record.get(column)
                    buffer[column].append(None if value in (None, "") else str(value))
                count += 1
                if count == _BATCH_ROWS:
                    yield pa.RecordBatch.from_pydict(buffer)
                    buffer = {c: [] for c in columns}
                    count = 0
            if not chunk:
                break
    if count:
        yield pa.RecordBatch.from_pydict(buffer)


def _parquet_batches(
    file: LandedFile, columns: list[str], result: NormalisedExtract
) -> Iterator[pa.RecordBatch]:
    with file.location.open_read() as handle:
        parquet = pq.ParquetFile(pa.BufferReader(handle.read()))
    _check_header(file, parquet.schema_arrow.names, columns, result)
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
        yield pa.RecordBatch.from_arrays(
            [_as_string(batch.column(c)) for c in columns], names=columns
        )


def _as_string(array: pa.Array) -> pa.Array:
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    return array.cast(pa.string())


def _write_staging(
    batches: Iterator[pa.RecordBatch], columns: list[str], result: NormalisedExtract
) -> None:
    """Write well-formed records, then the malformed ones as raw text with their parse error,
    so that bronze keeps every record the file carried."""
    schema = pa.schema(
        [
            *(pa.field(c, pa.string()) for c in columns),
            pa.field("_row", pa.int64()),
            pa.field("_raw", pa.string()),
            pa.field("_parse_error", pa.string()),
        ]
    )
    position = 0
    with result.staging.open_write() as sink, pq.ParquetWriter(sink, schema) as writer:
        for batch in batches:
            rows = batch.num_rows
            if not rows:
                continue
            row_numbers = pa.array(range(position + 1, position + rows + 1), pa.int64())
            nulls = pa.nulls(rows, pa.string())
            arrays = [batch.column(c) for c in columns]
            writer.write_batch(
                pa.RecordBatch.from_arrays([*arrays, row_numbers, nulls, nulls], schema=schema)
            )
            position += rows
        if result.malformed:
            count = len(result.malformed)
            errors = [
                (f"line {m.line}: " if m.line is not None else "") + m.reason
                for m in result.malformed
            ]
            writer.write_batch(
                pa.RecordBatch.from_arrays(
                    [
                        *(pa.nulls(count, pa.string()) for _ in columns),
                        pa.nulls(count, pa.int64()),
                        pa.array([m.text for m in result.malformed], pa.string()),
                        pa.array(errors, pa.string()),
                    ],
                    schema=schema,
                )
            )
    result.rows = position
