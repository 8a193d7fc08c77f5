"""Reading extracts before the engine sees them: encodings, malformed records, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govlake.core.catalog import Catalog
from govlake.core.location import Location
from govlake.lake.landing import ExtractRejected, LandedFile, discover, normalise

HEADER = "citizen_id,name,marital_status\n"
ROWS = "11010519491231002X,张三,20\n110101199003077793,李四,10\n"


def _landed(
    tmp_path: Path, name: str, content: bytes, provider: str = "civil_affairs"
) -> LandedFile:
    path = tmp_path / "landing" / "population" / "residents" / provider / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return LandedFile(Location.parse(path), "population.residents", provider)


def _staged(tmp_path: Path) -> Location:
    return Location.parse(tmp_path / "staging" / "x.parquet")


def test_gbk_and_utf8_read_the_same(tmp_path: Path, catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    text = HEADER + ROWS
    utf8 = normalise(_landed(tmp_path, "a.csv", text.encode("utf-8")), residents, _staged(tmp_path))
    utf8_rows = pq.read_table(utf8.staging.uri).to_pylist()
    gbk_file = _landed(tmp_path, "b.csv", text.encode("gbk"))
    with pytest.raises(UnicodeDecodeError):
        gbk_file.location.read_text("utf-8")
    staged = Location.parse(tmp_path / "staging" / "y.parquet")
    gbk = normalise(gbk_file, residents, staged)
    assert gbk.encoding == "gb18030" and utf8.encoding == "utf-8"
    assert pq.read_table(staged.uri).to_pylist() == utf8_rows
    assert utf8_rows[0]["name"] == "张三" and utf8_rows[1]["_row"] == 2


def test_ragged_records_are_kept_not_lost(tmp_path: Path, catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    content = HEADER + "11010519491231002X,张三,20\nonly,two\n110101199003077793,李四,10,extra\n"
    result = normalise(_landed(tmp_path, "a.csv", content.encode()), residents, _staged(tmp_path))
    assert result.rows == 1
    assert [m.text for m in result.malformed] == ["only,two", "110101199003077793,李四,10,extra"]
    staged = pq.read_table(result.staging.uri).to_pylist()
    assert len(staged) == 3
    assert (
        staged[1]["_raw"] == "only,two"
        and "2 fields where the header has 3" in staged[1]["_parse_error"]
    )


def test_undecodable_file_is_rejected_with_reason(tmp_path: Path, catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    file = _landed(
        tmp_path, "a.csv", b"citizen_id,name,marital_status\n\xff\xfe\x00\x81\xff garbage"
    )
    with pytest.raises(ExtractRejected) as caught:
        normalise(file, residents, _staged(tmp_path))
    assert caught.value.rule == "encoding"
    assert "neither UTF-8 nor GBK" in caught.value.reason
    assert not _staged(tmp_path).exists()


@pytest.mark.parametrize(
    ("name", "content", "rule", "text"),
    [
        ("a.csv", b"", "empty", "empty"),
        ("a.csv", "citizen_id,name\n1,张三\n".encode(), "header", "marital_status"),
        ("a.xlsx", b"PK\x03\x04", "format", "unsupported file type .xlsx"),
        ("a.parquet", b"not parquet at all", "parse", "cannot parse as parquet"),
    ],
)
def test_unreadable_files(  # type: ignore[no-untyped-def]
    tmp_path: Path, catalog: Catalog, name, content, rule, text
) -> None:
    with pytest.raises(ExtractRejected) as caught:
        normalise(
            _landed(tmp_path, name, content), catalog.get("population.residents"), _staged(tmp_path)
        )
    assert caught.value.rule == rule
    assert text in caught.value.reason


def test_unknown_provider_is_rejected(tmp_path: Path, catalog: Catalog) -> None:
    file = _landed(tmp_path, "a.csv", (HEADER + ROWS).encode(), provider="taxation")
    with pytest.raises(ExtractRejected, match="taxation is not a source"):
        normalise(file, catalog.get("population.residents"), _staged(tmp_path))


def test_parquet_and_jsonl(tmp_path: Path, catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    table = pa.table(
        {"citizen_id": ["11010519491231002X"], "name": ["张三"], "marital_status": [20], "x": [1]}
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    result = normalise(
        _landed(tmp_path, "a.parquet", path.read_bytes()), residents, _staged(tmp_path)
    )
    assert result.ignored_columns == ["x"]
    assert pq.read_table(result.staging.uri).to_pylist()[0]["marital_status"] == "20"
    lines = [
        json.dumps({"citizen_id": "11010519491231002X", "name": "张三", "marital_status": "20"}),
        "{not json",
        json.dumps({"citizen_id": "110101199003077793", "name": "李四", "marital_status": None}),
    ]
    content = ("\n".join(lines) + "\n").encode("gbk")
    staged = Location.parse(tmp_path / "staging" / "j.parquet")
    result = normalise(_landed(tmp_path, "a.jsonl", content), residents, staged)
    assert result.rows == 2 and result.malformed[0].line == 2
    rows = pq.read_table(staged.uri).to_pylist()
    assert rows[1]["name"] == "李四" and rows[1]["marital_status"] is None


def test_discover_orders_files_and_ignores_hidden(tmp_path: Path, catalog: Catalog) -> None:
    residents = catalog.get("population.residents")
    _landed(tmp_path, "r_20261121.csv", b"x", provider="public_security")
    _landed(tmp_path, "r_20261120.csv", b"x", provider="public_security")
    _landed(tmp_path, ".partial", b"x", provider="public_security")
    found = discover(Location.parse(tmp_path / "landing"), residents)
    assert [f.name for f in found] == ["r_20261120.csv", "r_20261121.csv"]


@pytest.mark.parametrize(
    ("name", "header", "shown"),
    [
        # One header name of 200 kB: quoted cut, with its length.
        ("a.csv", "citizen_id," + "x" * 200_000 + ",name", "x" * 64 + "…(200000 chars)"),
        # 10,000 columns: the first names, then how many more.
        ("a.csv", ",".join(["citizen_id", "name", *(f"c{i}" for i in range(9_998))]), "9950 more"),
        (
            "a.jsonl",
            json.dumps({"citizen_id": "1", "name": "n", "y" * 200_000: "2"}),
            "y" * 64 + "…(200000 chars)",
        ),
    ],
)
def test_a_huge_header_is_rejected_with_a_short_reason(
    tmp_path: Path, catalog: Catalog, name: str, header: str, shown: str
) -> None:
    """The reason goes into ops.extracts and the kept file's `.reason.json`: it names what is
    missing without carrying the department's header whole."""
    rows = "" if name.endswith(".jsonl") else "\n11010519491231002X," + "v," * 3
    file = _landed(tmp_path, name, (header + rows + "\n").encode())
    with pytest.raises(ExtractRejected) as caught:
        normalise(file, catalog.get("population.residents"), _staged(tmp_path))
    reason = caught.value.reason
    assert caught.value.rule == "header"
    assert len(reason.encode()) < 5_000, len(reason)
    assert reason.startswith("header lacks items marital_status")
    assert shown in reason
    assert file.location.exists() and not _staged(tmp_path).exists()
