"""The maintainer's pure parts: line scanning, lenient mapping, chunking, classification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest

from catalogsync.maintainer.chunks import IndexSequence, RawChunk, plan, prepare, split_chunks
from catalogsync.maintainer.deletes import (
    TooManyDeletes,
    check_fraction,
    check_window,
    withheld_because,
)
from catalogsync.maintainer.records import COLUMNS, InvalidLine, scan, to_row
from tests import maintainer_data as data


def wrapped(product: object, index: int = 0, total: int = 1) -> bytes:
    return orjson.dumps({"meta": {"total": total, "index": index}, "result": product})


def row(product: dict[str, object]) -> dict[str, object]:
    return dict(zip(COLUMNS, to_row(scan(wrapped(product)))[0], strict=True))


def test_fast_scan_reads_id_and_wrapper_without_decoding() -> None:
    record = data.product(7)
    scanned = scan(wrapped(record, index=3, total=10))
    assert (scanned.id, scanned.index, scanned.total) == (record["id"], 3, 10)
    assert scanned.product is None  # not decoded
    assert orjson.loads(scanned.body) == record


def test_hash_ignores_embed_url_and_position_but_not_content() -> None:
    record = data.product(7)
    first = scan(wrapped(record, index=3, total=10)).hash
    assert scan(wrapped(data.reembed(record, salt=99), index=8, total=11)).hash == first
    assert scan(wrapped(data.product(7, version=1), index=3, total=10)).hash != first
    changed_photo = {**record, "photos": [{"id": 1}]}
    assert scan(wrapped(changed_photo, index=3, total=10)).hash != first


def test_only_meta_embed_url_is_left_out_of_the_hash() -> None:
    record = data.product(7)

    def video(url: str, meta_embed: bool = True) -> dict[str, object]:
        product = {**record, "links": [{"linkType": "video", "embedUrl": url}]}
        if not meta_embed:
            product["meta"] = {k: v for k, v in record["meta"].items() if k != "embedUrl"}
        return product

    first, second = scan(wrapped(video("https://v/a"))), scan(wrapped(video("https://v/b")))
    assert first.hash != second.hash
    assert scan(wrapped(data.reembed(video("https://v/a"), salt=3))).hash == first.hash
    # A single embedUrl that is not meta's: the row's hash must still see it change.
    alone_a, alone_b = (
        to_row(scan(wrapped(video(url, meta_embed=False))))[0][COLUMNS.index("content_hash")]
        for url in ("https://v/a", "https://v/b")
    )
    assert alone_a != alone_b


def test_unusual_layout_is_decoded_and_hashed_canonically() -> None:
    record = data.product(8)
    spaced = orjson.dumps({"result": record, "meta": {"index": 2, "total": 5}})
    scanned = scan(spaced)
    assert scanned.product == record
    assert (scanned.id, scanned.index, scanned.total) == (record["id"], 2, 5)
    reordered = dict(reversed(list(record.items())))
    other = scan(orjson.dumps({"result": data.reembed(reordered, 5), "meta": {}}))
    assert other.hash == scanned.hash
    assert other.total is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"meta": {"total": 1, "index": 0}}', "no 'result'"),
        (b'{"result": "M000000001"}', "no 'result'"),
        (b'{"result": {"name": "x"}}', "result.id"),
        (b'{"result": {"id": 42}}', "result.id"),
        (b'{"result": {"id": ""}}', "result.id"),
        (b'{"meta":{"total":1,"index":0},"result":{"id":"M1", "name": }}', "not JSON"),
    ],
)
def test_invalid_lines(line: bytes, message: str) -> None:
    with pytest.raises(InvalidLine, match=message):
        to_row(scan(line))


def test_lenient_mapping_of_drifting_types() -> None:
    values = row(
        {
            "id": "M000000001",
            "name": {"fr": "Nom"},
            "status": "active",
            "organizations": [{"name": ""}, {"name": {"en": "Second Org"}}],
            "brands": [{"name": "Plain Brand"}],
            "eanGtin13": 609580872276,
            "eanGtin14": ["", "00609580872276"],
            "artgId": 123456,
            "pbs": " 1234A ",
            "snomedMpp": 1.0e15,
            "snomedTpp": True,
            "gs1Category": "10000123",
            "meta": {"createdAt": 1_600_000_000_000, "updatedAt": "2024-05-01T10:00:00"},
        }
    )
    assert values["name"] == "Nom"
    assert values["organization"] == "Second Org"
    assert values["brand"] == "Plain Brand"
    assert values["eanGtin13"] == "0609580872276"
    assert values["eanGtin14"] == "00609580872276"
    assert values["artgId"] == "123456"
    assert values["pbs"] == "1234A"
    assert values["snomedMpp"] == "1000000000000000"
    assert values["snomedTpp"] is None
    assert values["gs1Category"] == "10000123"
    assert values["createdAt"] == datetime.fromtimestamp(1_600_000_000, UTC)
    assert values["metaUpdatedAt"] == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_missing_fields_map_to_null() -> None:
    values = row({"id": "M000000002"})
    assert values["id"] == "M000000002"
    assert all(values[c] is None for c in COLUMNS if c not in ("id", "raw", "content_hash"))
    assert orjson.loads(values["raw"]) == {"id": "M000000002"}  # type: ignore[arg-type]


def test_nul_characters_are_replaced_in_decoded_strings_and_counted() -> None:
    """PostgreSQL's text and jsonb cannot hold U+0000: each one, in any string or key, becomes
    U+FFFD, and the line says how many it had."""
    product = {"id": "M000000003", "name": "bad\x00name", "x": ["\x00"], "k\x00": {"y": "\x00\x00"}}
    values, replaced = to_row(scan(wrapped(product)))
    mapped = dict(zip(COLUMNS, values, strict=True))
    assert mapped["name"] == "bad\ufffdname"
    assert orjson.loads(mapped["raw"]) == {
        "id": "M000000003",
        "name": "bad\ufffdname",
        "x": ["\ufffd"],
        "k\ufffd": {"y": "\ufffd\ufffd"},
    }
    assert replaced == 5


def test_a_literal_backslash_u0000_is_text_and_kept_byte_for_byte() -> None:
    product = {"id": "M000000004", "name": "type \\u0000 to match", "n": "\\\x00"}
    line = wrapped(product)
    assert b'"type \\\\u0000 to match"' in line
    values, replaced = to_row(scan(line))
    mapped = dict(zip(COLUMNS, values, strict=True))
    assert mapped["name"] == "type \\u0000 to match"
    assert orjson.loads(mapped["raw"])["n"] == "\\\ufffd"
    assert replaced == 1
    plain = {"id": "M000000005", "name": "type \\u0000 to match"}
    values, replaced = to_row(scan(wrapped(plain)))
    assert bytes(values[COLUMNS.index("raw")]) == orjson.dumps(plain)  # untouched
    assert replaced == 0


async def _source(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_split_chunks_numbers_lines_across_reads() -> None:
    text = b"a1\nb2\n\nd4\ne5\nf6\ng7"  # 7 lines, no final newline, one blank
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    chunks = [c async for c in split_chunks(_source(*pieces), 3)]
    assert [(c.number, c.first_line, c.last_line) for c in chunks] == [
        (0, 1, 3),
        (1, 4, 6),
        (2, 7, 7),
    ]
    assert chunks[0].lines == [(1, b"a1"), (2, b"b2")]
    assert chunks[1].lines == [(4, b"d4"), (5, b"e5"), (6, b"f6")]
    assert chunks[2].lines == [(7, b"g7")]
    exact = [c async for c in split_chunks(_source(b"x\ny\n"), 2)]
    assert [(c.number, c.last_line) for c in exact] == [(0, 2)]
    assert [c async for c in split_chunks(_source(b""), 2)] == []


def test_plan_classifies_against_stored_hashes() -> None:
    products = [data.product(n) for n in range(5)]
    lines = [(i + 1, wrapped(p, i, 5)) for i, p in enumerate(products)]
    lines.append((6, wrapped(data.product(1, version=2), 1, 5)))  # duplicate: last wins
    lines.append((7, b"oops"))
    prepared = prepare(RawChunk(0, 1, 7, lines))
    hashes = {pid: s.hash for pid, (_, s) in prepared.records.items()}
    stored: dict[str, tuple[bytes | None, bool]] = {
        products[0]["id"]: (hashes[products[0]["id"]], False),  # unchanged
        products[1]["id"]: (hashes[products[1]["id"]], False),  # unchanged: v2 won in-chunk
        products[2]["id"]: (b"old", False),  # changed
        products[3]["id"]: (hashes[products[3]["id"]], True),  # came back
    }
    prepared.earlier = {products[0]["id"]}
    result = plan(prepared, stored)
    assert result.counts == {
        "processed": 7,
        "inserted": 1,
        "updated": 2,
        "skipped": 1,
        "duplicates": 2,
        "invalid": 1,
        "undeleted": 1,
        "nul_replaced": 0,
    }
    assert [r[0] for r in result.new_rows] == [products[4]["id"]]
    assert sorted(r[0] for r in result.changed_rows) == [products[2]["id"], products[3]["id"]]
    assert [r[0] for r in result.rejects] == [7]


def test_delete_fraction() -> None:
    check_fraction(5, 100, 0.05)
    check_fraction(0, 0, 0.0)
    with pytest.raises(TooManyDeletes, match="6 of 100"):
        check_fraction(6, 100, 0.05)


def test_deletes_need_a_complete_catalog_of_valid_lines() -> None:
    assert withheld_because(None, 0) == ""
    assert "incomplete: gap" in withheld_because("gap", 0)
    assert "2 line(s) were invalid" in withheld_because(None, 2)


def feed(sequence: IndexSequence, *entries: tuple[int | None, int | None]) -> IndexSequence:
    for line, (index, total) in enumerate(entries, start=1):
        sequence.feed(line, index, total)
    return sequence


def test_a_catalog_is_complete_only_with_every_index_in_order() -> None:
    assert feed(IndexSequence(), (0, 3), (1, 3), (2, 3)).incomplete_because() is None
    assert "no products" in str(IndexSequence().incomplete_because())
    gap = feed(IndexSequence(), (0, 4), (1, 4), (3, 4)).incomplete_because()
    assert "line 3 has meta.index 3 where 2 was due" in str(gap)
    short = feed(IndexSequence(), (0, 4), (1, 4)).incomplete_because()
    assert "ends after meta.index 1 of meta.total 4" in str(short)
    assert "no meta.index" in str(feed(IndexSequence(), (None, None)).incomplete_because())
    changed = feed(IndexSequence(), (0, 2), (1, 3)).incomplete_because()
    assert "meta.total 3 after 2" in str(changed)
    unreadable = IndexSequence()
    unreadable.feed(1, 0, 3)
    unreadable.feed(2, None, None, readable=False)  # held index 1, or was junk between lines
    unreadable.feed(3, 2, 3)
    assert unreadable.incomplete_because() is None
    repeated = feed(IndexSequence(), (0, 4), (1, 4), (1, 4)).problem
    assert "line 3 has meta.index 1 where 2 was due" in str(repeated)


def test_the_window_bounds_what_is_left_against_its_largest_live_count() -> None:
    check_window(47, 951, None, 0.05)  # no recent complete run: the per-run limit only
    check_window(40, 1000, 1000, 0.05)
    check_window(10, 1010, 1000, 0.05)  # grown since
    with pytest.raises(TooManyDeletes, match="904 of the 1000"):
        check_window(47, 951, 1000, 0.05)
