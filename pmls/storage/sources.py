"""PostgreSQL as a training source, through connections the operator names: ``connection:NAME?table=NAME``
(``schema.name`` allowed) or ``connection:NAME?query=SELECT ...`` (the query as written, to the end). The operator
maps names to URLs with credentials (``PMLS_CONNECTIONS``); a request never carries a credential, so none reaches a
job row, Redis, Temporal or MLflow. :func:`load_source` is the one entry the load activity uses: connections here,
files and DuckDB queries in :mod:`pmls.ml.sources`.

A query is parsed by PostgreSQL's own parser (pglast): exactly one plain ``SELECT`` — no ``SELECT INTO``, no
``FOR UPDATE``/``SHARE``, no data-modifying ``WITH``, none of the server-side file or large-object functions — and
runs in a read-only transaction with a local statement timeout. That is not a boundary against a superuser role
(the README says to give each connection a role with SELECT grants only; the trials worker warns at start when a
connection's role is a superuser).

Every failure becomes a DataError on ``dataset_config.source`` naming the connection, never its URL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl

from pmls.ml import sources
from pmls.ml.errors import DataError
from pmls.ml.sources import SOURCE, FileAccess, first_lines

log = logging.getLogger("pmls.sources")
POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECTION_PREFIX = "connection:"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
CONNECT_TIMEOUT_S = "10"  # an unreachable host should fail the job quickly, not hang the activity
LISTED_TABLES = 20
# Server-side functions that read or write the server's files or run other connections, whatever the grants of
# a superuser: refused by name (a SELECT-only role cannot call them anyway).
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_file_write",
        "lo_import",
        "lo_export",
        "lo_get",
        "lo_put",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "set_config",
    }
)


@dataclass(frozen=True)
class Connections:
    """The operator's named database connections (name -> URL with credentials) and the statement timeout."""

    urls: Mapping[str, str] = field(default_factory=dict)
    statement_timeout_s: float = 1800.0

    def names(self) -> str:
        return ", ".join(sorted(self.urls)) or "(none configured: PMLS_CONNECTIONS)"

    def url(self, name: str) -> str:
        if name not in self.urls:
            raise DataError(SOURCE, f"no connection named '{name}'; configured: {self.names()}")
        return self.urls[name]


@dataclass(frozen=True)
class ConnectionSource:
    name: str
    table: str | None
    query: str | None


def is_postgres_url(source: str) -> bool:
    return urlsplit(source.strip()).scheme.lower() in POSTGRES_SCHEMES


def is_connection_source(source: str) -> bool:
    return source.strip().lower().startswith(CONNECTION_PREFIX)


def parse_connection_source(source: str) -> ConnectionSource:
    """``connection:NAME?table=T`` or ``connection:NAME?query=SQL`` (the SQL verbatim, to the end)."""
    rest = source.strip()[len(CONNECTION_PREFIX) :]
    name, _, param = rest.partition("?")
    if not NAME.match(name):
        raise DataError(SOURCE, f"'{name}' is not a connection name (letters, digits, '_', '-')")
    key, _, value = param.partition("=")
    if key not in ("table", "query") or not value.strip():
        raise DataError(SOURCE, f"give connection:{name}?table=NAME or connection:{name}?query=SELECT ...")
    if key == "table":
        names = value.strip().split(".")
        if len(names) > 2 or not all(names):
            raise DataError(SOURCE, f"table '{value}' is not a name or schema.name")
        return ConnectionSource(name, value.strip(), None)
    return ConnectionSource(name, None, value.strip())


def check_query(sql: str) -> None:
    """Exactly one plain SELECT, by PostgreSQL's own parser; a DataError naming what is not."""
    import pglast
    from pglast import ast
    from pglast.visitors import Visitor

    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise DataError(SOURCE, f"PostgreSQL: {exc}") from exc
    if len(statements) != 1:
        raise DataError(SOURCE, f"PostgreSQL: give exactly one SELECT statement, not {len(statements)}")
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        raise DataError(SOURCE, f"PostgreSQL: only a SELECT may be a source, not {type(stmt).__name__}")

    class Check(Visitor):
        def visit_SelectStmt(self, _ancestors, node) -> None:
            if node.intoClause is not None:
                raise DataError(SOURCE, "PostgreSQL: SELECT ... INTO writes a table; select the rows only")
            if node.lockingClause:
                raise DataError(SOURCE, "PostgreSQL: FOR UPDATE / FOR SHARE locks rows; select without it")

        def visit_CommonTableExpr(self, _ancestors, node) -> None:
            if not isinstance(node.ctequery, ast.SelectStmt):
                kind = type(node.ctequery).__name__
                raise DataError(SOURCE, f"PostgreSQL: a WITH query may only SELECT, not {kind}")

        def visit_FuncCall(self, _ancestors, node) -> None:
            name = node.funcname[-1].sval.lower()
            if name in FORBIDDEN_FUNCTIONS:
                raise DataError(SOURCE, f"PostgreSQL: {name}() is not allowed in a source query")

    Check()(statements)


