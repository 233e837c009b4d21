"""The environment-variable contract of the jobs, in one place.

The operator writes these variables into the Jobs it builds and the jobs read them back, so both
sides use the names declared here (``env_name``) rather than string literals of their own. Every
value is validated when a job starts, and a bad value is a permanent error (exit code 2) that names
the variable and says what it should look like.
"""

from __future__ import annotations

import re
import textwrap
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from catalogsync.common.errors import PermanentError
from catalogsync.common.jsonobject import load_object

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""A PostgreSQL identifier we are willing to interpolate (lower case, unquoted, ≤ 63 bytes)."""

DEFAULT_MEDIPIM_URL = "https://api.au.medipim.com"
DEFAULT_FILTER: dict[str, Any] = {"status": "active"}
DEFAULT_SORTING: dict[str, Any] = {"id": "ASC"}
DEFAULT_TABLE = "public.products"
DEFAULT_BUCKET = "medipim-raw"
LATEST_OBJECT = "latest.ndjson"
HELP_POINTER = "`catalogsync <command> --help` lists them, docs/configuration.md describes each"


def validate_table_name(value: str) -> str:
    """Accept ``table`` or ``schema.table`` made of plain identifiers, nothing else.

    Table names end up inside SQL text (identifiers cannot be bind parameters), so this is the only
    gate between configuration and the SQL parser.
    """
    parts = value.split(".")
    if len(parts) > 2 or not all(IDENTIFIER.match(part) for part in parts):
        raise ValueError(
            f"{value!r} is not a valid table name: use 'table' or 'schema.table', each part "
            "lower-case letters, digits and underscores, starting with a letter or underscore, "
            "at most 63 characters"
        )
    return value if len(parts) == 2 else f"public.{value}"


PERCENT_ENCODE = (
    "if the user name or password contains any of @ : / ? # [ ] % or a space, percent-encode "
    "it (# as %23, @ as %40, : as %3A, / as %2F, % as %25)"
)

DSN_SCHEMES = ("postgresql", "postgres")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DSN_SHAPE = "postgresql://user:password@host:5432/dbname"


def _dsn_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a PostgreSQL URL, in words that quote none of it.

    The driver's own parser answers a ``#`` in the password with ``invalid literal for int() ...:
    'S3cr'`` (a piece of the password) and an empty URL with the ``PG*`` environment, so the URL
    is checked here first and only the parts that cannot be secret are ever named.
    """
    if not url.strip():
        return (
            f"is empty: set it to {DSN_SHAPE} (an empty value is refused rather than letting the "
            "driver fall back to the PG* environment variables)"
        )
    scheme, sep, _ = url.partition("://")
    if not sep:
        return f"is not a URL: write {DSN_SHAPE}; {PERCENT_ENCODE}"
    if scheme not in DSN_SCHEMES:
        named = f"{scheme!r} " if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,20}", scheme) else ""
        return f"has scheme {named}but must start with postgresql:// ({DSN_SHAPE})"
    parts = urlsplit(url)
    if "#" in url:
        return f"contains '#', which ends a URL: {PERCENT_ENCODE}"
    hosts = parts.netloc.rpartition("@")[2]
    for host_port in hosts.split(","):
        port = host_port.rpartition("]")[2] if host_port.startswith("[") else host_port
        _, colon, number = port.rpartition(":") if ":" in port else ("", "", "")
        if colon and not (number.isdigit() and 0 < int(number) < 65536):
            return (
                "has a port that is not a number from 1 to 65535 (or a password the parser "
                f"mistook for one): {PERCENT_ENCODE}"
            )
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "sslmode" and unquote(value) not in SSL_MODES:
            return f"has an sslmode that is not one of {', '.join(SSL_MODES)}"
    return None


def validate_database_url(value: str) -> str:
    if problem := _dsn_problem(value):
        raise ValueError(f"DATABASE_URL {problem}")
    return value


