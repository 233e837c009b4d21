"""The MediPim simulator: protocol, data shape, versions and fault injection."""

from __future__ import annotations

import collections
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from catalogsync.dev.simulator import Catalog, Fault, Mutation, SimulatorServer, cache_root
from catalogsync.dev.simulator import main as simulator_main
from catalogsync.dev.simulator.filters import QUERY_CAP, page_slice
from catalogsync.dev.simulator.generator import LINE_OVERHEAD
from tests.plugins.medipim import MedipimFactory

ALL = {"status": ["active", "inactive", "replaced", "no_selection"]}
BY_ID = {"id": "ASC"}


def client(server: SimulatorServer, **options: Any) -> httpx.AsyncClient:
    options.setdefault("timeout", 30)
    return httpx.AsyncClient(
        base_url=server.url,
        auth=server.auth,
        headers={"User-Agent": "catalogsync-tests/1 (tests)"},
        **options,
    )


async def stream(
    server: SimulatorServer, filter_: Any = None, sorting: Any = None
) -> tuple[httpx.Response, list[bytes]]:
    body = {"filter": ALL if filter_ is None else filter_, "sorting": sorting or BY_ID}
    async with client(server) as http:
        response = await http.post("/v4/products/stream", json=body)
    lines = response.content.split(b"\n")
    assert lines[-1] == b"" or response.status_code != 200
    return response, lines[:-1]


async def products(server: SimulatorServer, filter_: Any = None, sorting: Any = None) -> list[Any]:
    response, lines = await stream(server, filter_, sorting)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    return [orjson.loads(line)["result"] for line in lines]


async def read_stream(http: httpx.AsyncClient, into: bytearray) -> None:
    """Read a full-catalog stream into ``into``, keeping what arrived if it fails."""
    body = {"filter": ALL, "sorting": BY_ID}
    async with http.stream("POST", "/v4/products/stream", json=body) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            into += chunk


def without_embed(product: dict[str, Any]) -> dict[str, Any]:
    return product | {"meta": {k: v for k, v in product["meta"].items() if k != "embedUrl"}}


# -- protocol ---------------------------------------------------------------------------------


