"""PostgreSQL as a training source: ``postgresql://user@host/db?table=NAME`` (``schema.name`` allowed) or
``?query=SELECT ...`` (URL-encoded), read once, read-only, into polars. :func:`load_source` is the one entry
the load activity uses: PostgreSQL URLs here, files and DuckDB queries in :mod:`pmls.ml.sources`.

Every failure becomes a DataError on ``dataset_config.source`` with the database's own message, so a typo in
a table name reads as bad input, never as a stack trace (or a retry). Credentials never reach a message.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl

from pmls.ml import sources
from pmls.ml.errors import DataError
from pmls.ml.sources import SOURCE, FileAccess, first_lines

POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = "10"  # an unreachable host should fail the job quickly, not hang the activity
LISTED_TABLES = 20


def is_postgres_source(source: str) -> bool:
    return urlsplit(source.strip()).scheme.lower() in POSTGRES_SCHEMES


def load_source(source: str, access: FileAccess) -> pl.DataFrame:
    """Any supported source into one frame: a PostgreSQL URL, a ``duckdb:`` query, a file, directory or glob
    (files under ``access``'s roots only)."""
    if is_postgres_source(source):
        return read_postgres(source.strip())
    return sources.load_source(source, access)


def check_source(source: str, access: FileAccess) -> None:
    """What can be known before a job starts, without reading anything: a file path or glob under the data
    roots, a DuckDB source one SELECT. A DataError naming the problem otherwise."""
    if is_postgres_source(source):
        return
    if sources.is_query_source(source):
        sources.check_duckdb_query(source.strip()[len(sources.DUCKDB_PREFIX) :])
        return
    access.pattern(source)


def _split_postgres_url(url: str) -> tuple[str, str | None, str | None]:
    """(libpq DSN without our parameters, table, query); credentials stay in the DSN only."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in params if k in ("table", "query")}
    rest = [(k, v) for k, v in params if k not in ("table", "query")]
    if not any(k == "connect_timeout" for k, _ in rest):
        rest.append(("connect_timeout", CONNECT_TIMEOUT_S))
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return dsn, ours.get("table") or None, ours.get("query") or None


def _redacted(url: str) -> str:
    """The URL as it may appear in a message: no password, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _table_statement(table: str):
    from psycopg2 import sql

    names = table.split(".")
    if len(names) > 2 or not all(names):
        raise DataError(SOURCE, f"table '{table}' is not a name or schema.name")
    return sql.SQL("SELECT * FROM {}").format(sql.Identifier(*names))


def _known_tables(conn) -> str:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2 LIMIT %s",
            (LISTED_TABLES + 1,),
        )
        rows = cur.fetchall()
    names = [name if schema == "public" else f"{schema}.{name}" for schema, name in rows]
    more = ", ..." if len(names) > LISTED_TABLES else ""
    return ", ".join(names[:LISTED_TABLES]) + more if names else "(none)"


def _connect(dsn: str, where: str):
    import psycopg2

    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise DataError(
            SOURCE, f"PostgreSQL: could not connect to {where}: {first_lines(str(exc), 2)}"
        ) from exc
    # Read-only: a 'query=' source must never change the database it trains from.
    conn.set_session(readonly=True, autocommit=True)
    return conn


def read_postgres(url: str) -> pl.DataFrame:
    """Read ``?table=NAME`` (schema.name allowed) or ``?query=SELECT ...`` (URL-encoded)."""
    import psycopg2

    dsn, table, query = _split_postgres_url(url)
    where = _redacted(url)
    if (table is None) == (query is None):
        raise DataError(SOURCE, f"give exactly one of ?table=NAME or ?query=SELECT... in {where}")
    statement = _table_statement(table) if table else query
    conn = _connect(dsn, where)
    try:
        return pl.read_database(statement, connection=conn)
    except psycopg2.errors.UndefinedTable as exc:
        if table is None:
            raise DataError(SOURCE, f"PostgreSQL: {first_lines(str(exc), 1)}") from exc
        known = _known_tables(conn)
        raise DataError(SOURCE, f"PostgreSQL: no table '{table}' in {where}; tables are: {known}") from exc
    except (psycopg2.Error, pl.exceptions.PolarsError) as exc:
        # polars refuses non-read statements (e.g. DROP) itself, before the server sees them.
        raise DataError(SOURCE, f"PostgreSQL: {first_lines(str(exc), 2)}") from exc
    finally:
        conn.close()