def database_target(url: str) -> str:
    """``host:port/dbname`` of a valid DATABASE_URL, for messages (no user, no password)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    query = dict(parse_qsl(parts.query))
    hosts = hosts or query.get("host", "") or "localhost"
    if ":" not in hosts.rpartition("]")[2] and "port" in query:
        hosts = f"{hosts}:{query['port']}"
    database = unquote(parts.path.lstrip("/")) or query.get("dbname", "")
    return f"{hosts}/{database}" if database else hosts


def validate_http_url(value: str, variable: str, example: str) -> str:
    """An absolute ``http(s)://host`` URL, checked when the job starts rather than retried."""
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable} must be an http(s) URL such as {example}")
    return value.strip()


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):  # the settings source already decoded the JSON
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")
    try:
        return load_object(value)
    except ValueError as exc:
        raise ValueError(
            f'{what} must be a JSON object, e.g. {{"status": "active"}}; it is {exc}'
        ) from None


JsonObject = Annotated[dict[str, Any], NoDecode]
"""A JSON object from the environment, decoded by our validator (which names the variable)
rather than by pydantic-settings (whose error names neither the variable nor the problem)."""


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class RunSettings(_Settings):
    """Who this run is, and where its live progress and summary go."""

    run_id: str = Field("local", alias="SYNC_RUN_ID", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    catalog: str = Field("medipim-au", alias="SYNC_CATALOG")
    cr_namespace: str | None = Field(None, alias="SYNC_CR_NAMESPACE")
    cr_name: str | None = Field(None, alias="SYNC_CR_NAME")
    termination_message_path: str = Field(
        "/dev/termination-log", alias="CATALOGSYNC_TERMINATION_MESSAGE_PATH"
    )
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="CATALOGSYNC_LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="CATALOGSYNC_LOG_LEVEL"
    )
    progress_interval: float = Field(3.0, alias="CATALOGSYNC_PROGRESS_INTERVAL", gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class MedipimSettings(_Settings):
    url: str = Field(DEFAULT_MEDIPIM_URL, alias="MEDIPIM_URL")
    api_key_id: str = Field("", alias="MEDIPIM_API_KEY_ID", repr=False)
    api_key_secret: str = Field("", alias="MEDIPIM_API_KEY_SECRET", repr=False)
    filter: JsonObject = Field(default_factory=lambda: dict(DEFAULT_FILTER), alias="MEDIPIM_FILTER")
    sorting: JsonObject = Field(
        default_factory=lambda: dict(DEFAULT_SORTING), alias="MEDIPIM_SORTING"
    )
    credentials_secret: str = Field("medipim-credentials", alias="MEDIPIM_CREDENTIALS_SECRET")
    """Only used to name the Secret in error messages; the values arrive as env vars."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_http_url(value, "MEDIPIM_URL", DEFAULT_MEDIPIM_URL)

    @field_validator("filter", "sorting", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> dict[str, Any]:
        return _json_object(value, "MEDIPIM_FILTER / MEDIPIM_SORTING")


class StorageSettings(_Settings):
    url: str = Field(..., alias="STORAGE_URL")
    """``https://<ref>.supabase.co``, a URL ending in ``/storage/v1``, or ``file:///dir``."""
    bucket: str = Field(DEFAULT_BUCKET, alias="STORAGE_BUCKET", pattern=r"^[A-Za-z0-9_.-]+$")
    prefix: str = Field("", alias="STORAGE_PREFIX")
    service_role_key: str = Field("", alias="STORAGE_SERVICE_ROLE_KEY", repr=False)
    credentials_secret: str = Field("supabase-storage", alias="STORAGE_CREDENTIALS_SECRET")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value.startswith("file:"):
            return value
        return validate_http_url(value, "STORAGE_URL", "https://<ref>.supabase.co or file:///dir")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("STORAGE_PREFIX must be a relative key prefix such as 'au/'")
        return value if not value or value.endswith("/") else f"{value}/"

    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}runs/{run_id}.ndjson"

    @property
    def latest_key(self) -> str:
        return f"{self.prefix}{LATEST_OBJECT}"


