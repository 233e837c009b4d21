"""Which Secret keys a run needs, and what a missing or malformed one is reported as."""

from __future__ import annotations

import base64

from catalogsync.operator.credentials import SecretProblem, problems, required
from catalogsync.operator.spec import resolve
from tests.operator_objects import cr, settings


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_each_stage_needs_its_own_keys() -> None:
    run = resolve(cr(), settings())
    assert {(k.secret, k.key) for k in required(run, "fetcher")} == {
        ("medipim-credentials", "apiKeyId"),
        ("medipim-credentials", "apiKeySecret"),
        ("supabase-storage", "serviceRoleKey"),
    }
    assert {(k.secret, k.key) for k in required(run, "maintainer")} == {
        ("supabase-storage", "serviceRoleKey"),
        ("catalog-database", "url"),
    }
    spec = {"source": {"credentialsSecret": "mine"}, "database": {"credentialsSecret": "db2"}}
    run = resolve(cr(spec=spec), settings(CATALOGSYNC_STORAGE_URL="file:///data"))
    assert {k.secret for k in required(run, "fetcher")} == {"mine"}
    assert {k.secret for k in required(run, "maintainer")} == {"db2"}


def test_problems_name_secret_and_key_and_never_the_value() -> None:
    run = resolve(cr(), settings())
    needed = required(run, "fetcher") + required(run, "maintainer")
    secret_url = "mysql://root:hunter2@db/app"
    found = problems(
        needed,
        {
            "medipim-credentials": {"apiKeyId": b64("id-1")},
            "supabase-storage": {"serviceRoleKey": b64("   ")},
            "catalog-database": {"url": b64(secret_url)},
        },
        "ns",
    )
    assert found == [
        SecretProblem(
            "SecretNotFound",
            "Secret ns/medipim-credentials has no key 'apiKeySecret'; add it",
            "fetcher",
        ),
        SecretProblem(
            "InvalidSecret",
            "key 'serviceRoleKey' of Secret ns/supabase-storage is empty; put the value in it",
            "fetcher",
        ),
        SecretProblem(
            "InvalidSecret",
            "key 'url' of Secret ns/catalog-database must be a PostgreSQL URL "
            "(postgresql://user:password@host:5432/db)",
            "maintainer",
        ),
    ]
    assert not any("hunter2" in problem.message for problem in found)
    missing = problems(needed, {}, "ns")
    assert missing[0].message.startswith(
        "Secret ns/medipim-credentials not found (it must hold keys 'apiKeyId', 'apiKeySecret')"
    )
    assert [problem.reason for problem in missing] == ["SecretNotFound"] * 3
    assert [problem.stage for problem in missing] == ["fetcher", "fetcher", "maintainer"]


def test_a_secret_only_the_maintainer_reads_is_reported_for_the_maintainer() -> None:
    run = resolve(cr(spec={"mode": "MaintainOnly"}), settings())
    found = problems(required(run, "maintainer"), {"supabase-storage": {}}, "ns")
    assert [(problem.stage, problem.reason) for problem in found] == [
        ("maintainer", "SecretNotFound"),
        ("maintainer", "SecretNotFound"),
    ]


def test_complete_secrets_have_no_problems() -> None:
    run = resolve(cr(), settings())
    needed = required(run, "fetcher") + required(run, "maintainer")
    secrets = {
        "medipim-credentials": {"apiKeyId": b64("a"), "apiKeySecret": b64("b")},
        "supabase-storage": {"serviceRoleKey": b64("c")},
        "catalog-database": {"url": b64("postgresql://u:p@h/d")},
    }
    assert problems(needed, secrets, "ns") == []
