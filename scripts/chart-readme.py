#!/usr/bin/env python3
"""Write the chart's README: every value, its type, default and meaning.

The keys and types come from values.schema.json (the schema rejects any other key, so the list is
complete), the defaults from values.yaml, and each description from the schema's
``description`` or else the ``# --`` comment above the key in values.yaml. Run this after
changing either file; tests/test_chart.py fails while the README differs.

Usage: scripts/chart-readme.py [--check]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/catalogsync"
README = CHART / "README.md"
LEAF_REFS = {"#/definitions/runSpec": "a CatalogSync `spec` (the CRD's schema)"}
"""References listed as one value rather than expanded."""

HEADER = """\
# catalogsync Helm chart

{description}

Install and operate it as [docs/operations.md](../../../docs/operations.md) describes. This list is
generated from `values.schema.json` and `values.yaml` by `scripts/chart-readme.py`; the schema
rejects any key not listed here.

| value | type | default | description |
|---|---|---|---|
"""


def comments(values_text: str) -> dict[str, str]:
    """``dotted.key -> text`` of the ``# --`` comments (and their continuation lines)."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not match or stripped.startswith("-"):
            pending = []
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if pending:
            found[".".join(key for _, key in stack)] = " ".join(pending)
        pending = []
    return found


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref not in LEAF_REFS:
        target: Mapping[str, Any] = schema
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: Mapping[str, Any]) -> str:
    if isinstance(node.get("$ref"), str) and node["$ref"] in LEAF_REFS:
        return "object"
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind:
        return str(kind)
    if "anyOf" in node or "oneOf" in node:
        return " or ".join(_type(sub) for sub in node.get("anyOf") or node.get("oneOf") or [])
    return "any"


def rows(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every value the schema allows, depth first, in the schema's order."""

    def walk(prefix: str, node: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        node = _resolve(schema, node)
        properties = node.get("properties")
        if not isinstance(properties, Mapping) or not properties or node.get("$ref"):
            yield prefix, node
            return
        for name, sub in properties.items():
            yield from walk(f"{prefix}.{name}" if prefix else name, sub)

    yield from walk("", schema)


def _default(values: Any, key: str) -> str:
    node = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    text = json.dumps(node, ensure_ascii=False)
    return f"`{text}`" if len(text) <= 60 else "see values.yaml"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def readme() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values_text = (CHART / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(values_text)
    notes = comments(values_text)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    lines = [HEADER.format(description=" ".join(str(chart["description"]).split()))]
    for key, node in rows(schema):
        if key.startswith("global"):
            continue
        ref = node.get("$ref")
        description = node.get("description") or notes.get(key) or LEAF_REFS.get(str(ref), "")
        lines.append(
            f"| `{key}` | {_type(node)} | {_default(values, key)} | {_cell(str(description))} |\n"
        )
    return "".join(lines)


def main(argv: list[str]) -> int:
    text = readme()
    if argv == ["--check"]:
        if README.read_text(encoding="utf-8") != text:
            print(f"{README.relative_to(ROOT)} is out of date: run scripts/chart-readme.py")
            return 1
        return 0
    if argv:
        print(__doc__)
        return 2
    README.write_text(text, encoding="utf-8")
    print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