class DatabaseSettings(_Settings):
    url: str = Field(..., alias="DATABASE_URL", repr=False)
    table: str = Field(DEFAULT_TABLE, alias="DATABASE_TABLE")
    credentials_secret: str = Field("catalog-database", alias="DATABASE_CREDENTIALS_SECRET")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_database_url(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return validate_table_name(value)

    @property
    def target(self) -> str:
        """Where the database is, for messages: ``host:port/dbname``, never the credentials."""
        return database_target(self.url)


class FetcherSettings(_Settings):
    chunk_size: int = Field(6 * 1024 * 1024, alias="FETCHER_CHUNK_SIZE", ge=256 * 1024)
    max_attempts: int = Field(5, alias="FETCHER_MAX_ATTEMPTS", ge=1, le=50)
    timeout: float = Field(1800.0, alias="FETCHER_TIMEOUT", gt=0)
    """Seconds one stream attempt may take from request to last byte."""
    read_timeout: float = Field(120.0, alias="FETCHER_READ_TIMEOUT", gt=0)
    """Seconds without a byte before a stream (or a storage request) counts as stalled."""
    backoff_initial: float = Field(2.0, alias="FETCHER_BACKOFF_INITIAL", ge=0)
    """Seconds before the first retry; doubled after each failure, plus jitter."""
    backoff_max: float = Field(60.0, alias="FETCHER_BACKOFF_MAX", ge=0)
    publish_empty: bool = Field(False, alias="FETCHER_PUBLISH_EMPTY")
    max_shrink_fraction: float = Field(0.1, alias="FETCHER_MAX_SHRINK_FRACTION", ge=0, le=1)
    """A catalog with more than this fraction fewer products than ``latest.ndjson`` is stored
    but not published."""
    allow_shrink: bool = Field(False, alias="FETCHER_ALLOW_SHRINK")
    """Publish such a catalog anyway (one deliberate run)."""
    mode: Literal["Full", "Incremental"] = Field("Full", alias="FETCHER_MODE")
    """``Incremental`` fetches what changed since the database's watermark (DATABASE_*)."""
    incremental_overlap: int = Field(3600, alias="FETCHER_INCREMENTAL_OVERLAP", ge=0)
    """Seconds an Incremental run asks for before its watermark."""
    scratch_dir: str | None = Field(None, alias="FETCHER_SCRATCH_DIR")


class MaintainerSettings(_Settings):
    chunk_size: int = Field(5000, alias="MAINTAINER_CHUNK_SIZE", ge=100, le=100_000)
    dry_run: bool = Field(False, alias="MAINTAINER_DRY_RUN")
    delete_missing: bool = Field(False, alias="MAINTAINER_DELETE_MISSING")
    max_delete_fraction: float = Field(0.05, alias="MAINTAINER_MAX_DELETE_FRACTION", ge=0, le=1)
    max_invalid_fraction: float = Field(0.01, alias="MAINTAINER_MAX_INVALID_FRACTION", ge=0, le=1)
    connections: int = Field(2, alias="MAINTAINER_CONNECTIONS", ge=1, le=8)
    """Chunks applied in parallel, one database connection each."""
    object: str | None = Field(None, alias="MAINTAINER_OBJECT")
    """Storage key to process; default: this run's object, or ``latest.ndjson`` in MaintainOnly."""
    changes_keep_days: float = Field(30.0, alias="MAINTAINER_CHANGES_KEEP_DAYS", gt=0)
    """Change-feed rows older than this many days are dropped at the end of every run."""
    changes_keep_runs: int = Field(0, alias="MAINTAINER_CHANGES_KEEP_RUNS", ge=0)
    """When above 0, only the newest this many runs keep their change-feed rows."""


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read ``cls`` from the environment, turning validation errors into one clear message."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            name = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(message if message.startswith(name) else f"{name}: {message}")
        raise PermanentError(
            "invalid configuration: " + "; ".join(problems) + " (fix the environment variables "
            f"named here; {HELP_POINTER})",
            reason="InvalidConfiguration",
        ) from None


EXIT_CODES = (
    "Exit codes: 0 done; 1 transient (the Job retries: unreachable service, interrupted by "
    "SIGTERM, table locked); 2 configuration or credentials (no retry); 3 invalid data (no retry). "
    "On failure the termination message holds reason and message."
)


def help_epilog(*classes: type[BaseSettings]) -> str:
    """The variables of ``classes`` and the exit codes, for a command's ``--help``."""
    lines = ["Environment variables (each described in docs/configuration.md):"]
    for cls in classes:
        names = [field.alias for field in cls.model_fields.values() if field.alias]
        group = f"{cls.__name__.removesuffix('Settings')}: {', '.join(names)}."
        lines.append(textwrap.fill(group, 79, initial_indent="  ", subsequent_indent="    "))
    lines.append(textwrap.fill(EXIT_CODES, 79))
    return "\n".join(lines)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable behind ``cls.field``, for code that writes the contract."""
    alias = cls.model_fields[field].alias
    assert alias is not None, f"{cls.__name__}.{field} has no env alias"
    return alias
