"""Sources through the load activity's one entry (pmls.storage.sources.load_source): DuckDB over files, files,
and PostgreSQL tables / queries on the stack's server."""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest

from pmls.ml.errors import DataError
from pmls.ml.sources import FileAccess, is_query_source, scan_source
from pmls.storage import sources
from pmls.storage.sources import is_postgres_source


@pytest.fixture
def access(tmp_path) -> FileAccess:
    return FileAccess((tmp_path.resolve(),))


def load_source(source: str, access: FileAccess | None = None) -> pl.DataFrame:
    # PostgreSQL sources ignore the data roots; the file and DuckDB tests pass their own.
    return sources.load_source(source, access or FileAccess(()))


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
    assert is_query_source("duckdb:SELECT 1") and is_postgres_source("postgres://h/db?table=t")
    assert not is_query_source(str(tmp_path / "*.parquet")) and not is_postgres_source("duckdb:SELECT 1")
    frame.write_parquet(tmp_path / "d.parquet")
    assert load_source(str(tmp_path / "d.parquet"), access).height == frame.height
    assert load_source("d.parquet", access).height == frame.height  # relative: under the first data root
    assert scan_source(str(tmp_path / "d.parquet"), access, ["x", "y"]).columns == ["x", "y"]
    with pytest.raises(DataError, match="not in the data: nope"):
        scan_source(str(tmp_path / "d.parquet"), access, ["x", "nope"])


def test_postgres_url_needs_table_or_query_and_hides_password():
    with pytest.raises(DataError) as err:
        load_source("postgresql://me:secret@127.0.0.1:1/db")
    assert "exactly one of" in err.value.message and "secret" not in err.value.message


def test_unreachable_postgres_is_a_data_error():
    with pytest.raises(DataError) as err:
        load_source("postgresql://me:secret@127.0.0.1:1/db?table=t")
    assert "could not connect" in err.value.message and "secret" not in err.value.message


# --- PostgreSQL: the stack's server (embedded unless PMLS_DATABASE_URL is set) ---


@pytest.fixture
def pg_table(frame, settings):
    """A uniquely named table holding a copy of ``frame``; dropped afterwards."""
    url = os.environ.get("PMLS_TEST_POSTGRES_URL") or settings.database.url
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.Error as exc:
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    conn.autocommit = True
    name = f"pmls_src_{uuid.uuid4().hex[:12]}"
    rows = frame.select("x", "colour", "y").rows()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (x double precision, colour text, y integer)")
        cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s)", rows)
    try:
        yield url, name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def _with(url: str, param: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{param}"


def test_postgres_table(pg_table, frame):
    url, name = pg_table
    got = load_source(_with(url, f"table={name}"))
    assert got.columns == ["x", "colour", "y"] and got.height == frame.height
    assert got.sort("x").get_column("y").to_list() == frame.sort("x").get_column("y").to_list()


def test_postgres_query_and_postgres_scheme(pg_table, frame):
    url, name = pg_table
    query = quote(f"SELECT x, y FROM {name} WHERE colour = 'red'")
    got = load_source(_with(url.replace("postgresql://", "postgres://", 1), f"query={query}"))
    assert got.columns == ["x", "y"] and got.height == frame.filter(pl.col("colour") == "red").height


def test_postgres_bad_table_and_bad_query(pg_table):
    url, name = pg_table
    with pytest.raises(DataError) as err:
        load_source(_with(url, "table=no_such_table_xyz"))
    assert "no table 'no_such_table_xyz'" in err.value.message and "tables are:" in err.value.message
    with pytest.raises(DataError, match="PostgreSQL: .*syntax error"):
        load_source(_with(url, f"query={quote('SELEC 1')}"))
    with pytest.raises(DataError, match="not valid 'read' queries"):
        load_source(_with(url, f"query={quote(f'DROP TABLE {name}')}"))
