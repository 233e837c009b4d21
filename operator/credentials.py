"""Which Secret keys a run needs, and whether the Secrets hold them.

The jobs receive credentials through ``secretKeyRef``. A missing Secret would leave their pods in
``CreateContainerConfigError`` until the Job's deadline; checking first turns that into an
immediate ``SecretNotFound`` that names the Secret and the key. Only presence and shape are
checked; the values themselves never leave this module, not even in a message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from catalogsync.common.config import (
    DatabaseSettings,
    MedipimSettings,
    StorageSettings,
    env_name,
)
from catalogsync.operator.spec import RunSpec, Stage

API_KEY_ID = "apiKeyId"
API_KEY_SECRET = "apiKeySecret"
SERVICE_ROLE_KEY = "serviceRoleKey"
DATABASE_URL = "url"


@dataclass(frozen=True)
class SecretKey:
    """One value a job needs: the Secret, the key in it, and the env var it becomes."""

    secret: str
    key: str
    env: str
    stage: Stage
    """The stage whose pod reads it (a Secret both stages read is listed for each)."""


@dataclass(frozen=True)
class SecretProblem:
    """One thing wrong with the Secrets, as ``status.failure`` will report it."""

    reason: Literal["SecretNotFound", "InvalidSecret"]
    """``SecretNotFound``: a Secret or a key is absent; ``InvalidSecret``: a value is unusable."""
    message: str
    """Names the Secret and the key and says how to fix it; never quotes a value."""
    stage: Stage
    """The first stage of the run that reads the Secret: the one a failure is reported for."""


def required(run: RunSpec, stage: Stage) -> list[SecretKey]:
    """The Secret keys ``stage`` of ``run`` reads, in the order its env lists them."""
    storage = (
        []
        if run.storage_is_local
        else [
            SecretKey(
                run.storage_secret,
                SERVICE_ROLE_KEY,
                env_name(StorageSettings, "service_role_key"),
                stage,
            )
        ]
    )
    database = SecretKey(
        run.database_secret, DATABASE_URL, env_name(DatabaseSettings, "url"), stage
    )
    if stage == "fetcher":
        return [
            SecretKey(
                run.source_secret, API_KEY_ID, env_name(MedipimSettings, "api_key_id"), stage
            ),
            SecretKey(
                run.source_secret,
                API_KEY_SECRET,
                env_name(MedipimSettings, "api_key_secret"),
                stage,
            ),
            *storage,
            # An Incremental fetch reads its watermark from the database's run table.
            *([database] if run.mode == "Incremental" else []),
        ]
    return [*storage, database]


def problems(
    needed: Sequence[SecretKey], secrets: Mapping[str, Mapping[str, str] | None], namespace: str
) -> list[SecretProblem]:
    """What is wrong with the Secrets (``secrets``: name -> ``data``, None if absent).

    Each problem names the Secret and the key and says how to fix it; values are never quoted.
    """
    found: dict[str, SecretProblem] = {}
    absent: dict[str, tuple[Stage, list[str]]] = {}
    for item in needed:
        data = secrets.get(item.secret)
        if data is None:
            _, keys = absent.setdefault(item.secret, (item.stage, []))
            if item.key not in keys:
                keys.append(item.key)
            continue
        if item.key not in data:
            problem: SecretProblem | None = SecretProblem(
                "SecretNotFound",
                f"Secret {namespace}/{item.secret} has no key {item.key!r}; add it",
                item.stage,
            )
        else:
            problem = _malformed(item, data[item.key], namespace)
        if problem is not None:
            found.setdefault(problem.message, problem)
    missing = [
        SecretProblem(
            "SecretNotFound",
            f"Secret {namespace}/{name} not found (it must hold "
            f"{'key' if len(keys) == 1 else 'keys'} {', '.join(repr(k) for k in keys)}); "
            "create it or point the CatalogSync at another Secret",
            stage,
        )
        for name, (stage, keys) in absent.items()
    ]
    return missing + list(found.values())


def _malformed(item: SecretKey, encoded: str, namespace: str) -> SecretProblem | None:
    where = f"key {item.key!r} of Secret {namespace}/{item.secret}"
    try:
        value = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return SecretProblem("InvalidSecret", f"{where} is not valid UTF-8 text", item.stage)
    if not value.strip():
        return SecretProblem("InvalidSecret", f"{where} is empty; put the value in it", item.stage)
    if item.key == DATABASE_URL and not value.startswith(("postgresql://", "postgres://")):
        return SecretProblem(
            "InvalidSecret",
            f"{where} must be a PostgreSQL URL (postgresql://user:password@host:5432/db)",
            item.stage,
        )
    return None
