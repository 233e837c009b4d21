"""The CRD file agrees with the code that writes and reads CatalogSyncs (no cluster needed).

The API server silently drops status fields that the schema does not declare, so every field the
operator writes must be declared; the spec's bounds must match what the jobs accept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogsync.common.config import MaintainerSettings, RunSettings, validate_table_name
from catalogsync.common.kube import GROUP, KIND, PLURAL, VERSION
from catalogsync.operator.credentials import SecretProblem
from catalogsync.operator.decide import COUNT_FIELDS, decide
from tests import test_operator_decide as scenarios
from tests.operator_objects import cr

CRD_FILE = Path(__file__).parent.parent / "deploy" / "crds" / "catalogsync.io_catalogsyncs.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return document


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    assert only["name"] == VERSION
    result: dict[str, Any] = only
    return result


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = version(crd)["schema"]["openAPIV3Schema"]
    return result


def undeclared(value: Any, node: dict[str, Any], path: str) -> list[str]:
    """Paths in ``value`` the structural schema ``node`` would prune."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props = node.get("properties", {})
        missing = []
        for key, item in value.items():
            if key not in props:
                missing.append(f"{path}.{key}")
            else:
                missing += undeclared(item, props[key], f"{path}.{key}")
        return missing
    if isinstance(value, list):
        return [p for item in value for p in undeclared(item, node.get("items", {}), path + "[]")]
    return []


def test_names_match_the_code(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (KIND, PLURAL, ["csync"])
    assert version(crd)["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = version(crd)["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    wide = [c["name"] for c in columns if c.get("priority") == 1]
    assert default == ["Catalog", "Mode", "Phase", "Progress", "Inserted", "Updated", "Skipped",
                       "Duration", "Age"]  # fmt: skip
    assert wide == ["Deleted", "Invalid", "Message"]


def test_every_status_field_the_operator_writes_is_declared(crd: dict[str, Any]) -> None:
    status_schema = schema(crd)["properties"]["status"]
    observations = [
        scenarios.observe(cr()),
        scenarios.observe(
            cr(), secrets=[SecretProblem("SecretNotFound", "Secret ns/x not found", "fetcher")]
        ),
        scenarios.observe(
            cr(status=scenarios.running_status("maintainer")),
            fetcher=scenarios.succeeded_fetcher(),
            maintainer=scenarios.oom_maintainer(failed=True),
        ),
        scenarios.observe(
            cr(status=scenarios.running_status("maintainer")),
            fetcher=scenarios.succeeded_fetcher(),
            maintainer=scenarios.oom_maintainer(failed=False),
        ),
        scenarios.observe(cr(spec={"cancel": True})),
    ]
    written = [decide(obs).status for obs in observations]
    for status in written:
        assert undeclared(status, status_schema, "status") == []
    for stage, fields in COUNT_FIELDS.items():
        declared = status_schema["properties"][stage]["properties"]
        assert set(fields) <= set(declared)


def test_table_pattern_accepts_exactly_what_the_maintainer_accepts(crd: dict[str, Any]) -> None:
    pattern = re.compile(schema(crd)["properties"]["spec"]["properties"]["database"]
                         ["properties"]["table"]["pattern"])  # fmt: skip
    samples = ["products", "public.products", "_x.y_1", "a" * 63, "Products", "a.b.c",
               "x;drop", "1abc", "a" * 64, "", "public.", ".products"]  # fmt: skip
    for sample in samples:
        try:
            validate_table_name(sample)
            valid = True
        except ValueError:
            valid = False
        assert bool(pattern.match(sample)) is valid, sample


def test_spec_bounds_match_the_jobs_settings(crd: dict[str, Any]) -> None:
    spec = schema(crd)["properties"]["spec"]["properties"]
    chunk = spec["maintainer"]["properties"]["chunkSize"]
    field = MaintainerSettings.model_fields["chunk_size"]
    bounds = {type(m).__name__: m for m in field.metadata}
    assert (chunk["minimum"], chunk["maximum"]) == (bounds["Ge"].ge, bounds["Le"].le)
    assert chunk["default"] == field.default
    assert spec["catalog"]["default"] == RunSettings.model_fields["catalog"].default
    fraction = spec["maintainer"]["properties"]["maxDeleteFraction"]
    assert (fraction["minimum"], fraction["maximum"]) == (0, 1)


def test_spec_is_immutable_except_cancel(crd: dict[str, Any]) -> None:
    spec = schema(crd)["properties"]["spec"]["properties"]
    for name, field in spec.items():
        rules = [r["rule"] for r in field.get("x-kubernetes-validations", [])]
        assert ("self == oldSelf" in rules) is (name != "cancel"), name
        if name != "cancel" and field.get("type") == "object":
            assert field.get("default") == {}, f"{name} needs a default so it always exists"
