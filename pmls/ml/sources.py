"""Sources without a server: Parquet / CSV / NDJSON files, directories and globs, and DuckDB queries over
files, read into polars. (PostgreSQL sources need a connection: :mod:`pmls.storage.sources` reads them.)

Files are read only under the operator's data roots (:class:`FileAccess`): a path is resolved (``..`` and
symbolic links followed) before anything is read, and every file a glob matches is checked the same way. A
DuckDB source is one ``SELECT``, run on a connection that can open files under the data roots only, with
extension installs and loads off and its configuration locked before the query runs.

Every failure becomes a DataError on ``dataset_config.source`` with the reader's own message, so a typo
reads as bad input, never as a stack trace (or a retry).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
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


MAX_FILES = 10_000  # a glob that matches more is a mistake (or a scan of someone else's tree)
GLOB_CHARS = frozenset("*?[")


def is_query_source(source: str) -> bool:
    """True for ``duckdb:<SQL>``."""
    return source.strip().lower().startswith(DUCKDB_PREFIX)


@dataclass(frozen=True)
class FileAccess:
    """The folders sources may read (resolved, absolute). A relative source path is taken under the first."""

    roots: tuple[Path, ...]

    @classmethod
    def anywhere(cls) -> FileAccess:
        """No confinement: for in-process use on one's own files (benchmarks, notebooks), never for requests."""
        return cls((Path("/"),))

    def names(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def allows(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def pattern(self, source: str) -> str:
        """The source as an absolute path or glob whose fixed part lies under a root, with its links resolved;
        a DataError naming the roots otherwise. Nothing is read."""
        raw = source.strip()
        if raw.startswith("~"):
            raise DataError(SOURCE, f"'~' is not expanded: give a path under a data root ({self.names()})")
        path = Path(raw) if os.path.isabs(raw) else self.roots[0] / raw
        fixed: list[str] = []
        for part in path.parts:
            if GLOB_CHARS & set(part):
                break
            fixed.append(part)
        rest = path.parts[len(fixed) :]
        if ".." in rest:
            raise DataError(SOURCE, "a glob may not climb out of its folder ('..' after a wildcard)")
        base = Path(*fixed).resolve()
        if not self.allows(base):
            raise DataError(
                SOURCE, f"'{source}' is outside the data roots; sources are read under: {self.names()}"
            )
        return str(base.joinpath(*rest))

    def check_file(self, path: str, source: str) -> None:
        """A file a pattern matched: refused when its real location is outside the roots (a link out)."""
        if not self.allows(Path(path).resolve()):
            raise DataError(
                SOURCE, f"'{source}' matches a file that links outside the data roots ({self.names()})"
            )


# --- files ------------------------------------------------------------------------------------


def _matching_files(source: str, access: FileAccess) -> list[str]:
    pattern = access.pattern(source)
    if os.path.isdir(pattern):
        # A directory of part files (as Spark/DuckDB write them): take the supported files in it.
        pattern = os.path.join(pattern, "*")
        found = [p for p in glob.iglob(pattern) if Path(p).suffix.lower() in SCANNERS]
    else:
        found = glob.iglob(pattern, recursive=True)
    files = []
    for path in found:
        if os.path.isfile(path):
            access.check_file(path, source)
            files.append(path)
            if len(files) > MAX_FILES:
                raise DataError(SOURCE, f"'{source}' matches more than {MAX_FILES} files; narrow the pattern")
    return sorted(files)


def _suffix_of(files: list[str]) -> str:
    suffixes = {Path(p).suffix.lower() for p in files}
    supported = ", ".join(SCANNERS)
    unknown = sorted(suffixes - set(SCANNERS))
    if unknown:
        raise DataError(SOURCE, f"unsupported file type {unknown[0] or '(none)'}; supported: {supported}")
    if len({SCANNERS[s] for s in suffixes}) > 1:
        raise DataError(SOURCE, f"matches files of several formats ({', '.join(sorted(suffixes))}); use one")
    return suffixes.pop()


def load_source(source: str, access: FileAccess) -> pl.DataFrame:
    """Read a Parquet / CSV / NDJSON file, directory or glob, or a ``duckdb:`` query, into one frame."""
    if is_query_source(source):
        return read_duckdb(source.strip()[len(DUCKDB_PREFIX) :], access)
    files = _matching_files(source, access)
    if not files:
        raise DataError(SOURCE, f"no file matches '{source}'")
    scan = SCANNERS[_suffix_of(files)]
    try:
        return scan(files).collect()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataError(SOURCE, f"could not read '{source}': {exc}") from exc


# --- DuckDB ----------------------------------------------------------------------------------


def check_duckdb_query(sql: str) -> None:
    """Exactly one SELECT, by DuckDB's own parser (COPY, ATTACH, INSTALL, SET, PRAGMA, several statements: no)."""
    import duckdb

    if not sql.strip():
        raise DataError(SOURCE, "DuckDB: the query after 'duckdb:' is empty")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise DataError(SOURCE, f"DuckDB: {first_lines(str(exc))}") from exc
    if len(statements) != 1:
        raise DataError(SOURCE, f"DuckDB: give exactly one SELECT statement, not {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise DataError(SOURCE, f"DuckDB: only a SELECT may be a source, not {kind.name}")


def confined_duckdb(access: FileAccess):
    """A fresh in-memory DuckDB (no state shared between jobs) that can open files under the data roots only,
    cannot install or load extensions, and cannot change that: the settings go in this order, the lock last."""
    import duckdb

    con = duckdb.connect(":memory:")
    roots = [str(r) for r in access.roots]
    con.execute("SET allowed_directories = $roots", {"roots": roots})
    for statement in (
        "SET enable_external_access = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET lock_configuration = true",
    ):
        con.execute(statement)
    return con


def read_duckdb(sql: str, access: FileAccess) -> pl.DataFrame:
    """Run one SELECT in a confined in-memory DuckDB."""
    import duckdb

    check_duckdb_query(sql)
    con = confined_duckdb(access)
    try:
        relation = con.sql(sql)
        if relation is None:
            raise DataError(SOURCE, "DuckDB: the statement returns no rows; give a SELECT")
        return relation.pl()
    except duckdb.PermissionException as exc:
        raise DataError(
            SOURCE,
            f"DuckDB: {first_lines(str(exc), 1)}; a query reads files by absolute path under the data roots "
            f"({access.names()}) and nothing else",
        ) from exc
    except duckdb.Error as exc:
        raise DataError(SOURCE, f"DuckDB: {first_lines(str(exc))}") from exc
    finally:
        con.close()


def first_lines(message: str, limit: int = 4) -> str:
    # DuckDB appends a caret drawing under the query; the first lines carry the meaning.
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])


# --- column-pruned reads ---------------------------------------------------------------------


def scan_source(source: str, access: FileAccess, columns: list[str] | None = None) -> pl.DataFrame:
    """Like load_source, but reads only ``columns`` (pushed down into the file scan for files)."""
    if is_query_source(source):
        frame = load_source(source, access)
        if columns is not None:
            _check_columns(frame.columns, columns)
            frame = frame.select(columns)
        return frame
    files = _matching_files(source, access)
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
