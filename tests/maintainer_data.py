"""Small MediPim-shaped catalogs for the maintainer's tests, with the feed's type drift built in."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson


def product_id(n: int) -> str:
    return f"M{n:09X}"


def product(n: int, version: int = 0, *, status: str = "active") -> dict[str, Any]:
    """Product ``n``; a different ``version`` changes its name and update time."""
    rng = random.Random(n * 1000 + version)
    localized = n % 2 == 0
    name = f"Product {n} v{version}"
    record: dict[str, Any] = {
        "id": product_id(n),
        "status": status,
        "name": {"en": name} if localized else name,
        "seoName": {"en": f"product-{n}"},
        "organizations": [
            {"id": n % 7, "name": f"Org {n % 7}" if localized else {"en": f"Org {n % 7}"}}
        ],
        "brands": [
            {"id": n % 5, "name": {"en": f"Brand {n % 5}"} if localized else f"Brand {n % 5}"}
        ],
        "ean": [f"0{n:012d}"],
        "eanGtin13": f"{n:013d}" if localized else n,
        "eanGtin14": f"{n:014d}",
        "meta": {
            "createdAt": 1_600_000_000 + n,
            "updatedAt": 1_700_000_000 + n + version,
            "embedUrl": f"https://embed.example/{rng.getrandbits(64):x}",
        },
        "descriptions": [
            {
                "id": n,
                "type": "full_description",
                "content": {"en": "<p>" + "x" * (n % 50) + "</p>"},
            }
        ],
    }
    if n % 3 == 0:
        record.update(
            {
                "artgId": str(100_000 + n // 2),
                "pbs": f"{n % 9000:04d}A",
                "snomedMpp": str(10**15 + n),
                "snomedTpp": 10**16 + n,
                "gs1Category": {"code": "10000" + str(n % 10), "level": 4},
            }
        )
    if status == "replaced":
        record["replacement"] = product_id(n + 1_000_000)
        for key in ("ean", "eanGtin13", "eanGtin14"):
            record.pop(key, None)
    return record


def reembed(record: dict[str, Any], salt: int) -> dict[str, Any]:
    """The same product as a later download shows it: only the pre-signed URL differs."""
    return {**record, "meta": {**record["meta"], "embedUrl": f"https://embed.example/{salt:x}"}}


def lines(products: list[dict[str, Any]]) -> list[bytes]:
    total = len(products)
    return [
        orjson.dumps({"meta": {"total": total, "index": i}, "result": p})
        for i, p in enumerate(products)
    ]


def write(path: Path, products: list[dict[str, Any]] | Iterable[bytes]) -> Path:
    items = list(products)
    data = lines(items) if items and isinstance(items[0], dict) else items  # type: ignore[arg-type]
    path.write_bytes(b"".join(line + b"\n" for line in data))  # type: ignore[operator]
    return path


def expected_row(record: dict[str, Any]) -> dict[str, Any]:
    """The mapped columns as the tests expect them, written out independently of the mapper."""
    from datetime import UTC, datetime

    def loc(value: Any) -> Any:
        return value["en"] if isinstance(value, dict) else value

    ean13 = record.get("eanGtin13")
    gs1 = record.get("gs1Category")
    snomed_tpp = record.get("snomedTpp")
    return {
        "id": record["id"],
        "name": loc(record["name"]),
        "status": record["status"],
        "organization": loc(record["organizations"][0]["name"]),
        "brand": loc(record["brands"][0]["name"]),
        "eanGtin13": f"{ean13:013d}" if isinstance(ean13, int) else ean13,
        "eanGtin14": record.get("eanGtin14"),
        "artgId": record.get("artgId"),
        "pbs": record.get("pbs"),
        "snomedMpp": record.get("snomedMpp"),
        "snomedTpp": str(snomed_tpp) if snomed_tpp is not None else None,
        "gs1Category": gs1["code"] if gs1 else None,
        "createdAt": datetime.fromtimestamp(record["meta"]["createdAt"], UTC),
        "metaUpdatedAt": datetime.fromtimestamp(record["meta"]["updatedAt"], UTC),
        "raw": record,
    }


def expected_feed(stored: set[str], changes: Any) -> dict[str, str]:
    """The change-feed kind of each product a simulator ``ChangeSet`` touches, applied to a
    table that holds ``stored`` (live, all current): what an Incremental run must record."""
    kinds = dict.fromkeys(changes.changed, "updated")
    kinds |= dict.fromkeys(changes.replaced | changes.status_changed, "status_changed")
    kinds |= dict.fromkeys(changes.touched - stored, "inserted")
    return kinds
