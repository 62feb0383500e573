"""Sources without a server: Parquet / CSV / NDJSON files, directories and globs, and DuckDB queries over
files, read into polars. (PostgreSQL sources need a connection: :mod:`pmls.storage.sources` reads them.)

Every failure becomes a DataError on ``dataset_config.source`` with the reader's own message, so a typo
reads as bad input, never as a stack trace (or a retry).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import polars as pl

from pmls.ml.errors import DataError

SOURCE = "dataset_config.source"
DUCKDB_PREFIX = "duckdb:"
SCANNERS = {
    ".parquet": pl.scan_parquet,
    ".pq": pl.scan_parquet,
    ".csv": lambda paths: pl.scan_csv(paths, try_parse_dates=True),
    ".ndjson": pl.scan_ndjson,
    ".jsonl": pl.scan_ndjson,
}


def is_query_source(source: str) -> bool:
    """True for ``duckdb:<SQL>``."""
    return source.strip().lower().startswith(DUCKDB_PREFIX)


# --- files ------------------------------------------------------------------------------------


def _matching_files(source: str) -> list[str]:
    pattern = os.path.expanduser(source)
    if os.path.isdir(pattern):
        # A directory of part files (as Spark/DuckDB write them): take the supported files in it.
        pattern = os.path.join(pattern, "*")
        found = [p for p in glob.glob(pattern) if Path(p).suffix.lower() in SCANNERS]
    else:
        found = glob.glob(pattern, recursive=True)
    return sorted(p for p in found if os.path.isfile(p))


def _suffix_of(files: list[str]) -> str:
    suffixes = {Path(p).suffix.lower() for p in files}
    supported = ", ".join(SCANNERS)
    unknown = sorted(suffixes - set(SCANNERS))
    if unknown:
        raise DataError(SOURCE, f"unsupported file type {unknown[0] or '(none)'}; supported: {supported}")
    if len({SCANNERS[s] for s in suffixes}) > 1:
        raise DataError(SOURCE, f"matches files of several formats ({', '.join(sorted(suffixes))}); use one")
    return suffixes.pop()


def load_source(source: str) -> pl.DataFrame:
    """Read a Parquet / CSV / NDJSON file, directory or glob, or a ``duckdb:`` query, into one frame."""
    if is_query_source(source):
        return read_duckdb(source.strip()[len(DUCKDB_PREFIX) :])
    files = _matching_files(source)
    if not files:
        raise DataError(SOURCE, f"no file matches '{source}'")
    scan = SCANNERS[_suffix_of(files)]
    try:
        return scan(files).collect()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataError(SOURCE, f"could not read '{source}': {exc}") from exc


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
        raise DataError(SOURCE, f"DuckDB: {first_lines(str(exc))}") from exc
    finally:
        con.close()


def first_lines(message: str, limit: int = 4) -> str:
    # DuckDB appends a caret drawing under the query; the first lines carry the meaning.
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])


# --- column-pruned reads ---------------------------------------------------------------------


def scan_source(source: str, columns: list[str] | None = None) -> pl.DataFrame:
    """Like load_source, but reads only ``columns`` (pushed down into the file scan for files)."""
    if is_query_source(source):
        frame = load_source(source)
        if columns is not None:
            _check_columns(frame.columns, columns)
            frame = frame.select(columns)
        return frame
    files = _matching_files(source)
    if not files:
        raise DataError(SOURCE, f"no file matches '{source}'")
    lazy = SCANNERS[_suffix_of(files)](files)
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
