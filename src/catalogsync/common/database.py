"""Opening a connection to the products database, with credential problems made permanent."""

from __future__ import annotations

import asyncpg

from catalogsync.common.config import database_target
from catalogsync.common.errors import PermanentError, SyncError, TransientError
from catalogsync.common.reasons import Reason


def database_unreachable(dsn: str, error: BaseException) -> SyncError:
    """A failed connection, named by service and host; a TLS refusal cannot heal on retry."""
    where = (
        f"the database at {database_target(dsn)} (DATABASE_URL, key 'url' of the database Secret)"
    )
    if "rejected SSL upgrade" in str(error):
        return PermanentError(
            f"{where} does not offer TLS but the URL asks for it: the server must enable SSL, or "
            "set sslmode=disable (or prefer) in DATABASE_URL if the network is trusted",
            reason=Reason.DatabaseTLSUnavailable,
        )
    detail = str(error) or type(error).__name__
    return TransientError(f"cannot reach {where}: {detail}", reason=Reason.DatabaseUnavailable)


async def connect(dsn: str, application_name: str) -> asyncpg.Connection:
    """A connection named ``application_name`` (visible in ``pg_stat_activity``).

    A rejected password, a database that does not exist, a parameter the server refuses or TLS
    it does not offer cannot improve on a retry, so they are permanent errors that say which
    setting to fix; a database that does not answer is ``DatabaseUnavailable`` (transient),
    naming the host but never the credentials.
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
    except asyncpg.UndefinedObjectError as e:
        raise PermanentError(
            f"the database refused a parameter of DATABASE_URL: {e} (drop it from the URL's "
            "query; docs/configuration.md lists the parameters the driver understands)",
            reason="InvalidConfiguration",
        ) from None
    except (OSError, TimeoutError) as e:
        raise database_unreachable(dsn, e) from None
