"""Opening a connection to the products database, with credential problems made permanent."""

from __future__ import annotations

import asyncpg

from catalogsync.common.errors import PermanentError


async def connect(dsn: str, application_name: str) -> asyncpg.Connection:
    """A connection named ``application_name`` (visible in ``pg_stat_activity``).

    A rejected password or a database that does not exist cannot improve on a retry, so both
    are permanent errors that say which setting to fix.
    """
    try:
        return await asyncpg.connect(
            dsn, server_settings={"application_name": application_name[:63]}
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as e:
        raise PermanentError(
            f"the database rejected the credentials: {e} (check key 'url' of the database "
            "Secret, DATABASE_URL)",
            reason="InvalidCredentials",
        ) from None
    except asyncpg.InvalidCatalogNameError as e:
        raise PermanentError(
            f"{e}: DATABASE_URL names a database that does not exist",
            reason="InvalidConfiguration",
        ) from None
