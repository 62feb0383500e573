"""Sources through the load activity's one entry (pmls.storage.sources.load_source): DuckDB over files, files,
and PostgreSQL tables / queries on the stack's server."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl
import pytest

from pmls.ml.errors import DataError
from pmls.ml.sources import FileAccess, is_query_source, scan_source
from pmls.storage import sources
from pmls.storage.sources import Connections, is_connection_source, is_postgres_url


@pytest.fixture
def access(tmp_path) -> FileAccess:
    return FileAccess((tmp_path.resolve(),))


def load_source(source: str, access: FileAccess | None = None, connections: Connections | None = None):
    # Database sources ignore the data roots; the file and DuckDB tests pass their own.
    return sources.load_source(source, access or FileAccess(()), connections or Connections())


@pytest.fixture
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "x": rng.normal(size=60),
            "colour": rng.choice(["red", "green", "blue"], size=60),
            "y": np.arange(60),
        }
    )


# --- DuckDB ---


def test_duckdb_query_over_parquet(tmp_path, frame, access):
    frame.write_parquet(tmp_path / "a.parquet")
    got = load_source(f"duckdb:SELECT * FROM '{tmp_path}/*.parquet' WHERE x > 0", access)
    assert isinstance(got, pl.DataFrame)
    assert got.height == frame.filter(pl.col("x") > 0).height
    assert got.columns == frame.columns


def test_duckdb_syntax_error_is_a_data_error(access):
    with pytest.raises(DataError) as err:
        load_source("duckdb:SELEC * FROM t", access)
    assert err.value.field == "dataset_config.source"
    assert err.value.message.startswith("DuckDB: ") and "syntax error" in err.value.message


def test_duckdb_missing_file_and_empty_query(tmp_path, access):
    with pytest.raises(DataError, match="DuckDB: .*No files found"):
        load_source(f"duckdb:SELECT * FROM '{tmp_path}/nope/*.parquet'", access)
    with pytest.raises(DataError, match="empty"):
        load_source("duckdb:   ", access)


def test_source_kinds_and_files_unchanged(tmp_path, frame, access):
    assert is_query_source("duckdb:SELECT 1") and is_postgres_url("postgres://h/db?table=t")
    assert is_connection_source("connection:dw?table=t") and not is_connection_source("duckdb:SELECT 1")
    assert not is_query_source(str(tmp_path / "*.parquet")) and not is_postgres_url("duckdb:SELECT 1")
    frame.write_parquet(tmp_path / "d.parquet")
    assert load_source(str(tmp_path / "d.parquet"), access).height == frame.height
    assert load_source("d.parquet", access).height == frame.height  # relative: under the first data root
    assert scan_source(str(tmp_path / "d.parquet"), access, ["x", "y"]).columns == ["x", "y"]
    with pytest.raises(DataError, match="not in the data: nope"):
        scan_source(str(tmp_path / "d.parquet"), access, ["x", "nope"])


def test_a_database_url_in_a_request_is_refused_without_echoing_it():
    with pytest.raises(DataError) as err:
        load_source("postgresql://me:secret@127.0.0.1:1/db?table=t", connections=Connections({"dw": "x"}))
    assert (
        "credentials do not belong in a request" in err.value.message
        and "configured: dw" in err.value.message
    )
    assert "secret" not in err.value.message


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("connection:nope?table=t", "no connection named 'nope'; configured: dw"),
        ("connection:dw", "connection:dw?table=NAME"),
        ("connection:dw?table=a.b.c", "not a name or schema.name"),
        ("connection:dw?query=SELECT 1; SELECT 2", "exactly one SELECT statement, not 2"),
        ("connection:dw?query=DELETE FROM t", "only a SELECT may be a source, not DeleteStmt"),
        ("connection:dw?query=SELECT * INTO copy FROM t", "SELECT ... INTO"),
        ("connection:dw?query=SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
        ("connection:dw?query=WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "not DeleteStmt"),
        (
            "connection:dw?query=SELECT pg_catalog.pg_read_file('/etc/passwd')",
            "pg_read_file() is not allowed",
        ),
        ("connection:dw?query=SELEC 1", "syntax error"),
    ],
)
def test_connection_sources_are_checked_before_anything_connects(source, words):
    # The URL would not connect: each of these is refused before a connection is tried.
    with pytest.raises(DataError) as err:
        load_source(source, connections=Connections({"dw": "postgresql://me:secret@127.0.0.1:1/db"}))
    assert words in err.value.message and "secret" not in err.value.message


def test_an_unreachable_connection_is_a_data_error_naming_it():
    with pytest.raises(DataError) as err:
        load_source(
            "connection:dw?table=t", connections=Connections({"dw": "postgresql://me:secret@127.0.0.1:1/db"})
        )
    assert "could not connect to 'dw'" in err.value.message and "secret" not in err.value.message


# --- PostgreSQL: the stack's server (embedded unless PMLS_DATABASE_URL is set) ---


@pytest.fixture
def warehouse(frame, settings):
    """A connection to the stack's server holding a uniquely named copy of ``frame``; dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    url = settings.database.url
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    name = f"pmls_src_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (x double precision, colour text, y integer)")
        cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s)", frame.select("x", "colour", "y").rows())
    try:
        yield Connections({"dw": url}, statement_timeout_s=5), name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def test_a_connections_table_and_query(warehouse, frame):
    connections, name = warehouse
    got = load_source(f"connection:dw?table={name}", connections=connections)
    assert got.columns == ["x", "colour", "y"] and got.height == frame.height
    assert got.sort("x").get_column("y").to_list() == frame.sort("x").get_column("y").to_list()
    got = load_source(
        f"connection:dw?query=SELECT x, y FROM {name} WHERE colour = 'red'", connections=connections
    )
    assert got.columns == ["x", "y"] and got.height == frame.filter(pl.col("colour") == "red").height


def test_a_missing_table_lists_the_tables_and_a_slow_query_hits_the_timeout(warehouse):
    connections, name = warehouse
    with pytest.raises(DataError) as err:
        load_source("connection:dw?table=no_such_table_xyz", connections=connections)
    assert "no table 'no_such_table_xyz' in 'dw'" in err.value.message and name in err.value.message
    with pytest.raises(DataError, match="statement timeout"):
        load_source("connection:dw?query=SELECT pg_sleep(30)", connections=connections)


def test_a_query_cannot_write(warehouse, settings):
    import psycopg2

    connections, name = warehouse
    conn = psycopg2.connect(settings.database.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SEQUENCE {name}_seq")
    try:
        # A plain SELECT that writes (a sequence moves): the read-only transaction refuses it.
        with pytest.raises(DataError, match="read-only transaction"):
            load_source(f"connection:dw?query=SELECT nextval('{name}_seq')", connections=connections)
        with conn.cursor() as cur:
            cur.execute(f"SELECT last_value, is_called FROM {name}_seq")
            assert cur.fetchone() == (1, False)  # never advanced
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP SEQUENCE {name}_seq")
        conn.close()
