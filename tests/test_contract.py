"""The status contract is spelled once: the shapes and reasons agree with the CRD and the docs.

``common/summaries.py`` defines what the jobs report and ``status`` holds, ``common/reasons.py``
every failure reason. These tests fail when a field or a reason is added on one side only: in the
CRD's status schema, in docs/operations.md, or as a bare string somewhere in the code.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogsync.common import summaries
from catalogsync.common.reasons import Reason
from catalogsync.operator import decide, notify

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "deploy" / "crds" / "catalogsync.io_catalogsyncs.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
PRODUCTION = [ROOT / "operator", ROOT / "jobs", ROOT / "src" / "catalogsync" / "common"]

SHAPES: dict[str, type] = {
    "": summaries.RunStatus,
    "fetcher": summaries.FetcherStatus,
    "maintainer": summaries.MaintainerStatus,
    "failure": summaries.FailureStatus,
}
"""``status.<key>`` -> its shape (``""``: ``status`` itself)."""


def status_schema() -> Mapping[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: Mapping[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def schema_of(key: str) -> Mapping[str, Any]:
    schema = status_schema()
    return schema if not key else schema["properties"][key]


@pytest.mark.parametrize("key", list(SHAPES))
def test_every_status_shape_has_exactly_the_fields_of_the_crd(key: str) -> None:
    declared = set(schema_of(key)["properties"]) - {"kopf"}  # kopf's own bookkeeping
    assert set(summaries.fields(SHAPES[key])) == declared


def status_paths() -> Iterator[str]:
    for key, shape in SHAPES.items():
        for name in summaries.fields(shape):
            yield f"status.{key}.{name}" if key else f"status.{name}"


@pytest.mark.parametrize("path", list(status_paths()))
def test_docs_operations_describes_every_status_field(path: str) -> None:
    assert f"`{path}`" in OPERATIONS.read_text(), f"add {path} to the status table"


def test_the_counts_each_job_writes_are_fields_of_its_status() -> None:
    for stage, counts in decide.COUNT_FIELDS.items():
        assert set(counts) <= set(schema_of(stage)["properties"]), stage
        done, total = decide.PROGRESS_OF[stage]
        assert {done, total} <= set(counts), stage
    assert set(summaries.MAINTAINER_OUTCOMES) <= set(summaries.MAINTAINER_COUNTS)
    maintainer_status = set(schema_of("maintainer")["properties"])
    assert set(notify.MAINTAINER_COUNTS) <= maintainer_status
    assert set(notify.FETCHER_COUNTS) <= set(schema_of("fetcher")["properties"])


def test_the_summaries_carry_the_counts_of_the_status() -> None:
    assert set(summaries.MAINTAINER_COUNTS) <= set(summaries.fields(summaries.MaintainerSummary))
    fetched = set(summaries.fields(summaries.FetcherSummary))
    assert set(summaries.FETCHER_COUNTS) <= fetched
    assert set(summaries.fields(summaries.FailureSummary)) - {"ok"} <= set(
        summaries.fields(summaries.FailureStatus)
    ) | {"reason", "message", "stage", "exitCode"}


def test_each_reason_is_named_as_it_reads() -> None:
    for reason in Reason:
        assert reason.name == reason.value
        assert re.fullmatch(r"[A-Z][A-Za-z]+", reason.value)


@pytest.mark.parametrize("reason", [r.value for r in Reason])
def test_docs_operations_explains_every_reason(reason: str) -> None:
    assert f"`{reason}`" in OPERATIONS.read_text(), f"explain {reason} in docs/operations.md"


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def reason_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Strings the code uses as a failure reason, by where they stand.

    ``reason="X"`` (a keyword), ``reason = "X"`` (an error class's default), ``"reason": "X"``
    (a termination message) and ``Failure(stage, "X", ...)``.
    """
    for node in ast.walk(tree):
        found: list[ast.AST | None] = []
        if isinstance(node, ast.keyword) and node.arg == "reason":
            found.append(node.value)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "reason" for t in targets):
                found.append(node.value)
        elif isinstance(node, ast.Dict):
            found += [
                v for k, v in zip(node.keys, node.values, strict=True) if _literal(k) == "reason"
            ]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Failure":
            found += node.args[1:2]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SecretProblem":
            found += node.args[:1]
        for value in found:
            choices = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
            for choice in choices:
                text = _literal(choice)
                if text is not None:
                    yield getattr(choice, "lineno", 0), text


def production_files() -> Iterator[Path]:
    for top in PRODUCTION:
        yield from sorted(top.rglob("*.py"))


def test_the_scan_finds_the_reasons_it_looks_for() -> None:
    code = (
        'E(reason="A")\nclass X:\n    reason = "B"\nd = {"reason": "C"}\nFailure(s, "D", m)\n'
        'SecretProblem("E", m)\nFailure(s, "F" if x else "G", m)\n'
    )
    found = sorted(text for _, text in reason_literals(ast.parse(code)))
    assert found == ["A", "B", "C", "D", "E", "F", "G"]


def test_the_code_fails_runs_only_with_reasons_of_the_enumeration() -> None:
    known = {r.value for r in Reason} | {""}
    strays = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in production_files()
        for line, text in reason_literals(ast.parse(path.read_text()))
        if text not in known
    ]
    assert not strays, "add these to catalogsync.common.reasons.Reason (and docs): " + ", ".join(
        strays
    )
