"""The two response formats of the sharing protocol and which one a call is answered in.

A client says what it can read in the `delta-sharing-capabilities` header (PROTOCOL.md,
"Delta Sharing Capabilities Header"): `responseformat=delta,parquet;readerfeatures=...`, keys
and values case-insensitive; no header means `parquet`.

- `parquet`: each line wraps the sharing protocol's own objects and a file is read whole. A
  table version whose files carry deletion vectors cannot be read so (their deleted rows would
  come back), nor one whose protocol needs another reader feature: such a call is refused
  (`UnsupportedFormat`, as the reference server refuses it), never answered with those files.
- `delta`: each line wraps the Delta log's own actions (`deltaProtocol`, `deltaMetadata`,
  `deltaSingleAction`), which the client replays into a log of its own, so it applies the
  deletion vectors itself. The reader features the answer needs must be among those the
  client lists.

A client that takes both gets parquet for a table whose protocol needs no reader feature
(minimum reader version 1), else delta (the reference server's rule).

`includeendstreamaction=true` asks that a query's or a changes query's answer end with the
end-stream action (next page token, refresh token, earliest URL expiry); the answer's header
then says `includeendstreamaction=true` too, as the Spark client checks. Refusals carry no
capabilities header: PROTOCOL.md gives error answers a JSON body only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from govlake.core.errors import GovlakeError
from govlake.lake.deltalog import DataFile

HEADER = "delta-sharing-capabilities"
PARQUET, DELTA = "parquet", "delta"
END_STREAM = "includeendstreamaction"
#: Reader features that only the server, which reads the log, has to know.
SERVER_SIDE = frozenset({"v2checkpoint", "vacuumprotocolcheck", "deletionvectors", "columnmapping"})


class InvalidCapabilities(GovlakeError, ValueError):
    """A capabilities header that names no response format the server knows."""


class UnsupportedFormat(GovlakeError):
    """A call whose answer the client cannot read in the formats or features it lists."""


@dataclass(frozen=True)
class Capabilities:
    """What a client can read: response formats and Delta reader features, lower case."""

    formats: frozenset[str]
    reader_features: frozenset[str]
    #: The answer is to end with the end-stream action.
    end_stream: bool = False

    @classmethod
    def of(cls, header: str | None) -> Capabilities:
        """The capabilities `header` lists (None or empty: parquet only)."""
        values: dict[str, set[str]] = {}
        for capability in (header or "").split(";"):
            key, equals, listed = capability.partition("=")
            if equals:
                found = {v.strip().lower() for v in listed.split(",") if v.strip()}
                values.setdefault(key.strip().lower(), set()).update(found)
        formats = values.get("responseformat", {PARQUET})
        if not formats & {PARQUET, DELTA}:
            raise InvalidCapabilities(
                f"{HEADER}: responseformat {','.join(sorted(formats))!r} is neither "
                f"{PARQUET!r} nor {DELTA!r}"
            )
        return cls(frozenset(formats & {PARQUET, DELTA}),
                   frozenset(values.get("readerfeatures", set())),
                   "true" in values.get(END_STREAM, set()))  # fmt: skip

    def respond_in(self, protocol: Mapping[str, Any]) -> str:
        """The format to answer in, for a table with the Delta `protocol`."""
        if self.formats == {DELTA}:
            return DELTA
        if self.formats == {PARQUET}:
            return PARQUET
        return PARQUET if int(protocol.get("minReaderVersion", 1)) == 1 else DELTA


def response_header(format_: str, *, end_stream: bool = False) -> dict[str, str]:
    """The header an answer says its format with, and that it ends with the end-stream
    action."""
    found = f"responseformat={format_}"
    return {HEADER: f"{found};{END_STREAM}=true" if end_stream else found}


def needed_features(
    protocol: Mapping[str, Any], configuration: Mapping[str, str], files: Iterable[DataFile]
) -> list[str]:
    """The reader features a client needs to read `files` of a table with this `protocol` and
    `configuration` right: deletion vectors when a file carries one, column mapping when the
    table maps its columns, and any other reader feature of the protocol that only a reader
    can apply."""
    needed = []
    if any(f.deletion_vector for f in files):
        needed.append("deletionVectors")
    if configuration.get("delta.columnMapping.mode", "none") != "none":
        needed.append("columnMapping")
    needed += [f for f in protocol.get("readerFeatures") or [] if f.lower() not in SERVER_SIDE]
    return needed


def check_readable(caps: Capabilities, format_: str, needed: list[str], what: str) -> None:
    """Refuse (`UnsupportedFormat`) an answer in `format_` that the client could not read
    right: in parquet, any needed reader feature; in delta, one the client does not list."""
    if format_ == PARQUET and needed:
        raise UnsupportedFormat(
            f"{what} needs the reader features {', '.join(needed)}, which the parquet response "
            f"format cannot carry (its deleted rows would be read as live): ask for the delta "
            f"response format, header '{HEADER}: responseformat=delta;readerfeatures="
            f"{','.join(f.lower() for f in needed)}'"
        )
    missing = [f for f in needed if f.lower() not in caps.reader_features]
    if format_ == DELTA and missing:
        raise UnsupportedFormat(
            f"{what} needs the reader features {', '.join(missing)}, which the client does not "
            f"list in '{HEADER}: readerfeatures=...'"
        )
