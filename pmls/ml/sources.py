"""Query sources: a DuckDB query over files, or a PostgreSQL table / query, read into polars.

``data.load_source`` sends a source here when ``is_query_source`` says so; files and globs stay there.
Every failure becomes a DataError on ``dataset_config.source`` with the database's own message, so a
typo in a table name reads as bad input, never as a stack trace (or a retry).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl

from pmls.ml.errors import DataError

SOURCE = "dataset_config.source"
DUCKDB_PREFIX = "duckdb:"
POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = "10"  # an unreachable host should fail the job quickly, not hang the activity
LISTED_TABLES = 20


def is_query_source(source: str) -> bool:
    """True for ``duckdb:<SQL>`` and ``postgresql://`` / ``postgres://`` URLs."""
    text = source.strip()
    return text.lower().startswith(DUCKDB_PREFIX) or urlsplit(text).scheme.lower() in POSTGRES_SCHEMES


def read_query_source(source: str) -> pl.DataFrame:
    text = source.strip()
    if text.lower().startswith(DUCKDB_PREFIX):
        return read_duckdb(text[len(DUCKDB_PREFIX) :])
    return read_postgres(text)


# --- DuckDB ----------------------------------------------------------------------------------


def read_duckdb(sql: str) -> pl.DataFrame:
    """Run one query in a fresh in-memory DuckDB, so no state is shared between jobs."""
    import duckdb

    if not sql.strip():
        raise DataError(SOURCE, "DuckDB: the query after 'duckdb:' is empty")
    con = duckdb.connect(":memory:")
    try:
        relation = con.sql(sql)
        if relation is None:
            raise DataError(SOURCE, "DuckDB: the statement returns no rows; give a SELECT")
        return relation.pl()
    except duckdb.Error as exc:
        raise DataError(SOURCE, f"DuckDB: {_first_lines(str(exc))}") from exc
    finally:
        con.close()


def _first_lines(message: str, limit: int = 4) -> str:
    # DuckDB appends a caret drawing under the query; the first lines carry the meaning.
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])


# --- PostgreSQL ------------------------------------------------------------------------------


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
            SOURCE, f"PostgreSQL: could not connect to {where}: {_first_lines(str(exc), 2)}"
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
            raise DataError(SOURCE, f"PostgreSQL: {_first_lines(str(exc), 1)}") from exc
        known = _known_tables(conn)
        raise DataError(SOURCE, f"PostgreSQL: no table '{table}' in {where}; tables are: {known}") from exc
    except (psycopg2.Error, pl.exceptions.PolarsError) as exc:
        # polars refuses non-read statements (e.g. DROP) itself, before the server sees them.
        raise DataError(SOURCE, f"PostgreSQL: {_first_lines(str(exc), 2)}") from exc
    finally:
        conn.close()


# --- column-pruned reads ---------------------------------------------------------------------


def scan_source(source: str, columns: list[str] | None = None) -> pl.DataFrame:
    """Like load_source, but reads only ``columns`` (pushed down into the file scan for files)."""
    from pmls.ml import data  # data imports this module; a top-level import would be circular

    if is_query_source(source):
        frame = read_query_source(source)
        if columns is not None:
            _check_columns(frame.columns, columns)
            frame = frame.select(columns)
        return frame
    files = data._matching_files(source)
    if not files:
        raise DataError(SOURCE, f"no file matches '{source}'")
    lazy = data.SCANNERS[data._suffix_of(files)](files)
    try:
        names = lazy.collect_schema().names()
        if columns is not None:
            _check_columns(names, columns)
            lazy = lazy.select(columns)
        return lazy.collect()
    except DataError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataError(SOURCE, f"could not read '{source}': {exc}") from exc


def _check_columns(available: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(SOURCE, f"columns not in the data: {', '.join(missing)}")