def load_source(source: str, access: FileAccess, connections: Connections) -> pl.DataFrame:
    """Any supported source into one frame: a named connection's table or query, a ``duckdb:`` query, a file,
    directory or glob (files under ``access``'s roots only)."""
    check_source(source, access, connections)
    if is_connection_source(source):
        return read_connection(parse_connection_source(source), connections)
    return sources.load_source(source, access)


def check_source(source: str, access: FileAccess, connections: Connections) -> None:
    """What can be known before a job starts, without reading anything: a file path or glob under the data
    roots, a DuckDB source one SELECT, a database source a configured connection and one plain SELECT. A
    DataError naming the problem otherwise."""
    if is_postgres_url(source):
        raise DataError(
            SOURCE,
            "credentials do not belong in a request: name an operator connection instead, "
            f"connection:NAME?table=T or connection:NAME?query=SELECT ... (configured: {connections.names()})",
        )
    if is_connection_source(source):
        parsed = parse_connection_source(source)
        connections.url(parsed.name)
        if parsed.query is not None:
            check_query(parsed.query)
        return
    if sources.is_query_source(source):
        sources.check_duckdb_query(source.strip()[len(sources.DUCKDB_PREFIX) :])
        return
    access.pattern(source)


def _dsn(url: str) -> str:
    """The libpq DSN with a connect timeout unless the operator set one."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "connect_timeout" for k, _ in params):
        params.append(("connect_timeout", CONNECT_TIMEOUT_S))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def _table_statement(table: str):
    from psycopg2 import sql

    return sql.SQL("SELECT * FROM {}").format(sql.Identifier(*table.split(".")))


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


def _connect(url: str, name: str):
    import psycopg2

    try:
        conn = psycopg2.connect(_dsn(url))
    except psycopg2.Error as exc:
        # libpq's message names host and port, never the password; the URL itself stays out of it.
        raise DataError(
            SOURCE, f"PostgreSQL: could not connect to '{name}': {first_lines(str(exc), 2)}"
        ) from exc
    conn.set_session(readonly=True, autocommit=False)
    return conn


def read_connection(src: ConnectionSource, connections: Connections) -> pl.DataFrame:
    """The table or query of a named connection, in one read-only transaction with a local statement timeout."""
    import psycopg2

    conn = _connect(connections.url(src.name), src.name)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SET LOCAL statement_timeout = %s", (f"{int(connections.statement_timeout_s * 1000)}ms",)
            )
        statement = _table_statement(src.table) if src.table else src.query
        return pl.read_database(statement, connection=conn)
    except psycopg2.errors.UndefinedTable as exc:
        if src.table is None:
            raise DataError(SOURCE, f"PostgreSQL: {first_lines(str(exc), 1)}") from exc
        conn.rollback()
        known = _known_tables(conn)
        raise DataError(
            SOURCE, f"PostgreSQL: no table '{src.table}' in '{src.name}'; tables are: {known}"
        ) from exc
    except (psycopg2.Error, pl.exceptions.PolarsError) as exc:
        raise DataError(SOURCE, f"PostgreSQL: {first_lines(str(exc), 2)}") from exc
    finally:
        conn.rollback()  # nothing to keep: the transaction only read
        conn.close()


def warn_superusers(connections: Connections) -> None:
    """Log a warning for each connection whose role is a superuser (a read-only transaction does not confine
    one); a connection that cannot be reached now is logged too, and checked again by the next job."""
    import psycopg2

    for name, url in sorted(connections.urls.items()):
        try:
            with psycopg2.connect(_dsn(url)) as conn, conn.cursor() as cur:
                cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                row = cur.fetchone()
            conn.close()
        except psycopg2.Error as exc:
            log.warning("connection '%s' not checked: %s", name, first_lines(str(exc), 1))
            continue
        if row and row[0]:
            log.warning(
                "connection '%s' logs in as a superuser: a read-only transaction does not stop a superuser's "
                "query from reading server files or running programs; give it a role with SELECT grants only",
                name,
            )