async def test_stream_lines_wrap_every_active_product_in_id_order(
    medipim: SimulatorServer, medipim_catalog: Catalog
) -> None:
    response, lines = await stream(medipim, {"status": "active"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-json-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    expected = medipim_catalog.ids("active")
    decoded = [orjson.loads(line) for line in lines]
    assert [d["meta"] for d in decoded] == [
        {"total": len(expected), "index": i} for i in range(len(expected))
    ]
    assert [d["result"]["id"] for d in decoded] == expected
    assert all(set(d) == {"meta", "result"} for d in decoded)


async def test_credentials_are_checked(medipim: SimulatorServer) -> None:
    body = {"filter": {"status": "active"}, "sorting": BY_ID}
    async with httpx.AsyncClient(base_url=medipim.url) as http:
        missing = await http.post("/v4/products/stream", json=body)
        wrong = await http.post("/v4/products/stream", json=body, auth=(medipim.key_id, "nope"))
        good = await http.post("/v4/brands/query", json={}, auth=medipim.auth)
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["status"] == 401
        assert response.json()["error"]["code"] == "authentication.not_authenticated"
        assert response.json()["error"]["message"]
    assert good.status_code == 200


async def test_no_match_is_204_with_an_empty_body(medipim: SimulatorServer) -> None:
    response, lines = await stream(medipim, {"id": "M000000000"})
    assert response.status_code == 204
    assert response.content == b""
    assert lines == []


@pytest.mark.parametrize(
    ("body", "status", "paths"),
    [
        (b"{not json", 400, None),
        ({"sorting": BY_ID}, 422, ["filter"]),
        ({"filter": {"status": "active"}}, 422, ["sorting"]),
        ({"filter": {"colour": "red"}, "sorting": BY_ID}, 422, ["filter.colour"]),
        ({"filter": {"status": "gone"}, "sorting": BY_ID}, 422, ["filter.status"]),
        ({"filter": {}, "sorting": {"price": "ASC"}}, 422, ["sorting.price"]),
        ({"filter": {}, "sorting": {"id": "up"}}, 422, ["sorting.id"]),
        ({"filter": {}, "sorting": {"id": "ASC", "createdAt": "ASC"}}, 422, ["sorting"]),
        ({"filter": {"and": [{"brand": "x"}]}, "sorting": BY_ID}, 422, ["filter.and[0].brand"]),
        (
            {"filter": {"updatedSince": {"since": 1}}, "sorting": BY_ID},
            422,
            ["filter.updatedSince"],
        ),
        (
            {"filter": {"id": [f"M{i:09X}" for i in range(1001)]}, "sorting": BY_ID},
            422,
            ["filter.id"],
        ),
    ],
)
async def test_bad_bodies_are_rejected_with_violations(
    medipim: SimulatorServer, body: Any, status: int, paths: list[str] | None
) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    async with client(medipim) as http:
        response = await http.post("/v4/products/stream", content=content)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["status"] == status
    if paths is None:
        assert error["code"] == "bad_request"
    else:
        assert [v["propertyPath"] for v in error["violations"]] == paths


async def test_requests_and_user_agents_are_counted(medipim: SimulatorServer) -> None:
    await stream(medipim, {"status": "active"})
    await stream(medipim, {"id": "M000000000"})
    async with client(medipim) as http:
        await http.post("/v4/brands/query", json={})
    assert medipim.requests == {"products/stream": 2, "brands/query": 1}
    assert medipim.statuses[("products/stream", 204)] == 1
    assert set(medipim.user_agents) == {"catalogsync-tests/1 (tests)"}


async def test_the_rate_limit_is_100_requests_per_key_per_window(
    medipim_factory: MedipimFactory,
) -> None:
    server = await medipim_factory(retry_after=True)
    server.add_key("43", "other-secret")
    async with client(server) as http:
        answers = [(await http.post("/v4/brands/query", json={})).status_code for _ in range(100)]
        limited = await http.post("/v4/products/stream", json={"filter": {}, "sorting": BY_ID})
        other_key = await http.post("/v4/brands/query", json={}, auth=("43", "other-secret"))
    assert answers == [200] * 100
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["retry-after"]) >= 1
    assert other_key.status_code == 200


async def test_rate_limit_window_rolls(medipim_factory: MedipimFactory) -> None:
    now = [1000.0]
    server = await medipim_factory(rate_limit=3, rate_window=60.0, clock=lambda: now[0])
    async with client(server) as http:
        statuses = []
        for step in (0.0, 20.0, 20.0, 10.0, 15.0):  # at t = 0, 20, 40, 50, 65
            now[0] += step
            statuses.append((await http.post("/v4/brands/query", json={})).status_code)
    assert statuses == [200, 200, 200, 429, 200]


# -- filters and sortings ---------------------------------------------------------------------


@pytest.fixture
def records(medipim_catalog: Catalog) -> list[dict[str, Any]]:
    return list(medipim_catalog.records())


def ids_where(records: list[dict[str, Any]], keep: Any) -> list[str]:
    return [r["id"] for r in records if keep(r)]


async def test_filters_select_what_they_say(
    medipim: SimulatorServer, records: list[dict[str, Any]]
) -> None:
    artg = collections.Counter(r["artgId"] for r in records if "artgId" in r)
    shared_artg = next(a for a, n in artg.items() if n > 1)
    upc = next(r for r in records if "eanGtin12" in r)
    pbs = next(r["pbs"] for r in records if "pbs" in r)
    brand = records[0]["brands"][0]["id"]
    org = records[1]["organizations"][0]["id"]
    since = sorted(r["meta"]["updatedAt"] for r in records)[len(records) // 2]
    window = {"from": records[0]["meta"]["createdAt"], "until": records[5]["meta"]["createdAt"]}

    def brands(r: Any) -> list[int]:
        return [b["id"] for b in r["brands"]]

    def orgs(r: Any) -> list[int]:
        return [o["id"] for o in r["organizations"]]

    def updated(r: Any) -> int:
        return int(r["meta"]["updatedAt"])

    def created(r: Any) -> int:
        return int(r["meta"]["createdAt"])

    pair = {records[3]["id"], records[7]["id"]}
    cases: list[tuple[Any, Any]] = [
        ({"status": "inactive"}, lambda r: r["status"] == "inactive"),
        (
            {"status": ["replaced", "no_selection"]},
            lambda r: r["status"] in {"replaced", "no_selection"},
        ),
        ({"id": sorted(pair)}, lambda r: r["id"] in pair),
        ({"ean": upc["ean"][1]}, lambda r: upc["ean"][1] in r.get("ean", [])),
        ({"ean": int(upc["ean"][1])}, lambda r: upc["ean"][1] in r.get("ean", [])),
        ({"eanGtin13": upc["eanGtin13"]}, lambda r: r.get("eanGtin13") == upc["eanGtin13"]),
        ({"artgId": shared_artg}, lambda r: r.get("artgId") == shared_artg),
        ({"pbs": pbs}, lambda r: r.get("pbs") == pbs),
        ({"brand": brand}, lambda r: brand in brands(r)),
        ({"organization": [org]}, lambda r: org in orgs(r)),
        ({"updatedSince": since}, lambda r: updated(r) >= since),
        ({"updatedSince": {"until": since}}, lambda r: updated(r) <= since),
        ({"createdAt": window}, lambda r: window["from"] <= created(r) <= window["until"]),
        (
            {"and": [{"status": "active"}, {"or": [{"brand": brand}, {"organization": org}]}]},
            lambda r: r["status"] == "active" and (brand in brands(r) or org in orgs(r)),
        ),
        ({"not": {"status": "active"}}, lambda r: r["status"] != "active"),
        (
            {"not": [{"status": "active"}, {"status": "inactive"}]},
            lambda r: r["status"] not in {"active", "inactive"},
        ),
        (
            {"and": {"status": "active"}, "updatedSince": since},
            lambda r: r["status"] == "active" and updated(r) >= since,
        ),
    ]
    for filter_, keep in cases:
        expected = ids_where(records, keep)
        assert expected, filter_
        got = [p["id"] for p in await products(medipim, filter_)]
        assert got == expected, filter_


@pytest.mark.parametrize(
    ("sorting", "key", "reverse"),
    [
        ({"id": "DESC"}, lambda p: p["id"], True),
        ({"createdAt": "ASC"}, lambda p: p["meta"]["createdAt"], False),
        ({"touchedAt": "DESC"}, lambda p: p["meta"]["updatedAt"], True),
    ],
)
async def test_sortings_order_the_stream(
    medipim: SimulatorServer, sorting: Any, key: Any, reverse: bool
) -> None:
    got = await products(medipim, {"status": "active"}, sorting)
    values = [key(p) for p in got]
    assert values == sorted(values, reverse=reverse)
    assert len(set(values)) > len(values) // 2


async def test_query_pages_match_the_stream(medipim: SimulatorServer) -> None:
    filter_ = {"status": "inactive"}
    streamed = [p["id"] for p in await products(medipim, filter_)]
    paged: list[str] = []
    async with client(medipim) as http:
        for number in range(len(streamed) // 50 + 1):
            body = {"filter": filter_, "sorting": BY_ID, "page": {"no": number, "size": 50}}
            response = await http.post("/v4/products/query", json=body)
            meta = response.json()["meta"]
            assert meta == {
                "total": len(streamed),
                "page": {"no": number, "offset": number * 50, "size": 50},
            }
            paged += [p["id"] for p in response.json()["results"]]
        bad = await http.post(
            "/v4/products/query", json={"filter": filter_, "sorting": BY_ID, "page": {"size": 20}}
        )
        missing = await http.post("/v4/products/query", json={"filter": filter_, "sorting": BY_ID})
    assert paged == streamed
    assert [v["propertyPath"] for v in bad.json()["error"]["violations"]] == ["page.size"]
    assert [v["propertyPath"] for v in missing.json()["error"]["violations"]] == ["page"]


async def test_query_stops_at_10000_results(medipim_factory: MedipimFactory) -> None:
    server = await medipim_factory(products=QUERY_CAP + 60, line_bytes=1_200)
    async with client(server) as http:

        async def page(number: int) -> Any:
            body = {"filter": ALL, "sorting": BY_ID, "page": {"no": number, "size": 250}}
            return (await http.post("/v4/products/query", json=body)).json()

        last, beyond = await page(39), await page(40)
    assert last["meta"]["total"] == beyond["meta"]["total"] == QUERY_CAP + 60
    assert len(last["results"]) == 250
    assert beyond["results"] == []
    assert page_slice(QUERY_CAP + 60, (39, 250)) == (9750, 10_000)


async def test_small_endpoints_answer(medipim: SimulatorServer, records: list[Any]) -> None:
    product = records[10]
    async with client(medipim) as http:
        brands = (await http.post("/v4/brands/query", json={"page": {"no": 0, "size": 10}})).json()
        orgs = (
            await http.post("/v4/organizations/query", json={"filter": {"type": "supplier"}})
        ).json()
        categories = (await http.post("/v4/public-categories/query", json={})).json()
        families = (
            await http.post("/v4/product-families/query", json={"sorting": {"name": "DESC"}})
        ).json()
        ingredients = (await http.post("/v4/active-ingredients/query", json={})).json()
        found = await http.get("/v4/products/find", params={"id": product["id"]})
        missing = await http.get("/v4/products/find", params={"id": "M000000000"})
        unknown = await http.post("/v4/brands/query", json={"filter": {"colour": 1}})
    assert brands["meta"]["page"] == {"no": 0, "offset": 0, "size": 10}
    assert all(isinstance(b["name"], str) for b in brands["results"])
    assert len(brands["results"]) == 10 < brands["meta"]["total"]
    assert orgs["results"]
    assert all(o["type"] == "supplier" for o in orgs["results"])
    assert "page" not in orgs["meta"]
    assert all("parent" in c and "order" in c for c in categories["results"])
    names = [f["name"]["en"] for f in families["results"]]
    assert names == sorted(names, reverse=True)
    assert ingredients["results"]
    assert without_embed(found.json()["product"]) == without_embed(product)
    assert missing.status_code == 404
    assert unknown.status_code == 422


# -- data shape -------------------------------------------------------------------------------


def test_products_look_like_medipim_au(records: list[dict[str, Any]]) -> None:
    statuses = collections.Counter(r["status"] for r in records)
    assert 0.8 < statuses["active"] / len(records) < 0.9
    assert {"inactive", "replaced", "no_selection"} <= set(statuses)
    assert all(re.fullmatch(r"M[0-9A-F]{9}", r["id"]) for r in records)
    by_id = {r["id"]: r for r in records}
    for r in records:
        assert set(r["name"]) == set(r["seoName"]) == {"en"}
        assert isinstance(r["meta"]["createdAt"], int)
        assert r["meta"]["createdAt"] <= r["meta"]["updatedAt"]
        if r["status"] == "replaced":
            assert r["replacement"] in by_id or r["replacement"].startswith("M")
            assert not {"ean", "eanGtin12", "eanGtin13", "eanGtin14"} & set(r)
        else:
            assert "replacement" not in r
        for key in ("publicPrice", "pharmacistPrice", "manufacturerPrice"):
            assert key not in r or isinstance(r[key], int)
        assert isinstance(r["vat"], float)
    eans = [e for r in records for e in r.get("ean", [])]
    assert all(isinstance(e, str) and e.isdigit() for e in eans)
    assert any(e.startswith("0") for e in eans)
    assert any(
        n > 1
        for n in collections.Counter(r["eanGtin13"] for r in records if "eanGtin13" in r).values()
    )
    medicines = [r for r in records if "artgId" in r]
    assert 0.2 < len(medicines) / len(records) < 0.5
    assert all(re.fullmatch(r"\d{4,5}[A-Z]", r["pbs"]) for r in medicines if "pbs" in r)
    snomed = [v for r in medicines for k, v in r.items() if k.startswith("snomed")]
    assert snomed
    assert all(re.fullmatch(r"\d{14,18}", v) for v in snomed)
    assert not any("pbs" in r or "snomedMpp" in r for r in records if "artgId" not in r)
    assert any(
        isinstance(u["value"], float)
        for r in records
        for k, u in r.items()
        if k.endswith("WithUnit")
    )
    brand_names = [b["name"] for r in records for b in r["brands"]]
    assert any(isinstance(n, str) for n in brand_names)
    assert any(isinstance(n, dict) for n in brand_names)
    orgs = [o for r in records for o in r["organizations"]]
    assert any(isinstance(o["name"], dict) for o in orgs)
    assert all("contactInformation" in o for o in orgs if o["type"] == "supplier")
    assert all(
        c["parent"] is None or isinstance(c["parent"], int)
        for r in records
        for c in r["publicCategories"]
    )
    photos = [p for r in records for p in r.get("photos", [])]
    assert photos
    assert all(len(p["formats"]) == 8 for p in photos)
    assert all(
        u.startswith("https://assets.au.medipim.com/media/")
        for p in photos
        for u in p["formats"].values()
    )
    html = [d["content"]["en"] for r in records for d in r.get("descriptions", [])]
    assert html
    assert all(h.startswith("<") for h in html)
    assert any("<table>" in h for h in html)


async def test_embed_urls_are_signed_per_response(medipim: SimulatorServer) -> None:
    first = await products(medipim, {"status": "active"})
    second = await products(medipim, {"status": "active"})
    assert [without_embed(p) for p in first] == [without_embed(p) for p in second]
    for a, b in zip(first, second, strict=True):
        assert a["meta"]["embedUrl"] != b["meta"]["embedUrl"]
    query = dict(pair.split("=") for pair in first[0]["meta"]["embedUrl"].split("?")[1].split("&"))
    message = f"embed:{first[0]['id']}:{query['t']}".encode()
    mac = hashlib.blake2b(message, key=medipim.key_secret.encode(), digest_size=32).hexdigest()
    assert query["id"] == first[0]["id"]
    assert query["mac"] == mac


def test_same_seed_same_bytes_other_seed_other_catalog(tmp_path: Path) -> None:
    one = Catalog(seed=7, products=300, line_bytes=2_000, cache_dir=tmp_path / "a")
    again = Catalog(seed=7, products=300, line_bytes=2_000, cache_dir=tmp_path / "b")
    other = Catalog(seed=8, products=300, line_bytes=2_000, cache_dir=tmp_path / "c")
    assert one.build().read_bytes() == again.build().read_bytes()
    assert not set(one.ids()) & set(other.ids())


def test_a_new_version_renders_the_same_bytes_with_or_without_the_previous_one(
    tmp_path: Path,
) -> None:
    incremental = Catalog(seed=2, products=500, cache_dir=tmp_path / "a")
    incremental.build()
    scratch = Catalog(seed=2, products=500, version=2, cache_dir=tmp_path / "b")
    assert incremental.at(2).build().read_bytes() == scratch.build().read_bytes()
    assert not (tmp_path / "b" / incremental.path.name).exists()
    assert incremental.at(2).snapshot().facts == scratch.snapshot().facts


@pytest.mark.parametrize("line_bytes", [2_000, 5_600])
def test_mean_line_size_follows_the_parameter(tmp_path: Path, line_bytes: int) -> None:
    catalog = Catalog(seed=3, products=4_000, line_bytes=line_bytes, cache_dir=tmp_path)
    snapshot = catalog.snapshot()
    sizes = [length + LINE_OVERHEAD for length in snapshot.lengths]
    mean = sum(sizes) / len(sizes)
    assert abs(mean - line_bytes) / line_bytes < 0.08
    assert max(sizes) > 4 * mean  # heavy tail: a few very rich product pages
    catalog.close()


# -- versions ---------------------------------------------------------------------------------


async def test_version_two_changes_exactly_what_it_announces(
    medipim: SimulatorServer, medipim_catalog: Catalog
) -> None:
    before = {p["id"]: p for p in await products(medipim)}
    changes = medipim_catalog.at(2).changes()
    medipim.set_version(2)
    after = {p["id"]: p for p in await products(medipim)}
    n = len(before)
    assert (len(changes.changed), len(changes.removed), len(changes.replaced)) == (
        round(0.02 * n),
        round(0.002 * n),
        round(0.003 * n),
    )
    assert len(changes.added) == round(0.005 * n) + len(changes.replaced)
    assert set(before) - set(after) == changes.removed
    assert set(after) - set(before) == changes.added
    common = set(before) & set(after)
    differs = {i for i in common if without_embed(before[i]) != without_embed(after[i])}
    assert differs == changes.changed | changes.replaced
    for old, new in changes.replacements.items():
        assert after[old]["status"] == "replaced"
        assert after[old]["replacement"] == new
        assert after[new]["status"] == "active"
        assert "ean" not in after[old]
    for product_id in changes.changed:
        assert after[product_id]["meta"]["updatedAt"] > before[product_id]["meta"]["updatedAt"]
    touched = await products(medipim, {"updatedSince": changes.since})
    assert {p["id"] for p in touched} == changes.touched
    assert all(p["meta"]["updatedAt"] < medipim.catalog.taken_at for p in after.values())


async def test_versions_switch_over_http_too(medipim: SimulatorServer) -> None:
    custom = Mutation(changed=0.1, added=0.0, removed=0.05, replaced=0.0)
    catalog = Catalog(seed=5, products=400, cache_dir=medipim.catalog.cache_dir, mutation=custom)
    changes = catalog.at(3).changes()
    assert len(changes.changed) == round(0.1 * len(catalog.at(2).ids()))
    async with httpx.AsyncClient(base_url=medipim.url) as http:
        switched = await http.post("/__sim__/version", json={"version": 2})
        stats = (await http.get("/__sim__/stats")).json()
    assert switched.status_code == 200
    assert set(switched.json()["changed"]) == medipim.catalog.changes().changed
    assert stats["version"] == medipim.version == 2
    assert "__sim__" not in str(stats["requests"])


async def test_a_live_mutation_bumps_updated_at_of_every_change_to_its_instant(
    medipim_factory: MedipimFactory, tmp_path: Path
) -> None:
    day = Mutation(changed=0.01, added=0.0, removed=0.0, replaced=0.002, status_changed=0.005)
    catalog = Catalog(seed=7, products=2_000, mutation=day, cache_dir=tmp_path)
    medipim = await medipim_factory(catalog)
    before = {p["id"]: p for p in await products(medipim)}
    at = int(time.time())
    async with httpx.AsyncClient(base_url=medipim.url) as http:
        answer = (await http.post("/__sim__/advance", json={"at": at})).json()
    changes = medipim.catalog.changes()
    assert medipim.version == answer["version"] == 2
    assert changes.since == at
    assert set(answer["statusChanged"]) == changes.status_changed
    assert (len(changes.changed), len(changes.status_changed)) == (20, 10)
    after = {p["id"]: p for p in await products(medipim)}
    for product_id in changes.status_changed:
        was, now = before[product_id], after[product_id]
        assert {was["status"], now["status"]} == {"active", "inactive"}
        assert now["meta"]["updatedAt"] == at
    differs = {i for i in before if without_embed(before[i]) != without_embed(after[i])}
    assert differs == changes.changed | changes.replaced | changes.status_changed
    assert {i for i, p in after.items() if p["meta"]["updatedAt"] >= at} == changes.touched
    # updatedSince is inclusive at the boundary, a {from, until} range at both ends
    since = await products(medipim, {"updatedSince": at})
    assert {p["id"] for p in since} == changes.touched
    assert await products(medipim, {"updatedSince": at + 1}) == []
    window = await products(medipim, {"updatedSince": {"from": at, "until": at}})
    assert {p["id"] for p in window} == changes.touched
    assert await products(medipim, {"updatedSince": {"from": 0, "until": at - 1}}) != []
    by_touch = await products(medipim, {"updatedSince": at - 3600}, {"touchedAt": "ASC"})
    assert {p["id"] for p in by_touch} == changes.touched
    # a second live mutation continues from the first, and its own instant
    later = medipim.advance(at + 60)
    assert later.version == 3
    assert later.changes().since == at + 60
    assert {p["id"] for p in await products(medipim, {"updatedSince": at + 1})} == (
        later.changes().touched
    )


def test_live_versions_render_deterministically_and_refuse_going_back(tmp_path: Path) -> None:
    day = Mutation(changed=0.05, status_changed=0.01)
    first = Catalog(seed=8, products=300, mutation=day, cache_dir=tmp_path / "a").advance(
        1_800_000_000
    )
    second = Catalog(seed=8, products=300, mutation=day, cache_dir=tmp_path / "b").advance(
        1_800_000_000
    )
    assert first.name == second.name
    assert first.snapshot().data[:] == second.snapshot().data[:]
    assert first.taken_at == 1_800_000_001
    with pytest.raises(ValueError, match="before"):
        first.advance(1_700_000_000)
    with pytest.raises(ValueError, match="calendar"):
        Catalog(seed=8, products=300, version=2, cache_dir=tmp_path).advance()
    first.close()
    second.close()


# -- faults -----------------------------------------------------------------------------------


async def test_cut_drops_the_connection_mid_stream(medipim: SimulatorServer) -> None:
    medipim.faults.inject(Fault.cut(after_bytes=100_000))
    received = bytearray()
    async with client(medipim) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await read_stream(http, received)
    assert len(received) == 100_000
    again, _ = await stream(medipim)
    assert again.status_code == 200  # armed for one request only


async def test_truncate_ends_cleanly_in_the_middle_of_the_last_line(
    medipim: SimulatorServer, medipim_catalog: Catalog
) -> None:
    medipim.faults.inject(Fault.truncate())
    async with client(medipim) as http:
        response = await http.post("/v4/products/stream", json={"filter": ALL, "sorting": BY_ID})
    assert response.status_code == 200
    assert not response.content.endswith(b"\n")
    lines = response.content.split(b"\n")
    assert len(lines) == len(medipim_catalog.ids())
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(lines[-1])
    assert orjson.loads(lines[-2])["meta"]["index"] == len(lines) - 2


async def test_malformed_line_is_invalid_json_and_the_rest_is_fine(
    medipim: SimulatorServer,
) -> None:
    medipim.faults.inject(Fault.malformed(at_index=5))
    response, lines = await stream(medipim)
    assert response.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(lines[5])
    assert [orjson.loads(line)["meta"]["index"] for i, line in enumerate(lines) if i != 5] == [
        i for i in range(len(lines)) if i != 5
    ]


async def test_error_line_replaces_the_rest_of_the_stream(medipim: SimulatorServer) -> None:
    medipim.faults.inject(Fault.error_line(at_index=7, status=500))
    response, lines = await stream(medipim)
    assert response.status_code == 200
    assert len(lines) == 8
    assert orjson.loads(lines[7])["error"]["status"] == 500
    assert orjson.loads(lines[7])["error"]["code"] == "internal_error"


async def test_status_faults_answer_before_the_first_byte_for_n_requests(
    medipim: SimulatorServer,
) -> None:
    medipim.faults.inject(Fault.http_status(503), times=2)
    statuses = [(await stream(medipim))[0].status_code for _ in range(3)]
    medipim.faults.inject(Fault.http_status(429))
    limited, _ = await stream(medipim)
    assert statuses == [503, 503, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "too_many_requests"


async def test_stall_goes_quiet_mid_stream(medipim: SimulatorServer) -> None:
    medipim.faults.inject(Fault.stall(after_bytes=50_000, seconds=30.0))
    received = bytearray()
    # The read timeout only has to tell the stall from a busy machine's pauses: keep it well
    # above those and well below the stall.
    async with client(medipim, timeout=httpx.Timeout(10, read=2.0)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await read_stream(http, received)
    assert len(received) == 50_000


async def test_faults_can_be_armed_over_http(medipim: SimulatorServer) -> None:
    async with httpx.AsyncClient(base_url=medipim.url) as http:
        armed = await http.post(
            "/__sim__/faults", json={"kind": "status", "status": 502, "times": 1}
        )
        assert armed.json()["faults"]["pending"][0]["status"] == 502
        first, _ = await stream(medipim)
        second, _ = await stream(medipim)
        await http.post("/__sim__/faults", json={"kind": "status", "times": 5})
        cleared = await http.delete("/__sim__/faults")
        third, _ = await stream(medipim)
        rejected = await http.post("/__sim__/faults", json={"kind": "explode"})
    assert (first.status_code, second.status_code, third.status_code) == (502, 200, 200)
    assert cleared.status_code == 204
    assert rejected.status_code == 422


async def test_throughput_and_ttfb_knobs_still_deliver_everything(
    medipim_factory: MedipimFactory,
) -> None:
    server = await medipim_factory(products=200, throughput=2e6, ttfb=0.05)
    slow = await products(server, {"status": "active"})
    assert [p["id"] for p in slow] == server.catalog.ids("active")


async def test_gzip_is_a_switch(medipim_factory: MedipimFactory) -> None:
    plain = await medipim_factory(products=200)
    zipped = await medipim_factory(products=200, gzip=True)
    body = {"filter": {"status": "active"}, "sorting": BY_ID}
    async with client(plain) as a, client(zipped) as b:
        off = await a.post("/v4/products/stream", json=body)
        on = await b.post("/v4/products/stream", json=body)
        refused = await b.post(
            "/v4/products/stream", json=body, headers={"Accept-Encoding": "identity"}
        )
    assert "content-encoding" not in off.headers
    assert "content-encoding" not in refused.headers
    assert on.headers["content-encoding"] == "gzip"
    assert on.num_bytes_downloaded < len(on.content) // 3
    assert len(on.content.splitlines()) == len(off.content.splitlines())


# -- command line -----------------------------------------------------------------------------


def test_build_only_renders_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CATALOGSYNC_CACHE", str(tmp_path))
    assert simulator_main(["--products", "120", "--line-bytes", "1500", "--build-only"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.parent == cache_root() == tmp_path / "simulator"
    assert len(path.read_bytes().splitlines()) == 120
